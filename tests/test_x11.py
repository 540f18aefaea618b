"""X11 forwarding (issue 15, section 3), side by side with Debian's sshd.

The client side has a tiny "X server": a TCP listener on 6000+K, with
DISPLAY=localhost:K and a real cookie filed for it by xauth in the
client's own XAUTHORITY.  The remote program (python3, as the user) reads
its cookie with `xauth list $DISPLAY`, opens the display, sends an X11
connection set-up naming that cookie and a payload; the ssh client
checks the cookie, puts the real one in its place and forwards the bytes
to the fake server, which answers.  What each daemon gives the session
(DISPLAY, the xauth entry, the rc file's stdin, the answers to refused
requests) is compared field by field."""

from __future__ import annotations

import os
import re
import secrets
import socket
import struct
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from tests.daemon import ssh_argv
from tests.session_util import channel_request, paramiko_client

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("privsep", "openssh")
PAYLOAD = b"PING-X11"
ANSWER = b"PONG-X11"

#: The remote program: its DISPLAY, its xauth entry, and a round trip
#: through the display with the cookie xauth holds.
REMOTE = r'''
import os, socket, struct, subprocess, sys
display = os.environ.get("DISPLAY", "")
print("DISPLAY=" + display)
if not display:
    sys.exit(0)
entry = subprocess.run(["xauth", "list", display], capture_output=True, text=True).stdout
print("XAUTH=" + entry.strip())
name, proto, cookie = entry.split()[:3]
number = int(display.rpartition(":")[2].split(".")[0])
pad = lambda b: b + b"\0" * (-len(b) % 4)
data = bytes.fromhex(cookie)
setup = b"l\0" + struct.pack("<HHHH", 11, 0, len(proto), len(data)) + b"\0\0"
setup += pad(proto.encode()) + pad(data)
for attempt in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    try:
        s = socket.create_connection(("127.0.0.1", 6000 + number), timeout=10)
    except OSError as exc:
        print("CONNECT=%s" % exc.strerror)
        continue
    s.sendall(setup + b"PING-X11")
    got = b""
    while len(got) < 8:
        chunk = s.recv(100)
        if not chunk:
            break
        got += chunk
    print("GOT=" + got.decode(errors="replace"))
    s.close()
'''


class FakeXServer:
    """A display on the client side: records each connection's set-up
    (the cookie the client substituted) and payload, and answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        for number in range(50, 99):
            try:
                self.sock.bind(("127.0.0.1", 6000 + number))
                break
            except OSError:
                continue
        self.number = self.sock.getsockname()[1] - 6000
        self.sock.listen(8)
        self.seen: list[tuple[bytes, bytes]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                try:
                    while len(data) < 12:
                        data += conn.recv(4096)
                    name_len, data_len = struct.unpack("<HH", data[6:10])
                    size = 12 + (name_len + 3) // 4 * 4 + (data_len + 3) // 4 * 4
                    while len(data) < size + len(PAYLOAD):
                        data += conn.recv(4096)
                    start = 12 + (name_len + 3) // 4 * 4
                    self.seen.append((data[start:start + data_len], data[size:]))
                    conn.sendall(ANSWER)
                except (OSError, struct.error):
                    continue

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def xserver(tmp_path: Path):
    """The fake display, and an XAUTHORITY holding its real cookie."""
    server = FakeXServer()
    cookie = secrets.token_hex(16)
    xauthority = tmp_path / "Xauthority"
    subprocess.run(["xauth", "-f", str(xauthority), "add", f"unix:{server.number}",
                    "MIT-MAGIC-COOKIE-1", cookie], check=True, capture_output=True)
    server.cookie = cookie
    server.xauthority = xauthority
    yield server
    server.close()


def _run_x11(server, user, xserver, *extra: str, flags=("-Y",), attempts: int = 1):
    argv, env = ssh_argv(server, user, "python3", "-c", _quote(REMOTE), str(attempts),
                         flags=["-v", *flags], options=list(extra))
    env.update(DISPLAY=f"localhost:{xserver.number}", XAUTHORITY=str(xserver.xauthority))
    return subprocess.run(argv, env=env, capture_output=True, timeout=60)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _fields(stdout: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.decode().splitlines() if "=" in line)


def _remote(stderr: bytes) -> list[str]:
    """What the server told the client (SSH_MSG_DEBUG): ssh -v's "Remote:" lines."""
    return re.findall(r"Remote: (.*?)\r?$", stderr.decode(errors="replace"), re.M)


def _shape(display: str) -> str:
    """A display with its number replaced (another test may hold one)."""
    return re.sub(r":\d+", ":N", display)


