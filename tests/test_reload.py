"""SIGHUP re-exec, SIGTERM, and systemd notifications (sd_notify), outside a
VM: a datagram socket stands in for systemd's $NOTIFY_SOCKET. The same
behaviour under a real systemd is checked by tests/test_vm.py."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.daemon import ssh, ssh_background, wait_until


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _next(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)


def _echo(client, text: bytes) -> None:
    client.stdin.write(text)
    client.stdin.flush()
    assert client.stdout.readline() == text


def test_hup_reexec_and_term(server_with, user, notify_socket) -> None:
    server = server_with()
    ready = _next(notify_socket)
    assert ready.get("READY") == "1" and ready.get("MAINPID") == str(server.pid)
    live = ssh_background(server, user, "cat", tty=False)
    _echo(live, b"before\n")

    # A good configuration: re-exec in place, same pid, new logins served.
    os.kill(server.pid, signal.SIGHUP)
    assert _next(notify_socket).get("RELOADING") == "1"
    again = _next(notify_socket)
    assert again.get("READY") == "1" and again.get("MAINPID") == str(server.pid)
    server.wait_for_log("Received SIGHUP; restarting.")
    assert server.process.poll() is None
    assert ssh(server, user, "echo", "new").stdout == b"new\n"
    _echo(live, b"after reload\n")
    assert (server.workdir / "sshd.pid").read_text().strip() == str(server.pid)

    # A broken configuration: logged, not applied, still serving.
    config = server.workdir / "sshd_config"
    config.write_text(config.read_text() + "NoSuchKeyword yes\n")
    os.kill(server.pid, signal.SIGHUP)
    assert _next(notify_socket).get("RELOADING") == "1"
    assert _next(notify_socket).get("READY") == "1"
    log = server.wait_for_log("Not restarting")
    assert "NoSuchKeyword" in log.split("Not restarting", 1)[1]
    assert server.process.poll() is None
    assert ssh(server, user, "echo", "still").stdout == b"still\n"

    # SIGTERM: STOPPING=1, exit 0, the PidFile gone, the live session untouched.
    server.process.send_signal(signal.SIGTERM)
    assert _next(notify_socket).get("STOPPING") == "1"
    assert server.process.wait(15) == 0
    assert not (server.workdir / "sshd.pid").exists()
    _echo(live, b"after stop\n")
    live.stdin.close()
    assert live.wait(15) == 0


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_term_removes_pid_file_and_leaves_sessions(server_with, user, kind: str) -> None:
    """Side by side with sshd: SIGTERM ends the listener, its PidFile goes
    with it (scripts wait for that), and a live session carries on."""
    server = server_with(kind=kind)
    pid_file = server.workdir / "sshd.pid"
    wait_until(pid_file.exists)
    live = ssh_background(server, user, "cat", tty=False)
    _echo(live, b"before\n")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(15) == 0
    assert not pid_file.exists()
    _echo(live, b"after stop\n")
    live.stdin.close()
    assert live.wait(15) == 0
