"""The session process's inbound bulk path: a whole packet opened where it
lies in the read buffer, and the client's CHANNEL_DATA handed to the
channel's sink without a paramiko Message.

Runs in the post-auth session process, as the user, in its event loop.
paramiko's read_message copies a 32 KiB CHANNEL_DATA packet about five
times (the read, the decryption, the payload slice, the Message, get_binary)
and makes a Message for each.  Here, once the loop has the whole packet
(packets.SessionPacketizer.packet_ready), it is authenticated and decrypted
straight from the buffer with chacha20-poly1305, AES-GCM or an
encrypt-then-MAC mode: the cipher's output is the only copy, and the
payload is a memoryview of it.  CHANNEL_DATA for a channel whose data goes
to a sink (a program's stdin pipe or pty, a forwarded socket, a tunnel) is
then delivered from that view (``deliver_channel_data``); anything else
becomes a Message as before.  Other MACs and ciphers (MAC-then-encrypt)
go through paramiko's read_message, unchanged.

Every rule of the slow path holds, because the fast path takes only the
plain case and leaves the rest to it: a packet whose fields do not add up,
a channel unknown or without a sink, a key exchange expecting its own
messages.  The window (ReceiveWindow) is counted by the same code
(WindowedChannel.accept), and the byte counts (paramiko's RekeyLimit
counters, sshd's "Transferred:" totals) by the same method as the
chacha20-poly1305 read path (CipherPacketizer._count_read).
"""

from __future__ import annotations

import hmac
import struct

import paramiko

from privsep.child.chachapoly import TAG_SIZE
from privsep.child.packetizer import UMAC_ENGINES, check_padding, check_type, mac_incorrect

#: CHANNEL_DATA's fixed fields: type, recipient channel, data length
_DATA_HEAD = struct.Struct(">BII")
_U32 = struct.Struct(">I")
#: WINDOW_ADJUST: type, recipient channel, bytes to add
_ADJUST = struct.Struct(">BII")


class DirectOpen:
    """A mixin for SessionPacketizer: ``open_whole`` opens the packet at the
    front of ``_ahead`` (known whole, of ``size`` bytes on the wire) and
    counts it; None when the cipher has no direct path here."""

    #: the inbound HMAC, keyed once per key (copied per packet: cheaper
    #: than keying a new one), and the key it was made with
    _hmac_in: tuple[bytes, object] | None = None

    def open_whole(self, size: int | None):
        """``(seqno, payload)`` of the next packet, the payload (type byte
        first) a memoryview of the only copy made; None for paramiko's path."""
        if size is None:
            return None
        if self._chacha_in is not None:
            opener = self._open_chacha
        elif self._Packetizer__aead_in:
            opener = self._open_gcm
        elif self._Packetizer__etm_in and self._Packetizer__block_engine_in is not None:
            opener = self._open_etm
        else:
            return None
        seqno = self._Packetizer__sequence_number_in
        # the length field: in clear but for chacha20-poly1305, whose size
        # packet_ready worked out from it
        if self._chacha_in is None:
            length = _U32.unpack_from(self._ahead)[0]
        else:
            length = size - 4 - TAG_SIZE
        packet = opener(seqno, length)
        # the views of _ahead are gone with the opener's frame: it may shrink
        del self._ahead[:size]
        padding = packet[0]
        check_padding(padding, length)  # every cipher: the slice below is by it
        payload = memoryview(packet)[1:length - padding]
        decompress = self._Packetizer__compress_engine_in
        if decompress is not None:
            payload = memoryview(decompress(payload))
        if not payload:
            raise paramiko.SSHException("empty packet")
        check_type(payload[0])
        self._count_read(seqno, length, size - 4 - length)
        return seqno, payload

    def _open_chacha(self, seqno: int, length: int) -> bytes:
        """chacha20-poly1305: the length was read by packet_ready; a tag
        that does not match raises BadTag (read_message's refusal)."""
        with memoryview(self._ahead) as view:
            return self._chacha_in.open_sealed(seqno, view, length)

    def _open_gcm(self, seqno: int, length: int) -> bytes:
        """AES-GCM (RFC 5647): the length is the associated data, the tag
        follows the packet (InvalidTag if it does not match); the IV's
        invocation counter moves on."""
        iv = self._Packetizer__iv_in
        with memoryview(self._ahead) as view:
            packet = self._Packetizer__block_engine_in.decrypt(
                iv, view[4:4 + length + self._Packetizer__mac_size_in], view[:4])
        self._Packetizer__iv_in = self._inc_iv_counter(iv)
        return packet

    def _open_etm(self, seqno: int, length: int) -> bytes:
        """Encrypt-then-MAC: the MAC covers the sequence number, the clear
        length and the encrypted packet; checked, then decrypted."""
        mac_size = self._Packetizer__mac_size_in
        with memoryview(self._ahead) as view:
            covered, tag = view[:4 + length], view[4 + length:4 + length + mac_size]
            if not hmac.compare_digest(self._etm_tag(seqno, covered)[:mac_size], tag):
                raise mac_incorrect()
            return self._Packetizer__block_engine_in.update(view[4:4 + length])

    def _etm_tag(self, seqno: int, covered) -> bytes:
        """The MAC of sequence number + ``covered``, untruncated."""
        key, engine = self._Packetizer__mac_key_in, self._Packetizer__mac_engine_in
        if engine in UMAC_ENGINES:
            return engine.tag(key, _U32.pack(seqno) + bytes(covered))
        keyed = self._hmac_in
        if keyed is None or keyed[0] is not key:
            keyed = self._hmac_in = (key, hmac.new(key, digestmod=engine))
        mac = keyed[1].copy()
        mac.update(_U32.pack(seqno))
        mac.update(covered)
        return mac.digest()


def deliver_channel_data(transport, payload: memoryview) -> bool:
    """CHANNEL_DATA (``payload``, type byte first) delivered to its
    channel's sink, within the window, as WindowedChannel.feed_data would;
    False leaves it to the slow path (a Message and the dispatch): a packet
    whose length field is not what remains, a channel unknown (refused
    there as today) or buffering in paramiko until its program starts, a
    key exchange expecting its own messages."""
    if len(payload) < _DATA_HEAD.size or transport._expected_packet:
        return False
    _, chanid, size = _DATA_HEAD.unpack_from(payload)
    if size != len(payload) - _DATA_HEAD.size:
        return False
    chan = transport._channels.get(chanid)
    if chan is None or getattr(chan, "sink", None) is None:
        return False
    chan.accept(payload[_DATA_HEAD.size:])
    return True


def adjust_window(transport, payload: memoryview) -> bool:
    """WINDOW_ADJUST (``payload``, type byte first) applied to its channel,
    as the slow path's handler applies it (WindowedChannel.grow_window): a
    pump's every turn brings one, and a Message for its eight bytes cost
    more than the rest of it.  False leaves it to the slow path: a length
    other than the message's, a channel unknown (refused there), a key
    exchange expecting its own messages."""
    if len(payload) != _ADJUST.size or transport._expected_packet:
        return False
    _, chanid, nbytes = _ADJUST.unpack(payload)
    chan = transport._channels.get(chanid)
    if chan is None:
        return False
    chan.grow_window(nbytes)
    return True


__all__ = ["DirectOpen", "adjust_window", "deliver_channel_data"]
