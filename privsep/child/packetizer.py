"""paramiko's Packetizer keeps its counters and keys in name-mangled private
attributes; both halves of the transport hand-off (netchild/capture.py,
session/resume.py) and the session's packetizer read and set them here, by
name, so that a paramiko upgrade that moves them fails in one place
(tests/test_handoff_internals.py)."""

from __future__ import annotations

import hmac
import logging
from typing import NoReturn

import paramiko.packet
from paramiko.common import cMSG_DISCONNECT
from paramiko.message import Message
from paramiko.packet import Packetizer
from paramiko.ssh_exception import SSHException

from privsep.child import umac
from privsep.child.chachapoly import TAG_ERRORS, TAG_SIZE, ChaChaPoly
from privsep.child.strict_message import StrictMessage

_PKT = "_Packetizer__"  # name-mangling prefix of Packetizer's private state

log = logging.getLogger("privsep.packet")


def pkt_get(packetizer: Packetizer, name: str):
    return getattr(packetizer, _PKT + name)


def pkt_set(packetizer: Packetizer, name: str, value) -> None:
    setattr(packetizer, _PKT + name, value)


#: the MAC-table classes whose tags are UMAC, not HMAC
UMAC_ENGINES = frozenset(entry["class"] for entry in umac.MAC_INFO.values())


def compute_mac(key: bytes, data: bytes, engine) -> bytes:
    """One packet's MAC, untruncated: ``data`` is the 4-byte sequence number
    and then what the MAC covers, ``engine`` the "class" of the MAC table.

    paramiko's send_message and read_message call the module function
    ``paramiko.packet.compute_hmac`` by that name, for every packet and
    only there, with exactly these arguments; it knows only HMAC.  This
    takes its place (below) so that the UMAC classes get UMAC (umac.py),
    with no copy of paramiko's packet code.  HMAC goes through
    ``hmac.digest``, OpenSSL's one-shot HMAC, the same bytes as paramiko's
    ``HMAC(key, data, engine).digest()`` without building an object."""
    if engine in UMAC_ENGINES:
        return engine.tag(key, data)
    return hmac.digest(key, data, engine)


paramiko.packet.compute_hmac = compute_mac

#: OpenSSH's bound on one packet (PACKET_MAX_SIZE): a longer length is an attack
PACKET_MAX_SIZE = 256 * 1024

#: sshd's words (ssherr.c) for the errors its packet layer ends a connection with
MAC_INVALID = "message authentication code incorrect"
CONN_CORRUPT = "Connection corrupted"
MESSAGE_INCOMPLETE = "incomplete message"
PROTOCOL_ERROR = "Protocol error"

#: SSH2_DISCONNECT_PROTOCOL_ERROR (RFC 4253 11.1): the reason sshd's
#: sshpkt_disconnect gives
DISCONNECT_PROTOCOL_ERROR = 2

#: what paramiko's read_message raises for a MAC that does not match
PARAMIKO_MAC_MISMATCH = "Mismatched MAC"

#: the message types sshd's packet layer accepts (SSH2_MSG_MIN, SSH2_MSG_LOCAL_MIN)
MSG_MIN, MSG_LOCAL_MIN = 1, 192


class PacketCorrupt(SSHException):
    """A packet whose framing sshd's packet layer refuses; the text is the
    error it returns, which its dispatch's fatal line ends with.
    ``disconnect`` is the DISCONNECT's text where sshd sends one and waits
    for it to leave (ssh_packet_write_wait): a padding length below 4 and a
    message type out of range.  Its other refusals ("Packet corrupt", from
    ssh_packet_start_discard and a bad length) are only queued, and its
    fatal exits before anything writes them: the client gets none (measured
    with sshd 9.2, tests/test_channel_data_in.py)."""

    def __init__(self, text: str, disconnect: str | None = None) -> None:
        super().__init__(text)
        self.disconnect = disconnect


def disconnect_message(text: str) -> Message:
    """SSH_MSG_DISCONNECT as sshd's sshpkt_disconnect builds it: a
    protocol error, ``text``, no language tag."""
    m = Message()
    m.add_byte(cMSG_DISCONNECT)
    m.add_int(DISCONNECT_PROTOCOL_ERROR)
    m.add_string(text)
    m.add_string("")
    return m


