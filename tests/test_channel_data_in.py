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
from tests.session_util import (CLIENT_CIPHERS, CipherClientTransport, closed_channel, forcing,
                                paramiko_client, record_disconnect)

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
    connection ("data packet referred to nonexistent channel N"), and so
    does the session process on either path, in its words; others carry on."""
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
    session_server.wait_for_log(f"Disconnecting user {user.name} 127.0.0.1 port ")
    assert re.search(rf"^Disconnecting user {user.name} 127\.0\.0\.1 port \d+: data packet "
                     rf"referred to nonexistent channel {remote}$", session_server.log_text(), re.M)
    bystander = make_user(prefix="pby")
    assert ssh(session_server, bystander, "echo alive").stdout == b"alive\n"


def _send_rebuilt(transport: paramiko.Transport, m: paramiko.Message, rebuild) -> None:
    """Send ``m`` in a packet (before the cipher: length, padding length,
    payload, padding) changed by ``rebuild``; or, for a rebuild marked
    ``sealed``, with the packet as it goes on the wire changed."""
    packetizer = transport.packetizer
    sealed = getattr(rebuild, "sealed", False)
    name = "write_all" if sealed else "_build_packet"
    original = getattr(packetizer, name)

    def once(data):
        setattr(packetizer, name, original)
        if sealed:
            return original(bytes(rebuild(bytearray(data))))
        return bytes(rebuild(bytearray(original(data))))

    setattr(packetizer, name, once)
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


def _padding_below_four(packet: bytearray) -> bytearray:
    """A padding length of 3 (RFC 4253: at least 4), the packet unchanged."""
    packet[4] = 3
    return packet


def _length_past_the_bound(packet: bytearray) -> bytearray:
    """A length field above sshd's PACKET_MAX_SIZE (256 KiB)."""
    packet[:4] = struct.pack(">I", 300000)
    return packet


def _type_out_of_range(packet: bytearray) -> bytearray:
    """Message type 192, the first of the local range no peer may send."""
    packet[5] = 192
    return packet


def _mac_flipped(sealed: bytearray) -> bytearray:
    """The last bit of the packet's MAC or tag flipped on its way out."""
    sealed[-1] ^= 1
    return sealed


_mac_flipped.sealed = True

MALFORMED = [_padding_past_the_packet, _length_off_the_block, _padding_below_four,
             _length_past_the_bound, _type_out_of_range, _mac_flipped]
FRAMING_CIPHERS = ["chacha20-poly1305", "aes128-gcm", "aes128-ctr-etm", "aes128-ctr-hmac"]


def _port_lines(log: str, port: int) -> list[str]:
    """The lines of one connection (and the packet layer's, which name no
    port), the port numbers blanked."""
    return [re.sub(r"port \d+", "port P", line) for line in log.splitlines()
            if f"port {port}" in line or " port " not in line]


def _malformed_after_auth(server: Server, user, cipher: str, rebuild) -> dict:
    """A logged-in client's CHANNEL_DATA for ``cat > file``, in a packet
    changed by ``rebuild``: what the client read (DISCONNECTs), the
    server's lines from then on, and what the program wrote."""
    target = f"/tmp/malformed-{os.getpid()}-{cipher}-{server.kind}"
    client = _client(server, user, cipher)
    try:
        transport = client.get_transport()
        port = transport.sock.getsockname()[1]
        received = record_disconnect(transport)
        chan = transport.open_session()
        chan.exec_command(f"cat > {target}")
        wait_until(lambda: os.path.exists(target), timeout=10)
        start = len(server.log_text())
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_DATA)
        m.add_int(chan.remote_chanid)
        m.add_string(b"leak")
        _send_rebuilt(transport, m, rebuild)
        wait_until(lambda: not transport.is_active(), timeout=10)
    finally:
        client.close()
    server.wait_for_log(f"ssh_dispatch_run_fatal: Connection from user {user.name} 127.0.0.1 "
                        f"port {port}: ")
    time.sleep(0.5)  # cat, hung up, has written what it was given; no line follows
    try:
        written = open(target, "rb").read()
    finally:
        os.unlink(target)
    log = server.log_text()[start:]
    assert "Traceback" not in log
    return {"received": received, "lines": _port_lines(log, port), "written": written}


@pytest.mark.parametrize("cipher", FRAMING_CIPHERS)
@pytest.mark.parametrize("rebuild", MALFORMED)
def test_malformed_packet_ends_the_connection(privsep_session_server: Server,
                                              openssh_session_server: Server, user,
                                              cipher: str, rebuild) -> None:
    """CHANNEL_DATA in a packet whose padding-length byte claims more than
    the packet holds or less than 4, whose length is off the cipher's block
    or past sshd's bound, whose type no client may send, or whose MAC or tag
    does not match: the connection ends, the program gets nothing, and the
    client reads (a DISCONNECT where sshd sends one, its reason and words)
    and the log says what they do under sshd, field by field."""
    ours, theirs = (_malformed_after_auth(server, user, cipher, rebuild)
                    for server in (privsep_session_server, openssh_session_server))
    assert ours == theirs
    assert ours["written"] == b""
    assert ours["lines"][-1].startswith(f"ssh_dispatch_run_fatal: Connection from user {user.name} ")


