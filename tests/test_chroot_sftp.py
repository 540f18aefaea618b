"""ChrootDirectory and internal-sftp (issue 15.2), side by side with
Debian's sshd: the stock sftp client in the common sftp-only jail, the
ways out of it, sftp-server's flags, and sshd's refusals."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.daemon import Server, ssh, ssh_argv

KINDS = ("privsep", "openssh")
#: the common sftp-only jail: Match User, a root-owned %h, ForceCommand
JAIL_FORCE = "internal-sftp -u 022 -d /upload"


def _jail_config(user, force: str | None = JAIL_FORCE, root: str = "%h") -> list[str]:
    lines = [f"Match User {user.name}", f"    ChrootDirectory {root}"]
    if force is not None:
        lines.append(f"    ForceCommand {force}")
    return lines


def sftp(server: Server, user, batch: str) -> subprocess.CompletedProcess:
    """The stock sftp client running ``batch`` (-b -: an error ends it)."""
    argv, env = ssh_argv(server, user)
    options = argv[3:-1]  # after "ssh -p PORT", before user@host
    return subprocess.run(["sftp", "-P", str(server.port), *options, "-b", "-",
                           f"{user.name}@127.0.0.1"], input=batch.encode(), env=env,
                          capture_output=True, timeout=60)


def _normal(text: bytes) -> str:
    """Client output with the dates of ls -l made equal."""
    return re.sub(r"\w{3} [ \d]\d (\d\d:\d\d| \d{4})", "DATE", text.decode())


@pytest.fixture
def jailed(user):
    """The user's home made a jail (root-owned, 0755) holding ``upload``
    (the user's) with a file and a symbolic link to /etc."""
    os.chown(user.home, 0, 0)
    os.chmod(user.home, 0o755)
    upload = user.home / "upload"
    upload.mkdir()
    os.chown(upload, user.uid, user.gid)
    (upload / "hello.txt").write_text("hello\n")
    os.chown(upload / "hello.txt", user.uid, user.gid)
    os.symlink("/etc", upload / "esc")
    return user


def _both(server_with, config: list[str]) -> dict[str, Server]:
    lines = ["Subsystem sftp internal-sftp"]
    return {kind: server_with(*lines, tail=config, kind=kind) for kind in KINDS}


def test_sftp_only_jail_side_by_side(server_with, jailed, tmp_path) -> None:
    """List, upload, download, rename, remove: the same client output from
    both daemons; the file lands in the jail, the user's, with -u 022."""
    servers = _both(server_with, _jail_config(jailed))
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(300_000))
    local.chmod(0o666)
    outputs = {}
    for kind, server in servers.items():
        back = tmp_path / f"back-{kind}.bin"
        result = sftp(server, jailed, "\n".join([
            "pwd", f"put {local} up.bin", "ls -ln", "rename up.bin moved.bin",
            f"get moved.bin {back}", "ls -ln /upload/moved.bin",
            "rm moved.bin", "ls -ln", "ls -lan /", ""]))
        assert result.returncode == 0, (kind, result.stderr)
        assert back.read_bytes() == local.read_bytes()
        outputs[kind] = _normal(result.stdout).replace(f"back-{kind}", "back")
    # root is named in a jail without /etc/passwd: glibc's nss-systemd,
    # loaded before the chroot, synthesizes it (test_names_in_the_jail)
    assert outputs["privsep"].splitlines() == outputs["openssh"].splitlines()
    out = outputs["privsep"]
    assert "Remote working directory: /upload" in out
    # the upload was the user's, mode 0666 less the umask 022
    assert re.search(rf"-rw-r--r--\s+\? {jailed.uid}\s+{jailed.gid}\s+300000 DATE "
                     r"/upload/moved\.bin", out), out
    assert not (jailed.home / "upload" / "moved.bin").exists()
    log = servers["privsep"].wait_for_log(f"Changed root directory to \"{jailed.home}\"")
    assert f"subsystem request for sftp by user {jailed.name}" in log


