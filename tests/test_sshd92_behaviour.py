"""What issue 15's keywords and section 6's details change, through the
stock client, side by side with Debian's sshd: ~/.ssh/rc and PermitUserRC,
PerSourceMaxStartups, IPQoS, FingerprintHash, login
names with a ":style", a Banner beyond 64 KiB, a client without an SSH
banner, the session's environment and pty modes, and the monitor as a
session leader holding the connection."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time

import pytest

from tests.daemon import descendants, ssh, ssh_argv, ssh_background, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("privsep", "openssh")


def _write_rc(user, text: str) -> None:
    rc = user.home / ".ssh" / "rc"
    rc.parent.mkdir(exist_ok=True)
    rc.write_text(text)
    os.chown(rc.parent, user.uid, user.gid)
    os.chown(rc, user.uid, user.gid)


def test_user_rc_runs_before_the_command_as_sshd(server_with, user) -> None:
    _write_rc(user, 'echo "rc ran: $0 $# $(pwd)"\n')
    seen = {}
    for kind in KINDS:
        result = ssh(server_with(kind=kind), user, "echo command ran")
        assert result.returncode == 0, result.stderr
        seen[kind] = result.stdout
    assert seen["privsep"] == seen["openssh"], seen
    assert seen["privsep"].endswith(b"command ran\n") and b"rc ran: " in seen["privsep"]


def test_command_without_its_home_directory_as_sshd(server_with, user) -> None:
    """The home directory gone: the command runs in / after sshd's "Could
    not chdir" line.  (privsep-sshd starts a command without a pty by
    posix_spawn, which cannot say it: such a command takes the fork path.)"""
    servers = {kind: server_with(kind=kind) for kind in KINDS}
    gone = user.home.with_name(user.home.name + ".gone")
    user.home.rename(gone)
    try:
        seen = {}
        for kind in KINDS:
            result = ssh(servers[kind], user, "pwd", password=user.password)
            seen[kind] = (result.returncode, result.stdout, result.stderr)
    finally:
        gone.rename(user.home)
    assert seen["privsep"] == seen["openssh"], seen
    assert seen["privsep"][:2] == (0, b"/\n"), seen
    assert seen["privsep"][2] == (f"Could not chdir to home directory {user.home}: "
                                  "No such file or directory\n").encode(), seen


@pytest.mark.parametrize("config,key_option", [
    ("PermitUserRC no", ""), ("ForceCommand echo command ran", ""),
    ("PermitUserRC yes", "no-user-rc "), ("PermitUserRC yes", "restrict "),
])
def test_user_rc_is_skipped_as_sshd_skips_it(server_with, user, config: str,
                                             key_option: str) -> None:
    _write_rc(user, "echo rc ran\n")
    keys = user.home / ".ssh" / "authorized_keys"
    keys.write_text(key_option + user.pubkey + "\n")
    seen = {}
    for kind in KINDS:
        result = ssh(server_with(config, kind=kind), user, "echo command ran")
        assert result.returncode == 0, result.stderr
        seen[kind] = result.stdout
    assert seen["privsep"] == seen["openssh"] == b"command ran\n"


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.settimeout(10)
    return sock


def _greeted(port: int) -> socket.socket | None:
    """A connection the server greeted with its identification, or None."""
    sock = _connect(port)
    if sock.recv(64).startswith(b"SSH-2.0-"):
        return sock
    sock.close()
    return None


@pytest.mark.parametrize("netblock,second_source_dropped", [("32", False), ("8", True)])
def test_per_source_max_startups(server_with, netblock: str,
                                 second_source_dropped: bool) -> None:
    for kind in KINDS:
        server = server_with("PerSourceMaxStartups 1", f"PerSourceNetBlockSize {netblock}",
                             kind=kind)
        held = wait_until(lambda: _greeted(server.port))  # once the start-up probe is gone
        try:
            time.sleep(0.3)  # the listener has counted it
            extra = _connect(server.port)
            assert extra.recv(64) == b"Exceeded MaxStartups\r\n", kind
            extra.close()
            other = _connect(server.port, source="127.0.0.2")
            answer = other.recv(64)
            other.close()
            if second_source_dropped:
                assert answer == b"Exceeded MaxStartups\r\n", kind
            else:
                assert answer.startswith(b"SSH-2.0-"), kind
            server.wait_for_log("past MaxStartups")
        finally:
            held.close()


def _server_tos(server, client: subprocess.Popen) -> str:
    """The TOS (tos:0x..) ss reports for the server's end of the client's
    connection, once the session runs."""
    def tos():
        out = subprocess.run(["ss", "-tn", "--tos", "state", "established",
                              f"( sport = :{server.port} )"],
                             capture_output=True, text=True).stdout
        found = re.search(r"tos:(0x[0-9a-f]+)", out)
        return found.group(1) if found else None
    return wait_until(tos)


@pytest.mark.parametrize("tty,qos,expected", [
    (True, "IPQoS af21 cs1", "0x48"), (False, "IPQoS af21 cs1", "0x20"),
    (True, "IPQoS lowdelay throughput", "0x10"),
])
def test_ipqos_marks_the_connection_as_sshd(server_with, user, tty: bool, qos: str,
                                            expected: str) -> None:
    seen = {}
    for kind in KINDS:
        server = server_with(qos, kind=kind)
        client = ssh_background(server, user, "echo up; sleep 20", tty=tty)
        try:
            assert client.stdout.readline().strip() == b"up"
            seen[kind] = _server_tos(server, client)
        finally:
            client.kill()
            client.wait()
    assert seen["privsep"] == seen["openssh"] == expected


def _keygen_fingerprint(user, hash_name: str) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", hash_name, "-f", str(user.key_path)],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


@pytest.mark.parametrize("hash_name", ["md5", "sha512", "sha256"])
def test_fingerprint_hash_in_the_log(server_with, user, hash_name: str) -> None:
    expected = f"Accepted publickey for {user.name} from 127.0.0.1 port"
    fingerprint = _keygen_fingerprint(user, hash_name)
    for kind in KINDS:
        server = server_with(f"FingerprintHash {hash_name}", kind=kind)
        assert ssh(server, user, "true").returncode == 0
        log = server.wait_for_log(f"ssh2: ED25519 {fingerprint}")
        assert expected in log


def test_login_name_with_a_style(server_with, user) -> None:
    for kind in KINDS:
        server = server_with(kind=kind)
        argv, env = ssh_argv(server, user, "id -un")
        argv[argv.index(f"{user.name}@127.0.0.1")] = f"{user.name}:bsdauth@127.0.0.1"
        result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
        assert result.returncode == 0, (kind, result.stderr)
        assert result.stdout == f"{user.name}\n".encode()
        server.wait_for_log(f"Accepted publickey for {user.name} from 127.0.0.1")


def test_banner_beyond_64k_is_sent_whole(server_with, user, tmp_path) -> None:
    banner = tmp_path / "banner"
    text = "".join(f"line {n:06d} of a long banner\n" for n in range(4000))  # about 108 KB
    banner.write_text(text)
    banner.chmod(0o644)
    for kind in KINDS:
        result = ssh(server_with(f"Banner {banner}", kind=kind), user, "true",
                     options=["LogLevel=INFO"])
        assert result.returncode == 0
        assert result.stderr.decode().count("of a long banner") == 4000, kind


def _talk_without_banner(port: int) -> bytes:
    sock = _connect(port)
    sock.recv(256)  # the server's identification
    # one line: a server that stops reading there leaves nothing unread (an RST)
    sock.sendall(b"GET / HTTP/1.0\r\n")
    answer = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    sock.close()
    return answer


def test_client_without_an_ssh_banner(server_with) -> None:
    seen, logs = {}, {}
    for kind in KINDS:
        server = server_with(kind=kind)
        seen[kind] = _talk_without_banner(server.port)
        logs[kind] = server.wait_for_log("invalid protocol identifier")
    assert seen["privsep"] == seen["openssh"] == b"Invalid SSH identification string.\r\n"
    for kind in KINDS:
        assert ('kex_exchange_identification: client sent invalid protocol identifier '
                '"GET / HTTP/1.0"') in logs[kind]
        assert re.search(r"banner exchange: Connection from 127\.0\.0\.1 port \d+: "
                         r"invalid format", logs[kind]), logs[kind]


@pytest.mark.parametrize("tty", [False, True])
def test_environment_has_no_mail_as_sshd(server_with, user, tty: bool) -> None:
    names = {}
    for kind in KINDS:
        result = ssh(server_with(kind=kind), user, "env", tty=tty)
        names[kind] = sorted(line.split("=", 1)[0] for line in
                             result.stdout.decode().splitlines() if "=" in line)
    assert "MAIL" not in names["privsep"]
    assert names["privsep"] == names["openssh"]


def _stty_field(text: str, name: str) -> str:
    found = re.search(rf"\b{name} = ([^;]*);", text)
    assert found, text
    return found.group(1)


def test_pty_eol_and_eol2_as_sshd(server_with, user) -> None:
    seen = {}
    for kind in KINDS:
        result = ssh(server_with(kind=kind), user, "stty -a", tty=True)
        text = result.stdout.decode()
        seen[kind] = (_stty_field(text, "eol"), _stty_field(text, "eol2"))
    assert seen["privsep"] == seen["openssh"] == ("<undef>", "<undef>")


def _monitor(server, user) -> int:
    """The pid of the connection's monitor ("USER [priv]")."""
    def find():
        return next((p.pid for p in descendants(server.pid) if f"{user.name} [priv]" in p.args),
                    None)
    return wait_until(find)


