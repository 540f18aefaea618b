"""Port and Unix-socket forwarding with the real client, both daemons:
-L, -D (through a SOCKS5 client written here), -R fixed and port 0, Unix
sockets both ways, and refusals (closed port, PermitOpen, AllowTcpForwarding)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading

import pytest

from tests.daemon import Server, free_port, remove_server, ssh, ssh_argv, start_server, wait_until
from tests.session_util import (EchoServer, forwarder, recv_all, socks5_connect, stop_forwarder,
                                wait_port)

DATA = os.urandom(1024 * 1024 + 13)


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def shared_dir():
    """A directory every user can reach, for Unix sockets."""
    directory = tempfile.mkdtemp(prefix="fwd-")
    os.chmod(directory, 0o1777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _roundtrip(sock: socket.socket, data: bytes = DATA) -> bytes:
    """Send ``data`` (in a thread), half-close, read the echo to EOF."""
    def send():
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    sender = threading.Thread(target=send)
    sender.start()
    got = recv_all(sock)
    sender.join()
    sock.close()
    return got


def test_local_forward(session_server: Server, user, echo) -> None:
    port = free_port()
    proc = forwarder(session_server, user, ["-L", f"{port}:127.0.0.1:{echo.port}"])
    try:
        wait_port(port)
        for _ in range(3):  # several connections through one forward
            assert _roundtrip(socket.create_connection(("127.0.0.1", port))) == DATA
    finally:
        stop_forwarder(proc)


def test_dynamic_forward_socks5(session_server: Server, user, echo) -> None:
    port = free_port()
    proc = forwarder(session_server, user, ["-D", f"127.0.0.1:{port}"])
    try:
        wait_port(port)
        sock = socks5_connect(port, "127.0.0.1", echo.port)
        assert _roundtrip(sock) == DATA
        sock = socks5_connect(port, "localhost", echo.port)
        assert _roundtrip(sock, b"by name") == b"by name"
    finally:
        stop_forwarder(proc)


def test_remote_forward_fixed_port(session_server: Server, user, echo) -> None:
    port = free_port()
    proc = forwarder(session_server, user, ["-R", f"{port}:127.0.0.1:{echo.port}"])
    try:
        wait_port(port)
        assert _roundtrip(socket.create_connection(("127.0.0.1", port))) == DATA
    finally:
        stop_forwarder(proc)


def test_remote_forward_port_zero(session_server: Server, user, echo) -> None:
    proc = forwarder(session_server, user, ["-v", "-R", f"0:127.0.0.1:{echo.port}"])
    try:
        line = b""
        while b"Allocated port" not in line:
            line = proc.stderr.readline()
            assert line, "the client printed no allocated port"
        port = int(re.search(rb"Allocated port (\d+)", line).group(1))
        wait_port(port)
        assert _roundtrip(socket.create_connection(("127.0.0.1", port))) == DATA
    finally:
        stop_forwarder(proc)


def test_remote_forward_used_from_the_session(session_server: Server, user, echo) -> None:
    """-R with a command that connects to the forward from the server side."""
    port = free_port()
    result = ssh(session_server, user,
                 f"sleep 0.5; printf hello | nc -q 1 127.0.0.1 {port} || "
                 f"python3 -c 'import socket;s=socket.create_connection((\"127.0.0.1\",{port}));"
                 f"s.sendall(b\"hello\");s.shutdown(1);print(s.recv(99).decode(),end=\"\")'",
                 flags=["-R", f"{port}:127.0.0.1:{echo.port}"])
    assert result.stdout == b"hello", result.stderr


def test_unix_socket_forwards(session_server: Server, user, shared_dir) -> None:
    echo_path = os.path.join(shared_dir, "echo.sock")
    echo = EchoServer(echo_path)
    local = os.path.join(shared_dir, "local.sock")
    remote = os.path.join(shared_dir, f"remote-{session_server.kind}.sock")
    proc = forwarder(session_server, user, ["-L", f"{local}:{echo_path}",
                                             "-R", f"{remote}:{echo_path}"])
    try:
        wait_until(lambda: os.path.exists(local) and os.path.exists(remote) or proc.poll())
        for path in (local, remote):  # direct-streamlocal, then streamlocal-forward
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            assert _roundtrip(sock) == DATA
        st = os.stat(remote)
        assert st.st_uid == user.uid  # made by the session process, as the user
        assert st.st_mode & 0o777 == 0o600  # StreamLocalBindMask 0177
    finally:
        stop_forwarder(proc)
        echo.close()
    # sshd leaves the socket file behind when the forward ends (hence
    # StreamLocalBindUnlink); so do we
    assert os.path.exists(remote)


def test_data_before_the_clients_close_reaches_the_socket(session_server: Server, user,
                                                          shared_dir) -> None:
    """The client's CLOSE can arrive while what it sent before still waits
    for room in the forwarded socket (its reader is slow): that data is
    still written, then the socket ends, as sshd drains a channel's output
    after the peer's CLOSE (nchan.c, CHAN_OUTPUT_WAIT_DRAIN).  The session
    process's loop dropped it (a truncated echo under load).

    The target never reads until the server has handled the CLOSE; which
    the server shows by handling the CHANNEL_OPEN that the client sends
    after it, for a second connection."""
    data = os.urandom(1536 * 1024)  # within the 2 MiB window; far above a Unix socket's buffer
    target_path = os.path.join(shared_dir, "target.sock")
    target = socket.socket(socket.AF_UNIX)
    target.bind(target_path)
    os.chmod(target_path, 0o777)
    target.listen(4)
    target.settimeout(20)
    local = os.path.join(shared_dir, f"drain-{session_server.kind}.sock")
    proc = forwarder(session_server, user, ["-vv", "-L", f"{local}:{target_path}"])
    closes = threading.Semaphore(0)

    def watch_client_log() -> None:  # -vv: "channel N: send close"; keep the pipe drained
        for line in proc.stderr:
            if b": send close" in line:
                closes.release()
    threading.Thread(target=watch_client_log, daemon=True).start()
    conns = []
    try:
        wait_until(lambda: os.path.exists(local) or proc.poll() is not None)
        first = socket.socket(socket.AF_UNIX)
        first.settimeout(20)
        first.connect(local)
        conn, _ = target.accept()
        conns.append(conn)
        conn.settimeout(20)
        conn.shutdown(socket.SHUT_WR)  # the server's EOF to the client, at once
        assert recv_all(first) == b""  # which the client has passed on
        first.sendall(data)
        first.shutdown(socket.SHUT_WR)  # the client's EOF, and then its CLOSE
        assert closes.acquire(timeout=20), "the client never closed the channel"
        second = socket.socket(socket.AF_UNIX)
        second.connect(local)  # opened after the CLOSE: handled after it
        conns.append(target.accept()[0])
        got = recv_all(conn)
        assert len(got) == len(data)
        assert got == data
        second.close()
        first.close()
    finally:
        stop_forwarder(proc)
        for sock in conns:
            sock.close()
        target.close()


def test_forward_to_closed_port(session_server: Server, user, echo) -> None:
    """The channel fails with "Connection refused", a log line, nothing else disturbed."""
    dead = free_port()
    port, other = free_port(), free_port()  # not port + 1: that one may be taken
    proc = forwarder(session_server, user, ["-v", "-L", f"{port}:127.0.0.1:{dead}",
                                             "-L", f"{other}:127.0.0.1:{echo.port}"])
    try:
        wait_port(port)
        sock = socket.create_connection(("127.0.0.1", port))
        assert recv_all(sock) == b""  # the client closes it when the open fails
        wait_port(other)
        assert _roundtrip(socket.create_connection(("127.0.0.1", other))) == DATA
        session_server.wait_for_log(f"connect_to 127.0.0.1 port {dead}: failed.")
    finally:
        err = stop_forwarder(proc)
    assert b"open failed: connect failed: Connection refused" in err


def test_forward_to_unknown_host(session_server: Server, user) -> None:
    port = free_port()
    proc = forwarder(session_server, user, ["-v", "-L", f"{port}:no-such-host.invalid:80"])
    try:
        wait_port(port)
        assert recv_all(socket.create_connection(("127.0.0.1", port))) == b""
        session_server.wait_for_log("connect_to no-such-host.invalid: unknown host")
    finally:
        err = stop_forwarder(proc)
    assert b"open failed: connect failed" in err


# --- refused by configuration: a server of each kind with the limits -------------

@pytest.fixture(scope="module", params=["privsep", "openssh"])
def strict_server(request, pam_service):
    if request.param == "openssh" and not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("no openssh-server")
    server = start_server(request.param, ["PermitOpen 127.0.0.1:1",
                                          "AllowStreamLocalForwarding no"])
    yield server
    remove_server(server)


def test_permit_open_refuses(strict_server: Server, user, echo) -> None:
    port = free_port()
    proc = forwarder(strict_server, user, ["-v", "-L", f"{port}:127.0.0.1:{echo.port}"])
    try:
        wait_port(port)
        assert recv_all(socket.create_connection(("127.0.0.1", port))) == b""
        strict_server.wait_for_log(f"to connect to host 127.0.0.1 port {echo.port}, "
                                   "but the request was denied.")
    finally:
        err = stop_forwarder(proc)
    assert b"administratively prohibited" in err


def test_streamlocal_refused(strict_server: Server, user, shared_dir) -> None:
    remote = os.path.join(shared_dir, "refused.sock")
    argv, env = ssh_argv(strict_server, user, "true",
                         flags=["-o", "ExitOnForwardFailure=yes", "-R", f"{remote}:/nonexistent"])
    result = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    assert result.returncode == 255
    assert b"remote port forwarding failed" in result.stderr
    assert not os.path.exists(remote)


def test_no_tcp_forwarding(server_with, user, echo) -> None:
    server = server_with("AllowTcpForwarding no")
    port = free_port()
    proc = forwarder(server, user, ["-L", f"{port}:127.0.0.1:{echo.port}"])
    try:
        wait_port(port)
        assert recv_all(socket.create_connection(("127.0.0.1", port))) == b""
        server.wait_for_log("refused local port forward: originator 127.0.0.1 port")
    finally:
        stop_forwarder(proc)
    result = ssh(server, user, "true", flags=["-o", "ExitOnForwardFailure=yes",
                                              "-R", f"{free_port()}:127.0.0.1:1"])
    assert result.returncode == 255


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_unix_socket_forward_refused_under_permit_open(server_with, user, shared_dir,
                                                       kind: str) -> None:
    """With a PermitOpen list, a Unix-socket forward cannot reach any path
    (sshd's channel_connect_to_path): the list is about host:port, and a
    path must not slip past it (issue 11.5)."""
    server = server_with("PermitOpen 127.0.0.1:9", kind=kind)
    echo_path = os.path.join(shared_dir, "echo.sock")
    echo = EchoServer(echo_path)
    local = os.path.join(shared_dir, f"local-{kind}.sock")
    proc = forwarder(server, user, ["-L", f"{local}:{echo_path}"])
    try:
        wait_until(lambda: os.path.exists(local) or proc.poll() is not None)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(20)  # an open that succeeds would wait for data forever
        sock.connect(local)
        assert recv_all(sock) == b""  # the client closes it when the open fails
        server.wait_for_log(f"Received request to connect to path {echo_path}, "
                            "but the request was denied.")
    finally:
        stop_forwarder(proc)
        echo.close()
