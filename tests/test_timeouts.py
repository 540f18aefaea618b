"""UnusedConnectionTimeout and ChannelTimeout (issue 15, section 4), side
by side with Debian's sshd 9.2, with short values: what the client sees
(its exit status, what it read), when, and the log line."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time

import pytest

from tests.daemon import free_port, ssh, ssh_argv, ssh_background

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("privsep", "openssh")


def _log_lines(server, pattern: str) -> list[str]:
    """The log's lines matching ``pattern``, from the message on, with ports
    masked.  The monitor's " [session]" tag on the session process's lines
    is the subject of issue 15's section 5 (log lines), not of this test."""
    lines = []
    for line in server.log_text().splitlines():
        if re.search(pattern, line):
            line = re.sub(r"port \d+", "port P", line).removesuffix(" [session]")
            lines.append(re.sub(r"^.*?(?=\b(terminating|channel) )", "", line))
    return lines


def _timed(argv, env, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    return result, time.monotonic() - start


def test_unused_connection_closed_as_sshd(server_with, user) -> None:
    """ssh -N opens no channel: the connection ends after the timeout."""
    seen = {}
    for kind in KINDS:
        server = server_with("UnusedConnectionTimeout 2", kind=kind)
        argv, env = ssh_argv(server, user, flags=["-N"])
        result, took = _timed(argv, env)
        assert 0.5 < took < 10, (kind, took)  # sshd counts whole seconds
        server.wait_for_log("terminating inactive connection")
        seen[kind] = (result.returncode, _log_lines(server, "terminating inactive"))
    assert seen["privsep"] == seen["openssh"]
    assert seen["privsep"][1] == [f"terminating inactive connection from user {user.name} "
                                  "127.0.0.1 port P"]


def test_unused_connection_timeout_spares_open_channels(server_with, user) -> None:
    """A command running longer than the timeout keeps the connection; a
    session channel counts only once its program runs (sshd's larval one
    does not)."""
    for kind in KINDS:
        server = server_with("UnusedConnectionTimeout 1", kind=kind)
        result = ssh(server, user, "sleep 3; echo still here")
        assert (result.returncode, result.stdout) == (0, b"still here\n"), (kind, result.stderr)
        assert "terminating inactive" not in server.log_text()


@pytest.mark.parametrize("spec,closes", [
    ("session:*=2", True), ("session:command=2", True),
    # 9.2 looks a started session up by "session:command": "session" no longer matches
    ("session=2", False), ("session:shell=2", False),
])
def test_channel_timeout_on_a_session_as_sshd(server_with, user, spec: str, closes: bool) -> None:
    seen = {}
    for kind in KINDS:
        server = server_with(f"ChannelTimeout {spec}", kind=kind)
        argv, env = ssh_argv(server, user, "echo start; sleep 5; echo end")
        result, took = _timed(argv, env)
        assert (took < 4.5) == closes, (kind, took, result.stderr)
        if closes:
            server.wait_for_log("seconds of inactivity")
        seen[kind] = (result.returncode, result.stdout,
                      _log_lines(server, "seconds of inactivity"))
    assert seen["privsep"] == seen["openssh"]
    if closes:
        assert seen["privsep"][1] == b"start\n"
        assert seen["privsep"][2] == ["channel 0: closing after 2 seconds of inactivity"]
    else:
        assert seen["privsep"][:2] == (0, b"start\nend\n")


def test_channel_timeout_is_reset_by_traffic(server_with, user) -> None:
    """Output every second keeps a 2-second limit from ever running out."""
    for kind in KINDS:
        server = server_with("ChannelTimeout session:*=2", kind=kind)
        result = ssh(server, user, "for i in 1 2 3 4; do echo $i; sleep 1; done")
        assert (result.returncode, result.stdout) == (0, b"1\n2\n3\n4\n"), kind


def _echo_server() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: _echo(c), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def test_channel_timeout_on_a_forward_as_sshd(server_with, user) -> None:
    """direct-tcpip=2: an idle ssh -L connection is closed, a session is not."""
    echo, echo_port = _echo_server()
    seen = {}
    try:
        for kind in KINDS:
            server = server_with("ChannelTimeout direct-tcpip=2", kind=kind)
            local = free_port()
            client = ssh_background(server, user, "sleep 20",
                                    flags=["-L", f"{local}:127.0.0.1:{echo_port}"])
            try:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        conn = socket.create_connection(("127.0.0.1", local), timeout=10)
                        break
                    except OSError:
                        assert time.monotonic() < deadline, kind
                        time.sleep(0.1)
                with conn:
                    conn.sendall(b"hello")
                    assert conn.recv(100) == b"hello"
                    start = time.monotonic()
                    rest = conn.recv(100)  # nothing more: the server closes it
                    took = time.monotonic() - start
                server.wait_for_log("seconds of inactivity")
                assert client.poll() is None, kind  # the session goes on
                seen[kind] = (rest, 0.5 < took < 6,  # sshd counts whole seconds
                              _log_lines(server, "seconds of inactivity"))
            finally:
                client.kill()
                client.wait()
    finally:
        echo.close()
    assert seen["privsep"] == seen["openssh"]
    assert seen["privsep"][:2] == (b"", True)
    assert re.fullmatch(r"channel \d+: closing after 2 seconds of inactivity",
                        seen["privsep"][2][0])