def _fd_kinds(pid: int) -> set[str]:
    kinds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target == "/dev/ptmx":
            kinds.add("pty master")
        elif target.startswith("socket:"):
            inode = target[8:-1]
            with open("/proc/net/tcp") as tcp:
                if any(line.split()[9] == inode for line in tcp.readlines()[1:]):
                    kinds.add("tcp socket")
    return kinds


def test_monitor_is_a_session_leader_holding_socket_and_pty(server_with, user) -> None:
    for kind in KINDS:
        server = server_with(kind=kind)
        client = ssh_background(server, user, "echo up; sleep 20", tty=True)
        try:
            assert client.stdout.readline().strip() == b"up"
            pid = _monitor(server, user)
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            assert int(fields[3]) == pid, kind  # session id: its own
            assert _fd_kinds(pid) == {"pty master", "tcp socket"}, kind
        finally:
            client.kill()
            client.wait()



@pytest.mark.parametrize("pattern,matched", [("*", True), ("vrf-*", False), ("!x,*", True)])
def test_match_rdomain_on_a_connection_as_sshd(server_with, user, pattern: str,
                                               matched: bool) -> None:
    """A connection without a VRF has the routing domain "" (sshd 9.2 on
    Linux): "Match RDomain *" holds for it, a device name does not."""
    seen = {}
    for kind in KINDS:
        server = server_with(kind=kind, tail=(f"Match RDomain {pattern}",
                                              "    ForceCommand echo rdomain-block"))
        result = ssh(server, user, "echo", "no-block")
        assert result.returncode == 0, result.stderr
        seen[kind] = result.stdout.decode().strip()
    assert seen["privsep"] == seen["openssh"] == (
        "rdomain-block" if matched else "no-block"), seen


def _ext_info(stderr: bytes) -> dict[str, str]:
    """The server's EXT_INFO as `ssh -v` prints it: name -> value."""
    return dict(re.findall(r"kex_input_ext_info: ([^=\s]+)=<([^>]*)>", stderr.decode()))


@pytest.mark.parametrize("config", [(), ("PubkeyAcceptedAlgorithms ssh-ed25519",)])
def test_ext_info_as_sshd(server_with, user, config: tuple[str, ...]) -> None:
    """server-sig-algs is every signature algorithm sshd knows, in its key
    table's order, whatever PubkeyAcceptedAlgorithms allows; and
    publickey-hostbound follows it."""
    seen = {}
    for kind in KINDS:
        result = ssh(server_with(*config, kind=kind), user, "true", flags=["-v"])
        assert result.returncode == 0, result.stderr[-2000:]
        seen[kind] = _ext_info(result.stderr)
    assert seen["privsep"] == seen["openssh"], seen
    assert seen["openssh"]["server-sig-algs"].startswith("ssh-ed25519,sk-ssh-ed25519")
    assert list(seen["openssh"]) == ["server-sig-algs", "publickey-hostbound@openssh.com"]
