"""Hostile and broken clients: each gets a log line and a dropped connection;
the listener and another user's live session are untouched."""

from __future__ import annotations

import re
import socket
import struct
import time

import pytest

from tests.daemon import (Server, descendants, processes, remove_server, ssh, ssh_background,
                          start_server, wait_until)


@pytest.fixture(scope="module", params=[9, 10])
def impatient_server(request, pam_service):
    """A server with a 2-second LoginGraceTime, for slow clients, in each
    process generation."""
    server = start_server("privsep", extra_config=["LoginGraceTime 2",
                                                   f"ProcessGeneration {request.param}"])
    server.generation = request.param
    yield server
    remove_server(server)


def _exchange(server: Server, payload: bytes,
              read_banner: bool = True) -> tuple[bytes, bool, int]:
    """Send ``payload`` after the banner; everything the server sent back,
    whether the connection ended in a reset (else a close), and our port."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    port = sock.getsockname()[1]
    received, reset = b"", False
    try:
        if read_banner:
            received += sock.recv(256)
        sock.sendall(payload)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            except socket.timeout:
                break
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    return received, reset, port


def _raw(server: Server, payload: bytes, read_banner: bool = True) -> tuple[bytes, int]:
    """Send ``payload`` after the banner; everything the server sent back, and our port."""
    received, _reset, port = _exchange(server, payload, read_banner)
    return received, port


@pytest.fixture
def bystander(privsep_server: Server, user):
    """Another user's live session that must survive everything."""
    client = ssh_background(privsep_server, user, "cat", tty=False)
    yield client
    client.kill()
    client.wait()


def _still_alive(server: Server, bystander) -> None:
    assert server.process.poll() is None, "the listener died"
    bystander.stdin.write(b"still here\n")
    bystander.stdin.flush()
    assert bystander.stdout.readline() == b"still here\n"