def mac_incorrect(tag: bool = False) -> PacketCorrupt:
    """sshd's refusal of a packet whose MAC (or, ``tag``, AEAD tag) does not
    match: "Corrupted MAC on input." for a MAC (an AEAD cipher's failure
    comes out of cipher_crypt unlogged), and its error."""
    if not tag:
        log.info("Corrupted MAC on input.")
    return PacketCorrupt(MAC_INVALID)


def sshd_refusal(exc: Exception) -> Exception:
    """What sshd's packet layer ends the connection with where paramiko or
    the cipher raised ``exc`` reading a packet: its words for a MAC or
    tag that does not match, else ``exc`` itself."""
    if isinstance(exc, TAG_ERRORS):
        return mac_incorrect(tag=True)
    if type(exc) is SSHException and str(exc) == PARAMIKO_MAC_MISMATCH:
        return mac_incorrect()
    return exc


def check_length(length: int, block: int, clear_length: bool) -> None:
    """sshd's checks of a packet's length field, as soon as it is read
    (ssh_packet_read_poll2): within bounds, and the encrypted part whole
    blocks (after the length when ``clear_length``: AES-GCM, chacha20-poly1305,
    encrypt-then-MAC; else the length is inside the first block, as it is
    before the first NEWKEYS, in 8-byte blocks).  Logs sshd's line and
    raises PacketCorrupt with its error: with the length in clear it ends
    at once ("corrupted"); otherwise it starts discarding, which for every
    cipher we offer (none is CBC) and with none ends at once with the MAC's
    error, as a "padding error" does in every mode."""
    if length < 5 or length > PACKET_MAX_SIZE:
        log.info("Bad packet length %d.", length)
        raise PacketCorrupt(CONN_CORRUPT if clear_length else MAC_INVALID)
    need = length if clear_length else 4 + length - block
    if need % block:
        log.info("padding error: need %d block %d mod %d", need, block, need % block)
        raise PacketCorrupt(MAC_INVALID)


def check_padding(padding: int, length: int) -> None:
    """The padding length byte of a packet whose length field is ``length``:
    4 or more (sshd: a corrupt connection, after a DISCONNECT "Corrupted
    padlen N on input."), and inside the packet (sshd's sshbuf_consume_end
    fails: "incomplete message", nothing sent); paramiko slices the
    payload by it unchecked, and a padding past the packet would count from
    its end."""
    if padding < 4:
        raise PacketCorrupt(CONN_CORRUPT, f"Corrupted padlen {padding} on input.")
    if padding >= length:
        raise PacketCorrupt(MESSAGE_INCOMPLETE)


def check_type(ptype: int) -> None:
    """A message type sshd's packet layer takes (1 to 191); else a
    DISCONNECT "Invalid ssh2 packet type: N" and a protocol error."""
    if not MSG_MIN <= ptype < MSG_LOCAL_MIN:
        raise PacketCorrupt(PROTOCOL_ERROR, f"Invalid ssh2 packet type: {ptype}")


class FirstBlock:
    """Stands in for a MAC-then-encrypt inbound decryptor whose packet's
    first block was decrypted ahead (to check the length and padding inside
    it; a CTR decryptor cannot decrypt a block twice): read_message's first
    update gets the clear text kept from then, and the real decryptor is
    put back for the rest."""

    def __init__(self, packetizer: Packetizer, engine, block: bytes, clear: bytes) -> None:
        self.packetizer, self.engine, self.block, self.clear = packetizer, engine, block, clear

    def update(self, data: bytes) -> bytes:
        pkt_set(self.packetizer, "block_engine_in", self.engine)
        if bytes(data) != self.block:  # never, as read_message asks for exactly that block
            raise SSHException("packet layer out of step")
        return self.clear


class PaddingChecked:
    """Stands in for the inbound decryptor of an AES-GCM or encrypt-then-MAC
    packet of ``length`` (in clear, checked): what read_message decrypts (the
    whole packet, after its tag or MAC was checked) has its padding length
    checked before paramiko slices by it; then the real decryptor is back."""

    def __init__(self, packetizer: Packetizer, engine, length: int) -> None:
        self.packetizer, self.engine, self.length = packetizer, engine, length

    def update(self, data: bytes) -> bytes:  # encrypt-then-MAC: a stream cipher
        return self._checked(self.engine.update, data)

    def decrypt(self, *args) -> bytes:  # AES-GCM: iv, packet, associated data
        return self._checked(self.engine.decrypt, *args)

    def _checked(self, decrypt, *args) -> bytes:
        try:
            packet = decrypt(*args)
        finally:
            pkt_set(self.packetizer, "block_engine_in", self.engine)
        check_padding(packet[0], self.length)
        return packet


