"""PermitTunnel and ``ssh -w``: tun@openssh.com, side by side with sshd.

The stock client opens tun5 (or tap5) here and asks the server for unit 6.
sshd 9.2 serves a root login in its monitor (no separate child), so root
can open a device; another user only gets one the kernel lets the user
have (see monitor/tun.py).  So the working tunnels log in as root, with a
key in the test's own AuthorizedKeysFile.  To ping across, the client's end
moves into a network namespace of its own once the tunnel is up (a tun
device keeps working when moved), so that the packets must cross the SSH
connection: with both ends in one namespace the kernel would answer locally.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from privsep.wire import tunnel
from privsep.wire.keyoptions import parse_key_options
from tests.daemon import Server, ssh_argv, wait_until
from tests.userutil import TestUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("privsep", "openssh")
#: a private /30 for the two ends of the tunnel
CLIENT_ADDR, SERVER_ADDR = "10.199.56.1", "10.199.56.2"


#: ping(8) in a few lines (iputils-ping is not installed everywhere): three
#: ICMP echo requests of 1000 bytes, each answered by the far end's kernel.
PING = r"""
import os, socket, struct, sys
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.settimeout(5)
ident = os.getpid() & 0xFFFF
for seq in range(3):
    payload = bytes(range(256)) * 4
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload
    sock.sendto(packet, (sys.argv[1], 0))
    while True:
        data, _ = sock.recvfrom(4096)
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[20:28])
        if kind == 0 and rid == ident and rseq == seq and data[28:] == payload:
            print("reply")
            break
