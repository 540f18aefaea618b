"""The session process's packet layer: paramiko's Packetizer, fed by the
event loop instead of blocking reads and writes.

Runs in the post-auth session process, as the user.  paramiko reads a
packet with blocking reads (length, body, MAC) in its transport thread.
Here the loop reads whatever the socket holds into a buffer (``take``), and
a packet is handed to paramiko's read_message only once all of it is there
(``packet_ready``), so that a slow client never holds the loop in a read.
Writes go out at once as far as the socket takes them; the rest waits in a
backlog that the loop writes when the socket has room (``flush``).

To know that a packet is whole, its length must be known.  With an
encrypt-then-MAC mode or AES-GCM it is in clear; chacha20-poly1305 encrypts
it with a key of its own, which decrypts it without moving on; otherwise it is in the first
cipher block, which can be decrypted only once (a CTR or CBC decryptor moves
on): that block's clear text is kept and handed back to read_message when it
asks for it (``FirstBlock``, child/packetizer.py).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import struct
import time

import paramiko

from privsep.child.chachapoly import TAG_ERRORS, TAG_SIZE
from privsep.child.packetizer import FirstBlock, check_length, pkt_get, pkt_set
from privsep.child.strict_message import StrictMessage
from privsep.session.inbound import DirectOpen, adjust_window, deliver_channel_data
from privsep.session.resume import ResumedPacketizer

log = logging.getLogger("privsep.session")

#: CHANNEL_WINDOW_ADJUST .. CHANNEL_FAILURE: messages that name a channel of ours.
_CHANNEL_MESSAGES = range(93, 101)
_common = paramiko.common
#: sshd's words for a message naming a channel it does not have, which end
#: the connection (channels.c's channel_from_packet_id, serverloop.c's
#: server_input_channel_req) ...
_GONE_CHANNEL_ENDS = {
    _common.MSG_CHANNEL_DATA: "data packet referred to nonexistent channel {}",
    _common.MSG_CHANNEL_EXTENDED_DATA: "extended data packet referred to nonexistent channel {}",
    _common.MSG_CHANNEL_EOF: "ieof packet referred to nonexistent channel {}",
    _common.MSG_CHANNEL_CLOSE: "oclose packet referred to nonexistent channel {}",
    _common.MSG_CHANNEL_REQUEST: "server_input_channel_req: unknown channel {}",
}
#: ... or that it logs and drops (channel_input_window_adjust,
#: channel_input_status_confirm)
_GONE_CHANNEL_LOGGED = {
    _common.MSG_CHANNEL_WINDOW_ADJUST: "Received window adjust for non-open channel {}.",
    _common.MSG_CHANNEL_SUCCESS: "channel_input_status_confirm: {}: unknown",
    _common.MSG_CHANNEL_FAILURE: "channel_input_status_confirm: {}: unknown",
}


def _gone_channel(transport, ptype: int, chanid: int) -> None:
    """A channel message for a channel that is gone (or never was): logged
    and dropped (the None read_message returns for a message dealt with),
    or the connection's end, as sshd decides for each type."""
    if ptype in _GONE_CHANNEL_LOGGED:
        log.info(_GONE_CHANNEL_LOGGED[ptype].format(chanid))
        return None
    raise transport.disconnect(_GONE_CHANNEL_ENDS[ptype].format(chanid))
_MSG_CHANNEL_DATA = paramiko.common.MSG_CHANNEL_DATA
_MSG_WINDOW_ADJUST = paramiko.common.MSG_CHANNEL_WINDOW_ADJUST


class WriteError(EOFError):
    """Writing to the client's socket failed (it reset the connection, or
    is gone): sshd's process_output ends the connection there with
    sshpkt_fatal's line and nothing after it (session/main.py)."""

    def __init__(self, number: int) -> None:
        super().__init__(os.strerror(number))
        self.errno = number
        self.strerror = os.strerror(number)


#: the padding length byte for each padding size; zero padding
_PAD_LENGTH = [bytes([n]) for n in range(256)]
_ZEROS = bytes(255)
_U32 = struct.Struct(">I")