class CipherPacketizer(Packetizer):
    """paramiko's Packetizer, plus a read and write path for
    chacha20-poly1305@openssh.com, whose packet length is encrypted (paramiko
    reads it in clear for its own AEAD, AES-GCM).  Every other cipher goes
    through paramiko's path untouched.  Both children use it: the net-child
    for the first key exchange, the session process for rekeys.

    The per-packet work is paramiko's own plus the cipher (chachapoly.py);
    the private counters are read and set here by their mangled names, inline
    rather than through pkt_get, since this runs once per packet."""

    #: the chacha20-poly1305 state of each direction, None for any other cipher
    _chacha_in: ChaChaPoly | None = None
    _chacha_out: ChaChaPoly | None = None
    #: sshd's whole-connection counts (packet.c p_send.bytes, p_read.bytes):
    #: each packet's length field plus 4, MACs and tags left out, never
    #: reset by a rekey (paramiko's own counters are), and carried across
    #: the hand-off (DirectionState.total).  "Transferred:" writes them.
    total_sent: int = 0
    total_received: int = 0

    def _build_packet(self, payload) -> bytes:
        """paramiko's packet (length field, padding length, payload,
        padding), counted: both send paths build each packet here once."""
        packet = super()._build_packet(payload)
        self.total_sent += len(packet)
        return packet

    def set_outbound_cipher(self, block_engine, *args, **kwargs) -> None:
        super().set_outbound_cipher(block_engine, *args, **kwargs)
        self._chacha_out = block_engine if isinstance(block_engine, ChaChaPoly) else None

    def set_inbound_cipher(self, block_engine, *args, **kwargs) -> None:
        super().set_inbound_cipher(block_engine, *args, **kwargs)
        self._chacha_in = block_engine if isinstance(block_engine, ChaChaPoly) else None

    def send_message(self, data) -> None:
        engine = self._chacha_out
        if engine is None:
            super().send_message(data)
            return
        data = data.asbytes()
        with self._Packetizer__write_lock:
            compress = self._Packetizer__compress_engine_out
            if compress is not None:
                data = compress(data)
            seqno = self._Packetizer__sequence_number_out
            out = engine.seal(seqno, self._build_packet(data))
            self._after_sealing(seqno, len(out))
            self.write_all(out)

    def _after_sealing(self, seqno: int, size: int, count: int = 1) -> None:
        """paramiko's bookkeeping after it seals packet ``seqno`` of ``size``
        bytes (or ``count`` packets from ``seqno`` on, of ``size`` bytes in
        all): the next sequence number, and the rekey limits."""
        self._Packetizer__sequence_number_out = (seqno + count) & 0xFFFFFFFF
        if seqno + count > 0xFFFFFFFF and not self._initial_kex_done:
            raise SSHException("Sequence number rolled over during initial kex!")
        self._Packetizer__sent_bytes += size
        self._Packetizer__sent_packets += count
        if ((self._Packetizer__sent_packets >= self.REKEY_PACKETS
             or self._Packetizer__sent_bytes >= self.REKEY_BYTES)
                and not self._Packetizer__need_rekey):
            self._Packetizer__received_bytes_overflow = 0
            self._Packetizer__received_packets_overflow = 0
            self._trigger_rekey()

    #: (padding length, length) of the packet being read whose first block
    #: was decrypted ahead: the padding length's lower bound is checked once
    #: paramiko has checked the MAC, as sshd checks it (first_block)
    _padding_due: tuple[int, int] | None = None

    def read_message(self):
        """The next message, as paramiko's, refused where sshd's packet
        layer refuses it, in its words, with the DISCONNECT it sends."""
        try:
            ptype, msg = self._read_message()
            due, self._padding_due = self._padding_due, None
            if due is not None:
                check_padding(*due)
            check_type(ptype)
        except (SSHException, *TAG_ERRORS) as exc:
            self.refuse(exc)
        return ptype, msg

    def refuse(self, exc: Exception) -> NoReturn:
        """End the connection for ``exc``, raised reading a packet, with
        what sshd's packet layer ends it with (``sshd_refusal``), after the
        DISCONNECT it sends for that, if any."""
        refusal = sshd_refusal(exc)
        if isinstance(refusal, PacketCorrupt) and refusal.disconnect is not None:
            try:
                self.send_message(disconnect_message(refusal.disconnect))
            except (OSError, EOFError, SSHException):
                pass  # the client is gone already
        if refusal is exc:
            raise exc
        raise refusal from None

    def _read_message(self):
        engine = self._chacha_in
        if engine is None:
            # paramiko adds length + MAC size + 4 to its counter per packet
            before = self._Packetizer__received_bytes
            result = super().read_message()
            self.total_received += (self._Packetizer__received_bytes - before
                                    - self._Packetizer__mac_size_in)
            return result
        seqno = self._Packetizer__sequence_number_in
        head = self.read_all(4, check_rekey=True)
        size = engine.open_length(seqno, head)
        check_length(size, 8, True)
        rest = memoryview(self.read_all(size + TAG_SIZE))
        packet = engine.open(seqno, head, rest[:size], rest[size:])
        padding = packet[0]
        check_padding(padding, size)
        payload = packet[1:size - padding]
        decompress = self._Packetizer__compress_engine_in
        if decompress is not None:
            payload = decompress(payload)
        if not payload:
            raise SSHException("empty packet")
        msg = StrictMessage(payload[1:])
        msg.seqno = seqno
        self._count_read(seqno, size, TAG_SIZE)
        return payload[0], msg

    def first_block(self, clear: bytes, block: int, clear_length: bool) -> int:
        """The next packet's length, from its first block (``clear``:
        decrypted, or plain before the first NEWKEYS), checked as sshd
        checks it (check_length); where the block holds the padding length,
        a padding past the packet is refused now (paramiko slices by it
        before returning) and the rest of check_padding is due after the
        MAC (read_message)."""
        length = int.from_bytes(clear[:4], "big")
        check_length(length, block, clear_length)
        if not clear_length:
            if clear[4] >= length:
                raise PacketCorrupt(MESSAGE_INCOMPLETE)
            self._padding_due = (clear[4], length)
        return length

    def check_ahead(self) -> None:
        """Before paramiko's read_message, with blocking reads (the
        net-child): read the next packet's first block, check the length
        and, where it is there, the padding length as sshd does
        (first_block), and put the block back for read_message to read.
        paramiko checks neither bound nor, for AES-GCM and encrypt-then-MAC,
        the blocking, and slices the payload by the padding length
        unchecked.  Before the first NEWKEYS the packets are plain, in
        8-byte blocks, and sshd checks them the same way."""
        engine = self._Packetizer__block_engine_in
        block = self._Packetizer__block_size_in
        first = self.read_all(block, check_rekey=True)
        self._Packetizer__remainder = first + self._Packetizer__remainder
        clear_length = self._Packetizer__etm_in or self._Packetizer__aead_in
        if engine is None:
            self.first_block(first, block, False)
        elif clear_length:
            length = self.first_block(first, block, True)
            self._Packetizer__block_engine_in = PaddingChecked(self, engine, length)
        else:
            clear = engine.update(first)
            self._Packetizer__block_engine_in = FirstBlock(self, engine, first, clear)
            self.first_block(clear, block, False)

    def _count_read(self, seqno: int, length: int, mac_size: int) -> None:
        """paramiko's bookkeeping after it reads packet ``seqno`` whose length
        field says ``length``, followed by ``mac_size`` bytes of MAC or tag:
        the next sequence number, the rekey limits, sshd's total."""
        self._Packetizer__sequence_number_in = (seqno + 1) & 0xFFFFFFFF
        if seqno == 0xFFFFFFFF and not self._initial_kex_done:
            raise SSHException("Sequence number rolled over during initial kex!")
        self._count_received(length + mac_size + 4)
        self.total_received += length + 4

    def _count_received(self, raw: int) -> None:
        """paramiko's rekey accounting for one packet read (its read_message's tail)."""
        self._Packetizer__received_bytes += raw
        self._Packetizer__received_packets += 1
        if self._Packetizer__need_rekey:
            self._Packetizer__received_bytes_overflow += raw
            self._Packetizer__received_packets_overflow += 1
            if (self._Packetizer__received_packets_overflow >= self.REKEY_PACKETS_OVERFLOW_MAX
                    or self._Packetizer__received_bytes_overflow >= self.REKEY_BYTES_OVERFLOW_MAX):
                raise SSHException("Remote transport is ignoring rekey requests")
        elif (self._Packetizer__received_packets >= self.REKEY_PACKETS
              or self._Packetizer__received_bytes >= self.REKEY_BYTES):
            self._Packetizer__received_bytes_overflow = 0
            self._Packetizer__received_packets_overflow = 0
            self._trigger_rekey()