def _malformed_before_auth(server: Server, cipher: str, rebuild) -> tuple[int, list]:
    """A key exchange with ``cipher``, then a SERVICE_REQUEST in a packet
    changed by ``rebuild``: the server ends the connection; our port, and
    the DISCONNECTs we read."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    port = sock.getsockname()[1]
    transport = CipherClientTransport(sock, *CLIENT_CIPHERS[cipher])
    received = record_disconnect(transport)
    try:
        transport.start_client(timeout=15)
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_SERVICE_REQUEST)
        m.add_string("ssh-userauth")
        _send_rebuilt(transport, m, rebuild)
        wait_until(lambda: not transport.is_active(), timeout=10)
    finally:
        transport.close()
    return port, received


@pytest.mark.parametrize("cipher", FRAMING_CIPHERS)
@pytest.mark.parametrize("rebuild", MALFORMED)
def test_malformed_packet_before_auth_ends_the_connection(privsep_server: Server,
                                                          openssh_server: Server, make_user,
                                                          cipher: str, rebuild) -> None:
    """The same malformed packets before authentication, in the net-child:
    the connection ends with the lines sshd writes (its packet layer refuses
    them before any handler: "padding error", "Bad packet length" or
    "Corrupted MAC on input.", and its dispatch's fatal line), the
    DISCONNECT it sends (only for a padding length below 4 and a type out
    of range: its others are queued and never written), no traceback, and
    the listener serves on."""
    seen = {}
    for server in (privsep_server, openssh_server):
        start = len(server.log_text())
        port, received = _malformed_before_auth(server, cipher, rebuild)
        # the dispatch's fatal line is the connection's last
        wait_until(lambda: f"port {port}: " in server.log_text()[start:], timeout=10)
        log = server.log_text()[start:]
        seen[server.kind] = {"received": received, "lines": _port_lines(log, port)}
        assert "Traceback" not in log
        assert server.process.poll() is None, "the listener died"
        bystander = make_user(prefix="pby")
        assert ssh(server, bystander, "echo alive").stdout == b"alive\n"
    assert seen["privsep"] == seen["openssh"], seen
    lines = seen["privsep"]["lines"]
    assert lines[-1].startswith("ssh_dispatch_run_fatal: Connection from 127.0.0.1 port P: ")
    assert lines[-1].endswith(" [preauth]")


def _window_adjust(transport: paramiko.Transport, chanid: int, nbytes: int) -> None:
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_WINDOW_ADJUST)
    m.add_int(chanid)
    m.add_int(nbytes)
    transport._send_user_message(m)


def test_window_adjust_for_a_gone_channel_is_logged_and_dropped(session_server: Server,
                                                                user) -> None:
    """WINDOW_ADJUST for a channel closed on both sides: sshd logs it and
    carries on (channels.c's channel_input_window_adjust), where the other
    channel messages end the connection; so does the session process."""
    client = paramiko_client(session_server, user)
    try:
        transport = client.get_transport()
        remote = closed_channel(transport)
        _window_adjust(transport, remote, 4096)
        _settle(transport)
        assert transport.is_active()
        chan = transport.open_session()  # the connection serves on
        chan.exec_command("echo still")
        assert chan.makefile().read() == b"still\n"
    finally:
        client.close()
    session_server.wait_for_log(f"Received window adjust for non-open channel {remote}.")


def test_window_adjust_past_the_counter_ends_the_connection(session_server: Server,
                                                            user) -> None:
    """A WINDOW_ADJUST that takes the window past 2^32 - 1 is sshd's fatal()
    ("channel N: adjust A overflows remote window W", CRITICAL, no
    DISCONNECT); the session process ends the same way, with the same
    numbers (the window the client gave, less nothing sent yet)."""
    client = paramiko_client(session_server, user)
    disconnects = record_disconnect(client.get_transport())
    try:
        transport = client.get_transport()
        chan = transport.open_session()
        chan.exec_command("cat")
        _settle(transport)
        window = transport.default_window_size
        _window_adjust(transport, chan.remote_chanid, 0xFFFFFFFF - window + 1)
        wait_until(lambda: not transport.is_active(), timeout=10)
    finally:
        client.close()
    line = (f"channel {chan.remote_chanid}: adjust {0xFFFFFFFF - window + 1} overflows remote "
            f"window {window}")
    log = session_server.wait_for_log(line)
    assert re.search(rf"^{line}$", log, re.M), log
    assert disconnects == []
    assert "Traceback" not in log