"""


def _have_tun() -> bool:
    if not os.path.exists("/dev/net/tun"):
        subprocess.run(["modprobe", "tun"], capture_output=True)
    return os.path.exists("/dev/net/tun")


@pytest.fixture(autouse=True)
def tun_device() -> None:
    if not _have_tun():
        pytest.skip("no /dev/net/tun on this machine, and modprobe tun did not make one")
    for name in ("tun5", "tun6", "tap5", "tap6"):
        if _link_exists(name):
            pytest.skip(f"{name} exists already: the test needs units 5 and 6 free")


def _link_exists(name: str, netns: str | None = None) -> bool:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return subprocess.run(argv, capture_output=True).returncode == 0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def root_login(tmp_path):
    """(root as a TestUser, writer of the authorized_keys file used by
    both daemons' AuthorizedKeysFile); root's own ~/.ssh is not touched."""
    key = tmp_path / "root_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = key.with_suffix(".pub").read_text().strip()
    keys = tmp_path / "authorized_keys"

    def allow(options: str = "") -> None:
        keys.write_text(f"{options} {pub}\n".lstrip())
        keys.chmod(0o600)

    allow()
    root = TestUser("root", 0, 0, Path("/root"), None, key, None)
    return root, keys, allow


def _server(server_with, kind: str, keys: Path, *lines: str) -> Server:
    # StrictModes no: the keys file lives under /tmp, which sshd would refuse.
    return server_with(*lines, "PermitRootLogin prohibit-password", "StrictModes no",
                       f"AuthorizedKeysFile {keys}", kind=kind)


def _tunnel_argv(server: Server, user: TestUser, mode: str, spec: str, *command: str):
    return ssh_argv(server, user, *command, flags=["-v"],
                    options=[f"Tunnel={mode}", f"TunnelDevice={spec}",
                             "ExitOnForwardFailure=yes"])


def _remote_lines(stderr: str) -> list[str]:
    """What the server told the client in SSH_MSG_DEBUG (ssh -v), but the
    "key options" lines sshd sends after a publickey login (auth_debug_send),
    which privsep-sshd does not send."""
    lines = [line.split("Remote: ", 1)[1] for line in stderr.splitlines() if "Remote: " in line]
    return [line for line in lines if ": key options:" not in line]


# --- the pure rules (wire/tunnel.py) -------------------------------------------------

def test_unit_rules_as_server_request_tun() -> None:
    assert tunnel.unit_to_open(6, None) == 6
    assert tunnel.unit_to_open(tunnel.TUNID_ANY, None) == tunnel.TUNID_ANY
    assert tunnel.unit_to_open(2**31, None) is None  # beyond int
    assert tunnel.unit_to_open(6, 6) == 6
    assert tunnel.unit_to_open(tunnel.TUNID_ANY, 6) == 6  # the key's unit for "any"
    assert tunnel.unit_to_open(6, 7) is None
    assert tunnel.unit_to_open(6, tunnel.TUNID_ANY) is None  # tunnel="any" forces "any"
    assert tunnel.forced_unit(parse_key_options('no-pty,tunnel="3",tunnel="4"')) == 4
    assert tunnel.forced_unit(parse_key_options('tunnel="ANY"')) == tunnel.TUNID_ANY
    assert tunnel.forced_unit(parse_key_options("no-port-forwarding")) is None
    assert [tunnel.mode_permitted(p, m) for p in ("no", "point-to-point", "ethernet", "yes")
            for m in (1, 2)] == [False, False, True, False, False, True, True, True]


def test_address_family_header_as_openssh_on_linux() -> None:
    ipv4 = bytes([0x45]) + bytes(27)
    ipv6 = bytes([0x60]) + bytes(47)
    assert tunnel.to_channel(ipv4) == b"\0\0\0\x02" + ipv4  # OpenBSD's AF_INET
    assert tunnel.to_channel(ipv6) == b"\0\0\0\x18" + ipv6  # OpenBSD's AF_INET6 (24)
    assert tunnel.to_channel(ipv4[:20]) is None  # not even an IPv4 header
    assert tunnel.from_channel(b"\0\0\0\x02" + ipv4) == ipv4
    assert tunnel.from_channel(b"\0\0\0") is None


# --- a working tunnel, pinged across ---------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode,prefix", [("point-to-point", "tun"), ("ethernet", "tap")])
def test_ping_across_the_tunnel(server_with, root_login, kind: str, mode: str,
                                prefix: str) -> None:
    root, keys, _ = root_login
    server = _server(server_with, kind, keys, "PermitTunnel yes")
    argv, env = _tunnel_argv(server, root, mode, "5:6", 'echo "tunnel=$SSH_TUNNEL"; sleep 60')
    client = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    netns = f"pst-tun-{uuid.uuid4().hex[:8]}"
    local, remote = f"{prefix}5", f"{prefix}6"
    try:
        line = client.stdout.readline().decode().strip()  # the command runs: both ends are up
        assert line == f"tunnel={remote}", (line, client.stderr.read1().decode())
        assert _link_exists(local) and _link_exists(remote)
        _ip("netns", "add", netns)
        _ip("link", "set", local, "netns", netns)
        if mode == "point-to-point":
            _ip("-n", netns, "addr", "add", CLIENT_ADDR, "peer", SERVER_ADDR, "dev", local)
            _ip("addr", "add", SERVER_ADDR, "peer", CLIENT_ADDR, "dev", remote)
        else:
            _ip("-n", netns, "addr", "add", f"{CLIENT_ADDR}/30", "dev", local)
            _ip("addr", "add", f"{SERVER_ADDR}/30", "dev", remote)
        _ip("-n", netns, "link", "set", local, "up")
        _ip("link", "set", remote, "up")
        ping = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", PING,
                               SERVER_ADDR], capture_output=True, text=True, timeout=60)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert ping.stdout.split() == ["reply"] * 3, ping.stdout
        # the packets crossed the connection: the server's end counted them
        stats = Path(f"/sys/class/net/{remote}/statistics/rx_packets").read_text()
        assert int(stats) >= 3
    finally:
        client.kill()
        client.wait(10)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    # Neither end outlives its connection (neither device is persistent).
    wait_until(lambda: not _link_exists(remote), timeout=15)
    wait_until(lambda: not _link_exists(local), timeout=15)


# --- who may have which device: both daemons the same ----------------------------

CASES = {
    # name: (sshd_config, key options, client mode, TunnelDevice)
    "permit-no": ("PermitTunnel no", "", "point-to-point", "5:6"),
    "mode-not-permitted": ("PermitTunnel ethernet", "", "point-to-point", "5:6"),
    "ethernet-not-permitted": ("PermitTunnel point-to-point", "", "ethernet", "5:6"),
    "key-forces-another-unit": ("PermitTunnel yes", 'tunnel="7"', "point-to-point", "5:6"),
    "key-forces-any": ("PermitTunnel yes", 'tunnel="any"', "point-to-point", "5:6"),
    "key-forces-the-unit": ("PermitTunnel yes", 'tunnel="6"', "point-to-point", "5:6"),
    "key-unit-for-any": ("PermitTunnel yes", 'tunnel="6"', "point-to-point", "5:any"),
    "no-port-forwarding": ("PermitTunnel point-to-point", "no-port-forwarding",
                           "point-to-point", "5:6"),
    "restrict": ("PermitTunnel yes", "restrict", "point-to-point", "5:6"),
}


def _outcome(server: Server, root: TestUser, mode: str, spec: str) -> tuple:
    """(first line of output, exit code or "open", whether the client said
    the tunnel failed, the server's debug messages).  The client stays while
    its tunnel is open, with either daemon: it is stopped once the command
    has spoken."""
    argv, env = _tunnel_argv(server, root, mode, spec, 'echo "tunnel=$SSH_TUNNEL"')
    client = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = client.stdout.readline().strip()
    if line:
        client.kill()
    _, stderr = client.communicate(timeout=60)
    code = "open" if line else client.returncode
    return line, code, "Tunnel forwarding failed" in stderr, _remote_lines(stderr)


@pytest.mark.parametrize("case", CASES)
def test_who_gets_a_tunnel_as_sshd(server_with, root_login, case: str) -> None:
    config, options, mode, spec = CASES[case]
    root, keys, allow = root_login
    allow(options)
    outcomes = {}
    for kind in KINDS:
        server = _server(server_with, kind, keys, config)
        outcomes[kind] = _outcome(server, root, mode, spec)
        time.sleep(0.2)  # the client's own tun5 is gone with it
        wait_until(lambda: not _link_exists("tun5") and not _link_exists("tap5"))
    assert outcomes["privsep"] == outcomes["openssh"], outcomes
    line, code, failed, remote = outcomes["privsep"]
    expected_ok = case in ("key-forces-the-unit", "key-unit-for-any", "no-port-forwarding",
                           "restrict")
    assert (code == "open" and line == "tunnel=tun6") == expected_ok, outcomes
    if not expected_ok:
        assert code == 255 and failed
        reason = ("Failed to open the tunnel device." if case.startswith("key-")
                  else "Server has rejected tunnel device forwarding")
        assert remote == [reason], remote


def test_a_user_gets_no_device_the_kernel_denies_them(server_with, user) -> None:
    """sshd opens the device as the user; the monitor, with the user's
    rights: a user without a device of their own is refused by both."""
    outcomes = {}
    for kind in KINDS:
        server = server_with("PermitTunnel yes", kind=kind)
        argv, env = _tunnel_argv(server, user, "point-to-point", "5:6", "true")
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=60)
        outcomes[kind] = (result.returncode, _remote_lines(result.stderr))
        wait_until(lambda: not _link_exists("tun5"))
    assert outcomes["privsep"] == outcomes["openssh"] == \
        (255, ["Failed to open the tunnel device."]), outcomes
    assert not _link_exists("tun6")


def test_permit_tunnel_is_no_longer_unsupported(server_with) -> None:
    server = server_with("PermitTunnel yes")
    assert "Unsupported option PermitTunnel" not in server.log_text()
