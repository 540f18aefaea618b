"""The client's channel data on the session process's direct path
(privsep/session/inbound.py: a whole packet opened in the read buffer, its
CHANNEL_DATA handed to the program's stdin without a paramiko Message),
with each cipher that takes it and, as the reference, one that goes
through paramiko's read_message (MAC-then-encrypt).

The client is paramiko with the daemon's own cipher table (session_util
``forcing``), so that chacha20-poly1305 is there too, and so that it can
count every byte it sent.  The window rules (a big packet, too much data,
stderr data from the client) and data sent with EOF and CLOSE at once are
tests/test_session_requests.py's, run with the same ciphers against both
daemons.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
import time

import paramiko
import pytest

from tests.daemon import Server, ssh, wait_until
from tests.session_util import CLIENT_CIPHERS, CipherClientTransport, forcing, paramiko_client

_TRANSFERRED = re.compile(r"Transferred: sent (\d+), received (\d+) bytes")


def _client(server: Server, user, cipher: str) -> paramiko.SSHClient:
    return paramiko_client(server, user, **forcing(*CLIENT_CIPHERS[cipher]))


def _settle(transport: paramiko.Transport) -> None:
    """Once the server answers a global request it has read everything
    sent before it, and sends nothing more unasked."""
    transport.global_request("keepalive@openssh.com", wait=True)


@pytest.mark.parametrize("cipher", CLIENT_CIPHERS)
def test_upload_through_rekeys_counted_to_the_byte(server_with, user, cipher: str) -> None:
    """8 MiB of random data to ``sha256sum`` through a server that starts a
    key exchange after every MiB received (RekeyLimit counts the bytes the
    direct path read): the data arrives whole, the server rekeys as often as
    the bytes say, and its "Transferred:" line counts to the byte what the
    client's packet layer counted sending and receiving."""
    server = server_with("RekeyLimit 1M")
    data = os.urandom(8 << 20)
    client = _client(server, user, cipher)
    transport = client.get_transport()
    exchanges = []
    transport._parse_kex_init = _counting(transport._parse_kex_init, exchanges)
    try:
        chan = transport.open_session()
        chan.exec_command("sha256sum")
        chan.sendall(data)
        chan.shutdown_write()
        digest = chan.makefile().read().split()[0].decode()
        assert chan.recv_exit_status() == 0
        chan.close()
        _settle(transport)
        sent, received = transport.packetizer.total_sent, transport.packetizer.total_received
    finally:
        client.close()
    assert digest == hashlib.sha256(data).hexdigest()
    # one per MiB received (8 MiB and the packets' overhead); what is in
    # flight when the server asks counts in the old keys' period, hence the
    # margin below 8
    assert 5 <= len(exchanges) <= 9, len(exchanges)
    log = server.wait_for_log("Transferred:")
    (ours_sent, ours_received), = ((int(a), int(b)) for a, b in _TRANSFERRED.findall(log))
    assert (ours_received, ours_sent) == (sent, received)


def _counting(method, calls: list):
    def counted(m):
        calls.append(time.monotonic())
        return method(m)
    return counted


@pytest.mark.parametrize("cipher", CLIENT_CIPHERS)
def test_data_for_a_channel_closed_meanwhile_ends_the_connection(
        session_server: Server, user, make_user, cipher: str) -> None:
    """CHANNEL_DATA for a channel closed on both sides: sshd ends the
    connection ("referred to nonexistent channel"), and so does the session
    process on either path ("unknown channel"); others carry on."""
    client = _client(session_server, user, cipher)
    try:
        transport = client.get_transport()
        chan = transport.open_session()
        chan.exec_command("cat > /dev/null")
        chan.sendall(b"x" * 100000)  # the direct path is under way
        chan.shutdown_write()
        assert chan.recv_exit_status() == 0
        remote = chan.remote_chanid
        chan.close()
        for _ in range(2):  # our CLOSE is read (test_session_requests explains)
            _settle(transport)
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_DATA)
        m.add_int(remote)
        m.add_string(b"ghost" * 1000)
        transport._send_user_message(m)
        wait_until(lambda: not transport.is_active(), timeout=10)
    finally:
        client.close()
    session_server.wait_for_log("unknown channel" if session_server.kind == "privsep"
                                else "nonexistent channel")
    bystander = make_user(prefix="pby")
    assert ssh(session_server, bystander, "echo alive").stdout == b"alive\n"


