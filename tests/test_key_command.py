"""AuthorizedKeysCommand and AuthorizedPrincipalsCommand (issue 14, point 3).

Real commands (shell scripts written by the test) in real directories, run
by the real daemon and, side by side, by Debian's sshd with the same
configuration: the key a command prints lets the user in with its line's
options; the command gets sshd's %-token expansions, runs as its
configured user with a minimal environment; a command in a world-writable
directory is refused with sshd's log line; a failing command too.  This
daemon's own limits (time, output size) are checked on it alone.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from privsep.common.peer import Peer
from privsep.config.servconf import ServerOptions
from privsep.monitor import keycommand
from tests.daemon import ssh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("openssh", "privsep")
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def command_dir():
    """A directory sshd trusts for a command: root's, mode 755, in root's
    755 directories up to "/"."""
    path = Path(tempfile.mkdtemp(prefix="privsep-keycmd-", dir="/usr/local/lib"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def nobody_dir():
    """Where a command running as nobody may write what it saw."""
    path = Path(tempfile.mkdtemp(prefix="keycmd-out-"))
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    yield path
    shutil.rmtree(path)


def write_command(directory: Path, body: str, name: str = "keys") -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def _no_authorized_keys(user) -> None:
    """The key is to come from the command only."""
    (user.home / ".ssh" / "authorized_keys").write_text("")


def _config(command: Path, args: str = "%u", user: str = "nobody") -> list[str]:
    return [f"AuthorizedKeysCommand {command} {args}", f"AuthorizedKeysCommandUser {user}"]


def test_printed_key_logs_in_with_its_options_side_by_side(server_with, user, command_dir,
                                                           nobody_dir):
    """The command prints the user's key with command="..."; it gets the
    same arguments from both daemons, runs as nobody with a minimal
    environment, and the session runs the forced command."""
    _no_authorized_keys(user)
    seen = {}
    for kind in KINDS:
        out = nobody_dir / kind
        script = write_command(command_dir, f"""\
printf '%s\\n' "$@" > {out}.args
id -u > {out}.id
env | sort > {out}.env
echo 'command="echo forced by the command" {user.pubkey}'
""")
        server = server_with(*_config(script, "%u %U %h %t %f %k %%"), kind=kind)
        result = ssh(server, user, "echo not forced")
        assert result.returncode == 0, (kind, result.stderr.decode())
        assert result.stdout == b"forced by the command\n", kind
        seen[kind] = [(out.with_suffix(s)).read_text() for s in (".args", ".id", ".env")]
    assert seen["privsep"][:2] == seen["openssh"][:2]
    args = seen["privsep"][0].splitlines()
    keytype, keytext = user.pubkey.split()[:2]
    assert args[:4] == [user.name, str(user.uid), str(user.home), keytype]
    assert args[4].startswith("SHA256:") and args[5:] == [keytext, "%"]
    assert seen["privsep"][1] == f"{NOBODY.pw_uid}\n"
    names = {line.split("=", 1)[0] for line in seen["privsep"][2].splitlines()}
    assert names <= {"PATH", "USER", "LOGNAME", "HOME", "LANG", "PWD"}, names


def test_connection_token(server_with, user, command_dir, nobody_dir):
    """%C (both ends of the connection), as OpenSSH 9.4+ and 10.0 give it."""
    _no_authorized_keys(user)
    script = write_command(command_dir, f"""\
printf '%s\\n' "$1" > {nobody_dir}/conn
echo '{user.pubkey}'
""")
    server = server_with(*_config(script, '"%C"'))
    assert ssh(server, user, "true").returncode == 0
    local, lport, remote, rport = (nobody_dir / "conn").read_text().split()
    assert (local, lport, remote) == ("127.0.0.1", str(server.port), "127.0.0.1")
    assert rport.isdigit()


def test_command_in_a_world_writable_directory_is_refused_side_by_side(server_with, user,
                                                                       command_dir):
    _no_authorized_keys(user)
    unsafe = command_dir / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    script = write_command(unsafe, f"echo '{user.pubkey}'\n")
    line = f'Unsafe AuthorizedKeysCommand "{script}": bad ownership or modes for directory {unsafe}'
    for kind in KINDS:
        server = server_with(*_config(script), kind=kind)
        assert ssh(server, user, "true").returncode == 255, kind
        log = server.wait_for_log(line)
        assert "Accepted publickey" not in log


def test_failing_command_is_refused_side_by_side(server_with, user, command_dir):
    """A command that prints the key but exits 1 lets nobody in."""
    _no_authorized_keys(user)
    script = write_command(command_dir, f"echo '{user.pubkey}'\nexit 1\n")
    for kind in KINDS:
        server = server_with(*_config(script), kind=kind)
        assert ssh(server, user, "true").returncode == 255, kind
        log = server.wait_for_log(f"AuthorizedKeysCommand {script} {user.name} failed, status 1")
        assert "Accepted publickey" not in log


@pytest.mark.parametrize("body,reason", [
    ("sleep 60\n", "timed out after 10 seconds, refused"),
    ("head -c 2000000 /dev/zero | tr '\\0' '#'; echo\necho '{key}'\n",
     f"output longer than {keycommand.MAX_OUTPUT} bytes, refused"),
], ids=["timeout", "huge-output"])
def test_slow_or_huge_command_is_refused(server_with, user, command_dir, body, reason):
    """This daemon's own limits: killed, refused, logged; no login."""
    _no_authorized_keys(user)
    script = write_command(command_dir, body.format(key=user.pubkey))
    server = server_with(*_config(script))
    assert ssh(server, user, "true").returncode == 255
    log = server.wait_for_log(f"AuthorizedKeysCommand {script} {user.name} {reason}")
    assert "Accepted publickey" not in log


def test_runs_as_root_only_when_configured(user, command_dir):
    """AuthorizedKeysCommandUser root is obeyed; nothing else makes root."""
    script = write_command(command_dir, "id -u\n")
    for runas, uid in (("root", "0"), ("nobody", str(NOBODY.pw_uid)), ("%u", str(user.uid))):
        cmd = keycommand.KeyCommand("AuthorizedKeysCommand", str(script), runas)
        assert keycommand.run(cmd, pwd.getpwnam(user.name), {}) == uid + "\n", runas


def test_principals_command_lines(user, command_dir):
    """The function "certs" calls: the command's lines, with the
    connection's tokens and the certificate's own."""
    script = write_command(command_dir, 'echo "ops"\necho "# $1"\necho "$2 $3"\n',
                           name="principals")
    options = ServerOptions(authorized_principals_command=f"{script} %u %i %s",
                            authorized_principals_command_user="nobody")
    peer = Peer("127.0.0.1", 5555, "127.0.0.1", 22)
    lines = keycommand.principals_lines(options, pwd.getpwnam(user.name), peer,
                                        {"i": "alice-cert", "s": "7"})
    assert lines == ["ops", f"# {user.name}", "alice-cert 7", ""]
    os.chmod(command_dir, 0o777)
    try:
        assert keycommand.principals_lines(options, pwd.getpwnam(user.name), peer,
                                           {"i": "x", "s": "1"}) is None
    finally:
        os.chmod(command_dir, 0o755)