class _Payload:
    """A message's bytes where paramiko's send_message wants a Message."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def asbytes(self) -> bytes:
        return self.data


class SessionPacketizer(DirectOpen, ResumedPacketizer):
    """Ends the connection on most messages for a channel that is gone, as
    sshd does (``_gone_channel``), where paramiko would ignore them; and reads and
    writes without blocking, the loop deciding when (see the module's text).
    Bulk channel data in takes the direct path (inbound.py)."""

    transport = None
    #: how much one read may take from the socket
    READ_AHEAD = 256 * 1024
    #: bytes read from the socket and not yet handed to paramiko
    _ahead: bytearray
    #: encrypted packets waiting for room in the socket
    _backlog: bytearray
    #: the whole size of the next packet, once its length is known
    _next_size: int | None = None
    #: packets sealed by send_messages' paramiko path, not yet written
    _queued: list | None = None

    def start_loop(self) -> None:
        """From now on the loop feeds us; what the net-child had read comes first."""
        self._ahead = bytearray(pkt_get(self, "remainder"))
        pkt_set(self, "remainder", b"")
        self._backlog = bytearray()
        self._next_size = None

    def fileno(self) -> int:
        """The socket's fd now: -1 once the transport closed it (a number
        kept from before could by then name another file)."""
        return pkt_get(self, "socket").fileno()

    # --- reading -----------------------------------------------------------------------

    def take(self) -> bool:
        """Read what the socket holds; False when the client closed it."""
        try:
            data = os.read(self.fileno(), self.READ_AHEAD)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            return False
        self._ahead += data
        return True

    def packet_ready(self) -> bool:
        """Is a whole packet buffered?  Raises on a length sshd would refuse."""
        if self._next_size is None:
            self._next_size = self._packet_size()
            if self._next_size is None:
                return False
        return len(self._ahead) >= self._next_size

    def _packet_size(self) -> int | None:
        """The next packet's size on the wire, or None while its first block
        has not arrived."""
        if self._chacha_in is not None:
            return self._chacha_packet_size()
        block = pkt_get(self, "block_size_in")
        if len(self._ahead) < block:
            return None
        first = bytes(self._ahead[:block])
        engine = pkt_get(self, "block_engine_in")
        clear_length = bool(pkt_get(self, "etm_in") or pkt_get(self, "aead_in"))
        if engine is not None and not clear_length:
            clear = engine.update(first)
            pkt_set(self, "block_engine_in", FirstBlock(self, engine, first, clear))
            first = clear
        # sshd's checks (child/packetizer.py), before paramiko's read_message
        # slices by them; the direct path checks the padding of the other
        # modes itself (inbound.py)
        length = self.first_block(first, block, clear_length)
        return 4 + length + pkt_get(self, "mac_size_in")

    def _chacha_packet_size(self) -> int | None:
        """chacha20-poly1305 encrypts the length with a key of its own: read
        it (not yet authenticated, so bounded first) without consuming it."""
        if len(self._ahead) < 4:
            return None
        seqno = pkt_get(self, "sequence_number_in")
        length = self._chacha_in.open_length(seqno, bytes(self._ahead[:4]))
        check_length(length, 8, True)
        return 4 + length + TAG_SIZE

    def read_all(self, n, check_rekey=False):
        """Bytes of a packet that packet_ready() saw whole."""
        if len(self._ahead) < n:
            raise paramiko.SSHException("packet layer out of step")
        out = bytes(memoryview(self._ahead)[:n])
        del self._ahead[:n]
        return out

    def read_message(self):
        """The next message, as paramiko's; ``(type, None)`` for channel
        data already delivered to its channel's sink, or a window adjust
        already applied (inbound.py)."""
        size, self._next_size = self._next_size, None
        try:
            opened = self.open_whole(size)
        except (paramiko.SSHException, *TAG_ERRORS) as exc:
            self.refuse(exc)  # CipherPacketizer's, as on paramiko's path
        transport = self.transport
        if opened is None:
            ptype, m = super().read_message()
        else:
            seqno, payload = opened
            ptype = payload[0]
            if transport is not None and (
                    (ptype == _MSG_CHANNEL_DATA and deliver_channel_data(transport, payload))
                    or (ptype == _MSG_WINDOW_ADJUST and adjust_window(transport, payload))):
                return ptype, None
            m = StrictMessage(bytes(payload[1:]))
            m.seqno = seqno
        m.ptype = ptype  # for sshd's line if a field falls short (parse_fatal.py)
        if transport is not None and ptype in _CHANNEL_MESSAGES:
            chanid = m.get_int()
            m.rewind()
            if transport._channels.get(chanid) is None:
                return ptype, _gone_channel(transport, ptype, chanid)
        return ptype, m

    def _trigger_rekey(self) -> None:
        """A byte or packet limit was reached, maybe in the middle of a send
        (the write lock held): the key exchange starts once that is done."""
        super()._trigger_rekey()
        transport = self.transport
        if transport is not None and transport.loop is not None:
            transport.loop.call_later(0, transport.rekey_if_due)

    # --- writing: the bulk path ---------------------------------------------------------

    def send_messages(self, messages: list[tuple[bytes, object]]) -> int:
        """Several messages, each ``(head, data)`` (the type byte and fixed
        fields, then the bytes-like body: CHANNEL_DATA from a pump), sealed
        in order and written together with one writev.  Stops after the
        packet that reaches the rekey limit, as the rest must follow a key
        exchange: returns how many were sent.

        With chacha20-poly1305 or AES-GCM and no compression, the packets
        are framed and sealed here in one pass (``_seal_aead``), with no
        paramiko Message (which would copy the data three times more) and no
        call per packet but the cipher's.  With any other cipher or MAC each
        message goes through send_message as usual (its MAC computed there),
        only the writes are gathered."""
        if self._aead_bulk():
            sent, queued = self._seal_aead(messages)
            self._write_many(queued)
            return sent
        queued: list = []
        self._queued = queued
        sent = 0
        try:
            for head, data in messages:
                self.send_message(_Payload(head + bytes(data)))
                sent += 1
                if self._Packetizer__need_rekey:
                    break
        finally:
            self._queued = None
        self._write_many(queued)
        return sent

    def _aead_bulk(self) -> bool:
        """Does the outbound cipher take the direct path (chacha20-poly1305,
        or paramiko's other AEAD, AES-GCM, without compression)?"""
        return (self._Packetizer__compress_engine_out is None
                and (self._chacha_out is not None or self._Packetizer__aead_out))

    def _seal_aead(self, messages: list[tuple[bytes, object]]) -> tuple[int, list]:
        """Frame and seal ``messages`` as paramiko frames an AEAD packet
        (the length outside the blocks; at least 4 bytes of zero padding,
        which the counter mode's keystream hides, as paramiko reasons for
        CTR), up to the packet that reaches the rekey limit; then count them
        all at once, as CipherPacketizer._after_sealing counts one.  Returns
        how many were sealed, and the buffers to write, in order."""
        block = self._Packetizer__block_size_out
        bytes_left = self.REKEY_BYTES - self._Packetizer__sent_bytes
        packets_left = self.REKEY_PACKETS - self._Packetizer__sent_packets
        stop_at_one = self._Packetizer__need_rekey
        pack, join = _U32.pack, b"".join
        framed = []
        wire = 0
        for head, data in messages:
            size = len(head) + len(data)
            pad = 3 + block - ((size + 4) % block)
            framed.append((pack(1 + size + pad),
                           join((_PAD_LENGTH[pad], head, data, _ZEROS[:pad]))))
            wire += 5 + size + pad + TAG_SIZE
            if wire >= bytes_left or len(framed) >= packets_left or stop_at_one:
                break
        seqno = self._Packetizer__sequence_number_out
        if self._chacha_out is not None:
            queued = self._chacha_out.seal_many(seqno, framed)
        else:
            queued = self._seal_gcm(framed)
        self.total_sent += wire - TAG_SIZE * len(framed)
        self._after_sealing(seqno, wire, len(framed))
        return len(framed), queued

    def _seal_gcm(self, framed: list) -> list:
        """AES-GCM (RFC 5647) of each ``(length, body)``: the length is the
        associated data, written in clear before the sealed body and its
        tag, all into one buffer per packet; the IV's invocation counter
        (its last 8 bytes) moves on by one per packet."""
        engine, iv = self._Packetizer__block_engine_out, self._Packetizer__iv_out
        fixed, counter = iv[:4], int.from_bytes(iv[4:], "big")
        queued = []
        for length, body in framed:
            out = bytearray(4 + len(body) + TAG_SIZE)
            out[:4] = length
            engine.encrypt_into(fixed + counter.to_bytes(8, "big"), body, length,
                                memoryview(out)[4:])
            counter = (counter + 1) & 0xFFFFFFFFFFFFFFFF
            queued.append(out)
        self._Packetizer__iv_out = fixed + counter.to_bytes(8, "big")
        return queued

    def _write_many(self, buffers: list) -> None:
        """``buffers`` in order: one writev as far as the socket takes it,
        the rest to the backlog."""
        if not buffers:
            return
        pkt_set(self, "keepalive_last", time.time())
        written = 0
        if not self._backlog:
            fd = self.fileno()
            if fd < 0:
                raise EOFError()
            try:
                written = os.writev(fd, buffers)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                raise self._write_failed(exc) from None
        for buffer in buffers:
            size = len(buffer)
            if written >= size:
                written -= size
                continue
            self._backlog += memoryview(buffer)[written:]
            written = 0

    # --- writing -----------------------------------------------------------------------

    def write_all(self, out) -> None:
        """paramiko's one write per packet: queued inside send_messages,
        else written as far as the socket takes it, the rest backlogged."""
        if self._queued is not None:  # inside send_messages: written together
            self._queued.append(out)
            return
        self._write_many([out])

    def backlog(self) -> int:
        """Bytes waiting for the socket."""
        return len(self._backlog)

    def flush(self) -> None:
        """Write what the socket takes of the backlog (the loop: writable)."""
        fd = self.fileno()
        if fd < 0 or not self._backlog:
            return
        try:
            written = os.write(fd, self._backlog)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise self._write_failed(exc) from None
        del self._backlog[:written]

    def _write_failed(self, exc: OSError) -> OSError:
        """What a failed write raises.  A reset or closed socket is the
        connection's end, recorded as its cause when nothing else ended it
        first: callers that take it as "the client is gone" need not pass
        it on, and the read that follows (an EOF now) does not replace it."""
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            return exc
        failure = WriteError(exc.errno)
        transport = self.transport
        if transport.active and transport.saved_exception is None:
            transport.saved_exception = failure
            if transport.loop is not None:  # sshd's fatal: the loop ends now
                transport.loop.call_later(0, lambda: transport._end(failure))
        return failure

    def flush_before_close(self, timeout: float) -> None:
        """The last packets (a DISCONNECT) before the socket closes: wait up
        to ``timeout`` seconds for room, then give up on them."""
        deadline = time.monotonic() + timeout
        while self._backlog and self.fileno() >= 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                select.select([], [self.fileno()], [], left)
                self.flush()
            except (OSError, EOFError, ValueError):
                return