def test_x11_round_trip_as_sshd(server_with, user, xserver) -> None:
    hostname = socket.gethostname()
    seen = {}
    for kind in KINDS:
        xserver.seen.clear()
        server = server_with("X11Forwarding yes", kind=kind)
        result = _run_x11(server, user, xserver)
        assert result.returncode == 0, (kind, result.stderr.decode())
        assert "Traceback" not in server.log_text() and "error" not in server.log_text()
        fields = _fields(result.stdout)
        assert re.fullmatch(r"localhost:\d+\.0", fields["DISPLAY"]), (kind, fields)
        number = fields["DISPLAY"][len("localhost:"):-2]
        name, proto, fake = fields["XAUTH"].split()
        assert name == f"{hostname}/unix:{number}" and proto == "MIT-MAGIC-COOKIE-1"
        # the remote program's bytes reached the display with the real
        # cookie in place of the fake one, and the answer came back
        assert fields["GOT"] == ANSWER.decode()
        assert xserver.seen == [(bytes.fromhex(xserver.cookie), PAYLOAD)], kind
        assert fake != xserver.cookie
        seen[kind] = (_shape(fields["DISPLAY"]), _shape(fields["XAUTH"].split()[0]),
                      proto, fields["GOT"], int(number) >= 10)
    assert seen["privsep"] == seen["openssh"]


def test_x11_display_settings_as_sshd(server_with, user, xserver) -> None:
    """X11DisplayOffset moves the first display tried; with X11UseLocalhost
    no the display is hostname:N.0, on every address."""
    config = ("X11Forwarding yes", "X11DisplayOffset 40", "X11UseLocalhost no")
    seen = {}
    for kind in KINDS:
        result = _run_x11(server_with(*config, kind=kind), user, xserver)
        assert result.returncode == 0, (kind, result.stderr.decode())
        fields = _fields(result.stdout)
        host, _, rest = fields["DISPLAY"].rpartition(":")
        assert host == socket.gethostname() and int(rest.split(".")[0]) >= 40, fields
        # xauth files a name of this host as its "/unix" entry
        assert fields["XAUTH"].split()[0] == f"{host}/unix:{rest[:-2]}", fields
        assert fields["GOT"] == ANSWER.decode()
        seen[kind] = (_shape(fields["DISPLAY"]), _shape(fields["XAUTH"].split()[0]))
    assert seen["privsep"] == seen["openssh"]


@pytest.mark.parametrize("config,key_option", [
    (("X11Forwarding no",), ""),
    (("X11Forwarding yes",), "no-x11-forwarding "),
    (("X11Forwarding yes",), "restrict,pty "),
    (("X11Forwarding yes", "XAuthLocation /nonexistent/xauth"), ""),
])
def test_x11_refusals_as_sshd(server_with, user, xserver, config, key_option) -> None:
    (user.home / ".ssh" / "authorized_keys").write_text(key_option + user.pubkey + "\n")
    seen = {}
    for kind in KINDS:
        result = _run_x11(server_with(*config, kind=kind), user, xserver)
        assert result.returncode == 0, (kind, result.stderr.decode())
        assert _fields(result.stdout) == {"DISPLAY": ""}, kind
        stderr = result.stderr.decode(errors="replace")
        seen[kind] = ([r for r in _remote(result.stderr) if "X11" in r or "xauth" in r],
                      "X11 forwarding request failed" in stderr)
    assert seen["privsep"] == seen["openssh"]
    assert seen["privsep"][1]


def test_user_rc_gets_the_cookie_instead_of_xauth(server_with, user, xserver) -> None:
    """With ~/.ssh/rc the cookie goes to the rc file's stdin, and xauth is
    not run: the rc file is to file it itself."""
    rc = user.home / ".ssh" / "rc"
    rc.write_text('read proto cookie; echo "RC=$proto $DISPLAY"\n')
    os.chown(rc, user.uid, user.gid)
    seen = {}
    for kind in KINDS:
        (user.home / ".Xauthority").unlink(missing_ok=True)
        argv, env = ssh_argv(server_with("X11Forwarding yes", kind=kind), user,
                             "xauth list; echo done", flags=["-Y"])
        env.update(DISPLAY=f"localhost:{xserver.number}", XAUTHORITY=str(xserver.xauthority))
        result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
        assert result.returncode == 0, (kind, result.stderr.decode())
        seen[kind] = _shape(result.stdout.decode())
    assert seen["privsep"] == seen["openssh"]
    assert seen["privsep"] == "RC=MIT-MAGIC-COOKIE-1 localhost:N.0\ndone\n"