def test_garbage_banner(privsep_server: Server, bystander) -> None:
    received, port = _raw(privsep_server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert received.startswith(b"SSH-2.0-")
    assert b"Traceback" not in received and b"Error" not in received
    privsep_server.wait_for_log(f"banner exchange: Connection from 127.0.0.1 port {port}: invalid format")
    _still_alive(privsep_server, bystander)


def test_oversized_packet_length(privsep_server: Server, bystander) -> None:
    payload = b"SSH-2.0-evil\r\n" + struct.pack(">I", 0x7FFFFFF0) + b"\x00" * 64
    received, port = _raw(privsep_server, payload)
    assert b"Traceback" not in received
    # sshd's fatal line is the connection's last: no "Connection closed by" after it
    privsep_server.wait_for_log(f"ssh_dispatch_run_fatal: Connection from 127.0.0.1 port {port}")
    _still_alive(privsep_server, bystander)
    assert f"Connection closed by 127.0.0.1 port {port}" not in privsep_server.log_text()


@pytest.mark.parametrize("step", ["at once", "after banner", "mid key exchange"])
def test_client_disconnects(privsep_server: Server, bystander, step: str) -> None:
    sock = socket.create_connection(("127.0.0.1", privsep_server.port), timeout=10)
    port = sock.getsockname()[1]
    if step != "at once":
        sock.recv(256)
        sock.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
    if step == "mid key exchange":
        sock.recv(4096)  # the server's KEXINIT
    sock.close()
    if step == "at once":
        # before the client's identification: sshd's [priv] says so, unmarked
        log = privsep_server.wait_for_log(f"Connection closed by 127.0.0.1 port {port}\n")
        assert "kex_exchange_identification: Connection closed by remote host\n" in log
    else:
        privsep_server.wait_for_log(f"Connection closed by 127.0.0.1 port {port} [preauth]")
    _still_alive(privsep_server, bystander)


def test_client_vanishes_at_password_prompt(privsep_server: Server, user, bystander) -> None:
    client = ssh_background(privsep_server, user, "true", password="x")
    askpass = privsep_server.workdir / f"askpass-{user.name}"
    askpass.write_text("#!/bin/sh\nsleep 60\n")  # hold the client at the prompt
    # The client runs askpass only once the server has offered "password" for
    # this user: its `sleep 60` running means the server is mid-authentication.
    wait_until(lambda: [p for p in descendants(client.pid) if p.args == "sleep 60"])
    client.kill()
    client.wait()
    privsep_server.wait_for_log(f"Connection closed by authenticating user {user.name} 127.0.0.1")
    _still_alive(privsep_server, bystander)


def test_slow_client_times_out(impatient_server: Server) -> None:
    """LoginGraceTime drops a silent client.  Generation 9 writes nothing,
    as Debian 12's sshd (test_log_parity compares the two); generation 10
    writes OpenSSH 10's listener line (sshd.c, child_reap: logit, so INFO)
    naming the connection's sshd-session."""
    listener = impatient_server.pid
    sock = socket.create_connection(("127.0.0.1", impatient_server.port), timeout=10)
    sock.recv(256)
    # the readiness probe's monitor gone, ours is the listener's one child
    monitor = wait_until(lambda: [p.pid for p in processes().values() if p.ppid == listener]
                         if sum(p.ppid == listener for p in processes().values()) == 1
                         else None)[0]
    # say nothing: LoginGraceTime 2 must drop us
    sock.settimeout(15)
    try:
        rest = sock.recv(4096)
    except ConnectionResetError:
        rest = b""
    sock.close()
    assert rest == b""
    wait_until(lambda: monitor not in processes())
    line = f"Timeout before authentication for connection from 127.0.0.1 to 127.0.0.1, pid = {monitor}"
    if impatient_server.generation == 10:
        impatient_server.wait_for_log(line + "\n")
    else:
        time.sleep(0.5)  # the listener reaps it: anything it would write
    assert ("Timeout before authentication" in impatient_server.log_text()) \
        == (impatient_server.generation == 10)
    assert impatient_server.process.poll() is None


def test_unknown_user_gets_the_same_methods(privsep_server: Server, user, make_user) -> None:
    """An unknown user is offered exactly what a known one is."""
    from dataclasses import replace
    ghost = replace(user, name="nosuchuser42")
    known = ssh(privsep_server, user, "true", key=False, options=["PubkeyAuthentication=no",
                                                                    "PasswordAuthentication=no"])
    unknown = ssh(privsep_server, ghost, "true", key=False, options=["PubkeyAuthentication=no",
                                                                       "PasswordAuthentication=no"])
    assert known.returncode == unknown.returncode == 255
    methods = lambda r: r.stderr.decode().rsplit("Permission denied", 1)[1].strip()  # noqa: E731
    assert methods(known) == methods(unknown)


@pytest.mark.parametrize("victim", ["session", "monitor"])
def test_listener_survives_the_death_of_any_child(privsep_server: Server, user, bystander,
                                                  victim: str) -> None:
    import os
    import signal
    client = ssh_background(privsep_server, user, tty=True)
    try:
        shell = wait_until(lambda: [p for p in descendants(privsep_server.pid)
                                    if p.args == "-bash" and p.uid == user.uid])[0]
        session_pid = shell.ppid
        monitor_pid = [p for p in descendants(privsep_server.pid) if p.pid == session_pid][0].ppid
        os.kill(session_pid if victim == "session" else monitor_pid, signal.SIGKILL)
        assert client.wait(20) == 255  # the client sees its connection end
        if victim == "session":
            # the monitor saw it go and cleaned up: logout record, PAM closed
            privsep_server.wait_for_log(f"Disconnected from user {user.name} 127.0.0.1")
            import subprocess
            who = subprocess.run(["who"], capture_output=True, text=True).stdout
            assert user.name not in who
        _still_alive(privsep_server, bystander)
        assert ssh(privsep_server, user, "echo new").stdout == b"new\n"
    finally:
        client.kill()
        client.wait()


def test_client_vanishes_mid_transfer(privsep_server: Server, user, bystander) -> None:
    """The user's command goes, the session ends and is logged; nothing else moves."""
    client = ssh_background(privsep_server, user, "cat /dev/zero", tty=False)
    assert len(client.stdout.read(1 << 20)) == 1 << 20
    client.kill()
    client.wait()
    # sshd's last line for a client gone without a DISCONNECT: a reset
    # (our output unread) or a plain close, as the kernel decides
    wait_until(lambda: re.search(r"^(Read error from remote host|Closing connection to) "
                                 r"127\.0\.0\.1 port \d+", privsep_server.log_text(), re.M))
    wait_until(lambda: not [p for p in descendants(privsep_server.pid)
                            if p.uid == user.uid and "cat /dev/zero" in p.args])
    _still_alive(privsep_server, bystander)


def _plain_packet(payload: bytes, padding: int, length: int | None = None,
                  padding_length: int | None = None) -> bytes:
    """A packet before any cipher: ``payload`` and ``padding`` zero bytes,
    its length field and padding length byte as given or as they should be."""
    body = bytes([padding if padding_length is None else padding_length]) + payload
    body += bytes(padding)
    return struct.pack(">I", len(body) if length is None else length) + body


def _plain_received(data: bytes) -> list:
    """The server's packets after its identification line, read plain: each
    one's type, or for a DISCONNECT (1, reason, description)."""
    data = data.split(b"\r\n", 1)[1]
    packets: list = []
    while len(data) >= 5:
        length, padding = struct.unpack(">IB", data[:5])
        payload, data = data[5:4 + length - padding], data[4 + length:]
        if payload[:1] == b"\x01":
            reason, size = struct.unpack(">II", payload[1:9])
            packets.append((1, reason, payload[9:9 + size].decode()))
        else:
            packets.append(payload[0])
    return packets


#: an IGNORE with an empty string: 5 bytes of payload
_IGNORE = b"\x02" + bytes(4)

#: plaintext packets (before the first NEWKEYS) sshd's packet layer refuses
PLAIN_FRAMING = {
    "length past the bound": _plain_packet(_IGNORE, 6, length=300000),
    "length below the minimum": struct.pack(">I", 2) + bytes(12),
    "length off the block": _plain_packet(_IGNORE, 5),
    "padding length below four": _plain_packet(_IGNORE + bytes(3), 3),
    "padding past the packet": _plain_packet(_IGNORE, 6, padding_length=40),
    "type out of range": _plain_packet(b"\xc8" + bytes(4), 6),
}


@pytest.mark.parametrize("case", PLAIN_FRAMING)
def test_plaintext_framing_as_sshd(privsep_server: Server, openssh_server: Server,
                                   case: str) -> None:
    """A plaintext packet after the client's identification whose length is
    out of bounds or off the 8-byte block, whose padding length is below 4
    or past the packet, or whose type no client may send: what the client
    reads (the KEXINIT, the DISCONNECT sshd sends for the last two kinds),
    how the connection ends (a close, not a reset) and the log lines are
    sshd's ("Bad packet length", "padding error", its fatal line)."""
    seen = {}
    for server in (privsep_server, openssh_server):
        start = len(server.log_text())
        received, reset, port = _exchange(
            server, b"SSH-2.0-OpenSSH_9.2p1\r\n" + PLAIN_FRAMING[case], read_banner=False)
        wait_until(lambda: f"port {port}: " in server.log_text()[start:], timeout=10)
        log = server.log_text()[start:]
        assert "Traceback" not in log
        lines = [re.sub(r"port \d+", "port P", line) for line in log.splitlines()
                 if f"port {port}" in line or " port " not in line]
        seen[server.kind] = {"received": _plain_received(received), "reset": reset,
                             "lines": lines}
    assert seen["privsep"] == seen["openssh"], seen
    assert seen["privsep"]["lines"][-1].startswith(
        "ssh_dispatch_run_fatal: Connection from 127.0.0.1 port P: ")