@pytest.mark.parametrize("jail_files", [False, True])
def test_names_in_the_jail(server_with, jailed, jail_files: bool) -> None:
    """``ls -l`` names owners as sshd's internal-sftp does in the same jail:
    without /etc/passwd and /etc/group there, root and nobody only (glibc
    keeps the name services it had loaded before the chroot, and
    nss-systemd synthesizes those two); with them, the jail's own names
    (the files module reads the jail's files), uid 0 included."""
    os.chown(jailed.home / "upload" / "hello.txt", 65534, 65534)
    if jail_files:
        etc = jailed.home / "etc"
        etc.mkdir()
        (etc / "passwd").write_text(f"jailroot:x:0:0::/:/bin/false\n"
                                    f"jailed-{jailed.uid}:x:{jailed.uid}:{jailed.gid}::/:/bin/false\n")
        (etc / "group").write_text(f"jailwheel:x:0:\njailers:x:{jailed.gid}:\n")
    servers = _both(server_with, _jail_config(jailed))
    listings = {}
    for kind, server in servers.items():
        result = sftp(server, jailed, "ls -l /upload\nls -la /\n")
        assert result.returncode == 0, (kind, result.stderr)
        listings[kind] = _normal(result.stdout)
    assert listings["privsep"].splitlines() == listings["openssh"].splitlines()
    out = listings["privsep"]
    if jail_files:
        assert re.search(rf"\? jailroot\s+jailwheel\s+\d+ DATE /\.\n", out), out
        assert f"jailed-{jailed.uid}" in out and "jailers" in out, out
    else:
        assert re.search(r"\? root\s+root\s+\d+ DATE /\.\n", out), out
        assert re.search(r"\? nobody\s+nogroup\s+\d+ DATE /upload/hello\.txt", out), out
        assert f"? {jailed.uid} " in out  # the user: no name in the jail


def test_no_way_out_of_the_jail(server_with, jailed) -> None:
    """``cd ..`` at / stays at /; a link to /etc leads to the jail's /etc
    (none); the errors read as sshd's."""
    servers = _both(server_with, _jail_config(jailed))
    results = {}
    for kind, server in servers.items():
        moves = sftp(server, jailed, "cd /..\npwd\ncd ../../..\npwd\nls /\n")
        escape = sftp(server, jailed, "get esc/passwd /dev/null\n")
        results[kind] = (moves.returncode, _normal(moves.stdout), escape.returncode,
                         escape.stderr.decode())
    assert results["privsep"] == results["openssh"]
    code, moves, escape_code, escape_err = results["privsep"]
    assert moves.count("Remote working directory: /\n") == 2
    assert "upload" in moves and "etc" not in moves.split("ls /", 1)[1]
    assert escape_code == 1 and "not found" in escape_err


def test_read_only_refuses_writes_as_sshd(server_with, jailed, tmp_path) -> None:
    """-R: every write refused with sftp-server's status; reads still work."""
    servers = _both(server_with, _jail_config(jailed, "internal-sftp -R -d /upload -l VERBOSE"))
    local = tmp_path / "x.txt"
    local.write_text("x\n")
    results = {}
    for kind, server in servers.items():
        per_command = []
        for command in (f"put {local} x.txt", "mkdir d", "rm hello.txt", "rename hello.txt y",
                        f"get hello.txt {tmp_path / ('h-' + kind)}"):
            r = sftp(server, jailed, command + "\n")
            per_command.append((r.returncode, r.stderr.decode()))
        results[kind] = per_command
    assert results["privsep"] == results["openssh"]
    assert all(code == 1 and "Permission denied" in err for code, err in results["privsep"][:4])
    assert results["privsep"][4][0] == 0
    assert sorted(os.listdir(jailed.home / "upload")) == ["esc", "hello.txt"]
    log = servers["privsep"].wait_for_log("Refusing open request in read-only mode")
    assert "Refusing mkdir request in read-only mode" in log
    assert "Refusing remove request in read-only mode" in log


def test_denied_and_allowed_requests(server_with, jailed) -> None:
    """-P and -p take sftp-server's request names; refused as sshd refuses."""
    for flags, command, ok in (("-P remove", "rm hello.txt", False),
                               ("-p open,close,read,lstat,stat,realpath,opendir,readdir",
                                "mkdir nope", False),
                               ("-p open,close,read,lstat,stat,realpath,opendir,readdir",
                                "ls", True)):
        results = {}
        servers = _both(server_with, _jail_config(jailed, f"internal-sftp -d /upload {flags}"))
        for kind, server in servers.items():
            r = sftp(server, jailed, command + "\n")
            results[kind] = (r.returncode, _normal(r.stdout), r.stderr.decode())
            server.stop()
        assert results["privsep"] == results["openssh"], (flags, command)
        assert (results["privsep"][0] == 0) == ok, results["privsep"]
    assert (jailed.home / "upload" / "hello.txt").exists()


