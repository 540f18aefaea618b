"""Logging in with the real OpenSSH client: keys, passwords, refusals, exit codes.

Where OpenSSH's behaviour is the reference, the same test runs against
Debian's sshd (``any_server``) and the two results are compared.
"""

from __future__ import annotations

import re

import pytest

from tests.daemon import Server, ssh


def test_key_login_exec(privsep_server: Server, user) -> None:
    result = ssh(privsep_server, user, "id -un; echo $HOME; exit 7")
    assert result.returncode == 7, result.stderr
    assert result.stdout.decode().split() == [user.name, str(user.home)]
    privsep_server.wait_for_log(f"Accepted publickey for {user.name} from 127.0.0.1 port")


def test_password_login_exec(privsep_server: Server, user) -> None:
    result = ssh(privsep_server, user, "id -un", password=user.password)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == user.name
    privsep_server.wait_for_log(f"Accepted password for {user.name} from 127.0.0.1 port")


def test_wrong_password_refused(any_server: Server, user) -> None:
    result = ssh(any_server, user, "true", password="not-" + str(user.password))
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
    any_server.wait_for_log(f"Failed password for {user.name} from 127.0.0.1 port")


def test_unknown_user_refused(any_server: Server, make_user) -> None:
    ghost = make_user(prefix="pgh", key=True)
    # Remove the account but keep the key and password: now an unknown user.
    from tests.userutil import remove_user
    import copy
    saved = copy.copy(ghost)
    remove_user(ghost)
    result = ssh(any_server, saved, "true", password="whatever")
    assert result.returncode == 255
    any_server.wait_for_log(f"Invalid user {saved.name} from 127.0.0.1 port")
    any_server.wait_for_log(f"Failed password for invalid user {saved.name} from 127.0.0.1")


def test_wrong_key_refused(privsep_server: Server, user, make_user) -> None:
    other = make_user(prefix="pok")
    intruder = type(user)(**{**user.__dict__, "key_path": other.key_path})
    result = ssh(privsep_server, intruder, "true")
    assert result.returncode == 255
    assert b"Permission denied (publickey" in result.stderr


def test_key_of_another_user_refused(privsep_server: Server, make_user) -> None:
    """A key that is only in bob's authorized_keys does not open alice's account."""
    alice, bob = make_user(prefix="pka"), make_user(prefix="pkb")
    as_alice_with_bobs_key = type(alice)(**{**alice.__dict__, "key_path": bob.key_path})
    assert ssh(privsep_server, as_alice_with_bobs_key, "true").returncode == 255
    assert ssh(privsep_server, bob, "true").returncode == 0


@pytest.mark.parametrize("code", [0, 1, 2, 42, 127, 128, 200, 254, 255])
def test_exit_codes_match_openssh(privsep_server: Server, openssh_server: Server, user,
                                  code: int) -> None:
    ours = ssh(privsep_server, user, f"exit {code}")
    theirs = ssh(openssh_server, user, f"exit {code}")
    assert ours.returncode == theirs.returncode == code


def test_all_exit_codes(privsep_server: Server, user) -> None:
    """Every code 0..255 in one connection each would be slow; one shell
    loop per code is enough to cover the range through the channel."""
    for code in range(0, 256, 17):
        assert ssh(privsep_server, user, f"exit {code}").returncode == code


@pytest.mark.parametrize("tty", [False, True])
def test_death_by_signal_matches_openssh(privsep_server: Server, openssh_server: Server,
                                         user, tty: bool) -> None:
    ours = ssh(privsep_server, user, "kill -9 $$", tty=tty)
    theirs = ssh(openssh_server, user, "kill -9 $$", tty=tty)
    assert ours.returncode == theirs.returncode
    assert ours.returncode == 255
    # The client reports exit-signal the same way for both.
    assert b"killed by signal" not in ours.stderr or b"killed by signal" in theirs.stderr


def test_stdout_and_stderr_kept_apart(any_server: Server, user) -> None:
    result = ssh(any_server, user, "echo out; echo err >&2")
    assert result.stdout == b"out\n"
    assert result.stderr.endswith(b"err\n")


def test_stdin_reaches_command_and_eof_ends_it(any_server: Server, user) -> None:
    result = ssh(any_server, user, "wc -c", input=b"x" * 100000)
    assert result.returncode == 0
    assert result.stdout.strip() == b"100000"


def test_environment(any_server: Server, user) -> None:
    result = ssh(any_server, user, "env")
    env = dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)
    assert env["USER"] == env["LOGNAME"] == user.name
    assert env["HOME"] == str(user.home)
    assert env["SHELL"] == "/bin/bash"
    assert "MAIL" not in env  # Debian's sshd sets none, and pam_mail is "noenv"
    assert env["SSH_CONNECTION"].split()[0] == "127.0.0.1"
    assert env["SSH_CONNECTION"].split()[3] == str(any_server.port)
    assert env["SSH_CLIENT"].split()[2] == str(any_server.port)
    assert "SSH_TTY" not in env and "TERM" not in env


@pytest.mark.parametrize("kind,algorithm", [
    ("ed25519", "ssh-ed25519"), ("ecdsa", "ecdsa-sha2-nistp256"),
    ("rsa", "rsa-sha2-512"), ("rsa", "rsa-sha2-256"),
])
def test_every_host_key_serves(privsep_server: Server, user, kind: str, algorithm: str) -> None:
    """Each of the three host keys made on first start signs the key exchange,
    and it is the key in /etc/privsep-sshd (as ssh-keyscan sees it)."""
    import subprocess
    result = ssh(privsep_server, user, "true", options=[f"HostKeyAlgorithms={algorithm}"])
    assert result.returncode == 0, result.stderr
    scan = subprocess.run(["ssh-keyscan", "-p", str(privsep_server.port), "-t", kind, "127.0.0.1"],
                          capture_output=True, text=True, timeout=30).stdout.split()
    with open(f"/etc/privsep-sshd/ssh_host_{kind}_key.pub") as handle:
        published = handle.read().split()
    assert scan[1:3] == published[0:2]
    assert "Unable to load host key" not in privsep_server.log_text()


def test_logout_log_lines(privsep_server: Server, user) -> None:
    """sshd's words for a normal logout."""
    assert ssh(privsep_server, user, "true").returncode == 0
    log = privsep_server.wait_for_log(f"Disconnected from user {user.name} 127.0.0.1 port")
    assert re.search(r"Received disconnect from 127\.0\.0\.1 port \d+:11: disconnected by user", log)