def test_single_connection_as_sshd(server_with, user) -> None:
    """A single-connection request (the OpenSSH client never sends one:
    paramiko's client does): the display takes one connection, then no more."""
    seen = {}
    for kind in KINDS:
        client = paramiko_client(server_with("X11Forwarding yes", kind=kind), user)
        try:
            opened = []
            chan = client.get_transport().open_session()

            def handler(x11chan, origin) -> None:
                opened.append(origin)
                x11chan.close()
            chan.request_x11(single_connection=True, handler=handler)
            chan.exec_command("python3 -c " + _quote(REMOTE) + " 2")
            out = chan.makefile("rb").read()
            chan.recv_exit_status()
        finally:
            client.close()
        fields = out.decode().splitlines()
        assert len(opened) == 1 and opened[0][0] == "127.0.0.1", (kind, opened)
        seen[kind] = [_shape(line) for line in fields if not line.startswith("XAUTH")]
    assert seen["privsep"] == seen["openssh"]
    assert seen["privsep"][-1] == "CONNECT=Connection refused", seen


@pytest.mark.parametrize("proto,cookie", [
    ("MIT-MAGIC-COOKIE-1", "00ff\nadd evil:0 x y"), ("MIT MAGIC", "00ff"), ("proto;id", "00"),
])
def test_hostile_auth_data_refused_as_sshd(server_with, user, proto, cookie) -> None:
    """What would reach xauth's or the rc file's stdin is checked as sshd
    checks it: a refusal and sshd's line, and the session goes on."""
    for kind in KINDS:
        server = server_with("X11Forwarding yes", kind=kind)
        client = paramiko_client(server, user)
        try:
            chan = client.get_transport().open_session()
            with pytest.raises(paramiko.SSHException):
                chan.request_x11(auth_protocol=proto, auth_cookie=cookie)
            # paramiko closes a channel whose request failed: the connection goes on
            chan = client.get_transport().open_session()
            chan.exec_command("echo ok")
            assert chan.makefile("rb").read() == b"ok\n", kind
        finally:
            client.close()
        server.wait_for_log("Invalid X11 forwarding data")
        assert "Traceback" not in server.log_text()


#: (protocol, cookie) as sent, and whether sshd grants the display: it reads
#: both as C strings, so a trailing NUL is cut (the display and the xauth
#: entry are those of the bare strings); any other odd byte is refused
RAW_AUTH_CASES = {
    "trailing-nul": (b"MIT-MAGIC-COOKIE-1\0", b"00112233445566778899aabbccddeeff\0", True),
    "high-byte": (b"MIT-MAGIC-COOKIE-1\xff", b"00ff", False),
    "empty-with-nul": (b"\0", b"\0", True),
}


@pytest.mark.parametrize("case", list(RAW_AUTH_CASES))
def test_x11_auth_strings_read_as_sshd(server_with, user, case: str) -> None:
    """The x11-req's strings as bytes on the wire, side by side: the same
    answer, the same display and xauth entry for the session's program, the
    same line, and the connection goes on."""
    proto, cookie, granted = RAW_AUTH_CASES[case]
    seen = {}
    for kind in KINDS:
        server = server_with("X11Forwarding yes", kind=kind)
        client = paramiko_client(server, user)
        try:
            chan = client.get_transport().open_session()
            reply = channel_request(chan, "x11-req", False, proto, cookie, 0)
            chan.exec_command('echo "DISPLAY=$DISPLAY"; xauth list "$DISPLAY" 2>/dev/null')
            out = chan.makefile("rb").read().decode()
            # an x11-req once the program runs: a failure, unread (sshd's LARVAL rule)
            late = client.get_transport().open_session()
            late.exec_command("sleep 2")
            again = channel_request(late, "x11-req", False, b"MIT-MAGIC-COOKIE-1", b"00ff", 0)
        finally:
            client.close()
        refused = "Invalid X11 forwarding data" in server.log_text()
        assert "Traceback" not in server.log_text()
        seen[kind] = (reply, _shape(out).replace(socket.gethostname(), "HOST"), refused, again)
    assert seen["privsep"] == seen["openssh"], seen
    reply, out, refused, again = seen["privsep"]
    assert (reply, refused, again) == (granted, not granted, False)
    if granted:
        assert out.startswith("DISPLAY=localhost:N.0\n"), out
    if case == "trailing-nul":
        assert out.endswith(" MIT-MAGIC-COOKIE-1  00112233445566778899aabbccddeeff\n"), out