def test_sftp_server_log_lines(server_with, jailed, tmp_path) -> None:
    """-l INFO: sftp-server's lines, through the daemon's log (sshd's own
    go to a syslog socket the jail does not have)."""
    server = server_with("Subsystem sftp internal-sftp",
                         tail=_jail_config(jailed, "internal-sftp -l INFO -d /upload"))
    local = tmp_path / "up.txt"
    local.write_text("12345\n")
    local.chmod(0o644)
    r = sftp(server, jailed, f"put {local} up.txt\nget hello.txt /dev/null\n")
    assert r.returncode == 0, r.stderr
    log = server.wait_for_log(f"session closed for local user {jailed.name} from [127.0.0.1]")
    for line in (f"session opened for local user {jailed.name} from [127.0.0.1]",
                 'open "/upload/up.txt" flags WRITE,CREATE,TRUNCATE mode 0644',
                 'close "/upload/up.txt" bytes read 0 written 6',
                 'open "/upload/hello.txt" flags READ mode 0666',
                 'close "/upload/hello.txt" bytes read 6 written 0'):
        assert line in log, (line, log)
    assert 'realpath "' not in log  # a VERBOSE line, below -l INFO


def test_query_requests_as_sftp_server(server_with, user) -> None:
    """``internal-sftp -Q requests`` prints what Debian's sftp-server prints."""
    server = server_with("Subsystem sftp internal-sftp -Q requests")
    r = ssh(server, user, "sftp", flags=["-s"])
    expected = subprocess.run(["/usr/lib/openssh/sftp-server", "-Q", "requests"],
                              capture_output=True, check=True).stdout
    assert r.stdout == expected and r.returncode == 0


def test_bad_ownership_refused_with_sshds_line(server_with, user) -> None:
    """A jail that its group may write: the session ends, with sshd's line."""
    base = Path(tempfile.mkdtemp(dir="/srv", prefix="pst-jail-"))
    try:
        base.chmod(0o755)
        jail = base / user.name
        jail.mkdir()
        jail.chmod(0o775)
        servers = _both(server_with, _jail_config(user, root=f"{base}/%u"))
        codes = {}
        for kind, server in servers.items():
            codes[kind] = ssh(server, user, "true").returncode
            server.wait_for_log(f'bad ownership or modes for chroot directory "{jail}"')
        assert codes == {"privsep": 255, "openssh": 255}
        # a component: the base made group-writable
        base.chmod(0o775)
        jail.chmod(0o755)
        assert ssh(servers["privsep"], user, "true").returncode == 255
        servers["privsep"].wait_for_log(
            f'bad ownership or modes for chroot directory component "{base}/"')
        assert "Traceback" not in servers["privsep"].log_text()
    finally:
        shutil.rmtree(base)


def test_jail_without_shell_fails_as_sshd(server_with, jailed) -> None:
    """ChrootDirectory without internal-sftp runs the shell in the jail:
    none there, so the client reads sshd's perror and gets status 1."""
    servers = _both(server_with, _jail_config(jailed, force=None))
    results = {kind: ssh(server, jailed, "ls") for kind, server in servers.items()}
    assert [(r.returncode, r.stderr) for r in results.values()] == \
        [(1, b"/bin/bash: No such file or directory\n")] * 2


def test_forced_internal_sftp_refuses_commands(server_with, user) -> None:
    """ForceCommand internal-sftp without a jail: sftp works, a command gets
    sshd's refusal; Subsystem sftp internal-sftp serves the home, %d expanded."""
    servers = _both(server_with, [f"Match User {user.name}",
                                  "    ForceCommand internal-sftp -d %d/sub"])
    (user.home / "sub").mkdir()
    results = {}
    for kind, server in servers.items():
        refused = ssh(server, user, "ls")
        listing = sftp(server, user, "pwd\n")
        results[kind] = (refused.returncode, refused.stdout, listing.returncode,
                         listing.stdout)
    assert results["privsep"] == results["openssh"]
    assert results["privsep"][:2] == (1, b"This service allows sftp connections only.\n")
    assert f"Remote working directory: {user.home}/sub".encode() in results["privsep"][3]
    servers["privsep"].wait_for_log(
        f"Connection from user {user.name} 127.0.0.1 port")
    assert "refusing non-sftp session" in servers["privsep"].log_text()