def _send_rebuilt(transport: paramiko.Transport, m: paramiko.Message, rebuild) -> None:
    """Send ``m`` in a packet (before the cipher: length, padding length,
    payload, padding) changed by ``rebuild``."""
    packetizer = transport.packetizer
    build = packetizer._build_packet

    def build_once(payload):
        packetizer._build_packet = build
        return bytes(rebuild(bytearray(build(payload))))

    packetizer._build_packet = build_once
    transport._send_user_message(m)


def _padding_past_the_packet(packet: bytearray) -> bytearray:
    """The padding length claims its padding plus the whole packet: a
    negative slice would have landed on the payload exactly."""
    packet[4] += int.from_bytes(packet[:4], "big")
    return packet


def _length_off_the_block(packet: bytearray) -> bytearray:
    """One byte of padding less: a length not a multiple of the block."""
    packet[:5] = struct.pack(">IB", len(packet) - 5, packet[4] - 1)
    return packet[:-1]


@pytest.mark.parametrize("cipher", ["chacha20-poly1305", "aes128-gcm", "aes128-ctr-etm", "aes128-ctr-hmac"])
@pytest.mark.parametrize("rebuild", [_padding_past_the_packet, _length_off_the_block])
@pytest.mark.parametrize("session_server", ["privsep", "openssh"], indirect=True)
def test_malformed_packet_ends_the_connection(session_server: Server, user, cipher: str,
                                              rebuild) -> None:
    """CHANNEL_DATA in a packet whose padding-length byte claims more than
    the packet holds, or whose length is not a multiple of the cipher's
    block: the connection ends, the program gets nothing, as under sshd
    (sshbuf_consume_end; "padding error" and "Bad packet length")."""
    target = f"/tmp/malformed-{os.getpid()}-{cipher}-{session_server.kind}"
    client = _client(session_server, user, cipher)
    try:
        transport = client.get_transport()
        chan = transport.open_session()
        chan.exec_command(f"cat > {target}")
        wait_until(lambda: os.path.exists(target), timeout=10)
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_DATA)
        m.add_int(chan.remote_chanid)
        m.add_string(b"leak")
        _send_rebuilt(transport, m, rebuild)
        wait_until(lambda: not transport.is_active(), timeout=10)
    finally:
        client.close()
    time.sleep(0.5)  # cat, hung up, has written what it was given
    try:
        assert open(target, "rb").read() == b""
    finally:
        os.unlink(target)
    assert "Traceback" not in session_server.log_text()


def _malformed_before_auth(server: Server, cipher: str, rebuild) -> int:
    """A key exchange with ``cipher``, then a SERVICE_REQUEST in a packet
    changed by ``rebuild``: the server ends the connection; our port."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    port = sock.getsockname()[1]
    transport = CipherClientTransport(sock, *CLIENT_CIPHERS[cipher])
    try:
        transport.start_client(timeout=15)
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_SERVICE_REQUEST)
        m.add_string("ssh-userauth")
        _send_rebuilt(transport, m, rebuild)
        wait_until(lambda: not transport.is_active(), timeout=10)
    finally:
        transport.close()
    return port


@pytest.mark.parametrize("cipher", ["chacha20-poly1305", "aes128-gcm", "aes128-ctr-etm", "aes128-ctr-hmac"])
@pytest.mark.parametrize("rebuild", [_padding_past_the_packet, _length_off_the_block])
def test_malformed_packet_before_auth_ends_the_connection(privsep_server: Server,
                                                          openssh_server: Server, make_user,
                                                          cipher: str, rebuild) -> None:
    """The same malformed packets before authentication, in the net-child:
    the connection ends with the lines sshd writes (its packet layer refuses
    them before any handler: "padding error" or "Bad packet length", and
    its dispatch's fatal line), no traceback, and the listener serves on."""
    lines = {}
    for server in (privsep_server, openssh_server):
        start = len(server.log_text())
        port = _malformed_before_auth(server, cipher, rebuild)
        # the dispatch's fatal line is the connection's last
        wait_until(lambda: f"port {port}: " in server.log_text()[start:], timeout=10)
        log = server.log_text()[start:]
        # ours, and the packet layer's, which names no port
        lines[server.kind] = [re.sub(r"port \d+", "port P", line) for line in log.splitlines()
                              if f"port {port}" in line or " port " not in line]
        assert "Traceback" not in log
        assert server.process.poll() is None, "the listener died"
        bystander = make_user(prefix="pby")
        assert ssh(server, bystander, "echo alive").stdout == b"alive\n"
    assert lines["privsep"] == lines["openssh"], lines
    assert lines["privsep"][-1].startswith("ssh_dispatch_run_fatal: Connection from 127.0.0.1 port P: ")
    assert lines["privsep"][-1].endswith(" [preauth]")
