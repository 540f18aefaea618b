"""The user's environment against a client that tries to choose it
(issue 11.6): variables accepted from the client (AcceptEnv) come first and
the server's own go on top, as in sshd's do_setup_env, so that a client can
never replace USER, HOME, PATH, SHELL, TERM or SSH_CONNECTION.  Side by side
with Debian's sshd, field by field."""

from __future__ import annotations

import pytest

from tests.daemon import ssh

SERVER_SET = ("USER", "LOGNAME", "HOME", "PATH", "SHELL", "MAIL", "TERM", "SSH_CONNECTION",
              "SSH_CLIENT", "SSH_TTY")


ACCEPT_ALL = "AcceptEnv " + " ".join((*SERVER_SET, "PROBE_*"))
#: set by the server in every session: a client's value never survives
ALWAYS_SERVERS = ("USER", "LOGNAME", "HOME", "PATH", "SHELL", "SSH_CONNECTION", "SSH_CLIENT")


def _environment(server, user, tty: bool) -> dict[str, str]:
    # One SetEnv option with every variable: ssh takes the first SetEnv only.
    flags = ["-o", "SetEnv=" + " ".join(f"{name}=forged-by-client"
                                        for name in (*SERVER_SET, "PROBE_OK"))]
    result = ssh(server, user, "env", flags=flags, tty=tty)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)


@pytest.mark.parametrize("tty", [False, True])
def test_client_cannot_replace_the_server_environment(server_with, user, tty: bool) -> None:
    """AcceptEnv lets every variable of the test through: only the order of
    do_setup_env stands between the client and the server's values."""
    forged = {}
    for kind in ("privsep", "openssh"):
        env = _environment(server_with(ACCEPT_ALL, kind=kind), user, tty)
        assert env["PROBE_OK"].strip() == "forged-by-client"  # AcceptEnv let variables in
        forged[kind] = sorted(name for name, value in env.items()
                              if name in SERVER_SET and "forged-by-client" in value)
        assert env["USER"].strip() == user.name and env["HOME"].strip() == str(user.home)
    assert forged["privsep"] == forged["openssh"]
    assert not set(forged["privsep"]) & set(ALWAYS_SERVERS)
