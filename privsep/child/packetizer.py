"""paramiko's Packetizer keeps its counters and keys in name-mangled private
attributes; both halves of the transport hand-off (netchild/capture.py,
session/resume.py) and the session's packetizer read and set them here, by
name, so that a paramiko upgrade that moves them fails in one place
(tests/test_handoff_internals.py)."""

from __future__ import annotations

import hmac
import logging

import paramiko.packet
from paramiko.packet import Packetizer
from paramiko.ssh_exception import SSHException

from privsep.child import umac
from privsep.child.chachapoly import TAG_SIZE, BadTag, ChaChaPoly
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


class PacketCorrupt(SSHException):
    """A packet whose framing sshd's packet layer refuses; the text is the
    error it returns, which its dispatch's fatal line ends with."""


def check_length(length: int, block: int, clear_length: bool) -> None:
    """sshd's checks of a packet's length field, as soon as it is read
    (ssh_packet_read_poll2): within bounds, and the encrypted part whole
    blocks (after the length when ``clear_length``: AES-GCM, chacha20-poly1305,
    encrypt-then-MAC; else the length is inside the first block).  Logs
    sshd's line and raises PacketCorrupt with its error: with the length in
    clear it ends at once ("corrupted"); otherwise it starts discarding,
    which for every cipher we offer (none is CBC) ends at once with the
    MAC's error, as a "padding error" does in every mode."""
    if length < 5 or length > PACKET_MAX_SIZE:
        log.info("Bad packet length %d.", length)
        raise PacketCorrupt(CONN_CORRUPT if clear_length else MAC_INVALID)
    need = length if clear_length else 4 + length - block
    if need % block:
        log.info("padding error: need %d block %d mod %d", need, block, need % block)
        raise PacketCorrupt(MAC_INVALID)


def check_padding(padding: int, length: int) -> None:
    """The padding length byte of a packet whose length field is ``length``:
    4 or more (sshd: "Corrupted padlen", a corrupt connection), and inside
    the packet (sshd's sshbuf_consume_end fails: "incomplete message");
    paramiko slices the payload by it unchecked, and a padding past the
    packet would count from its end."""
    if padding < 4:
        raise PacketCorrupt(CONN_CORRUPT)
    if padding >= length:
        raise PacketCorrupt(MESSAGE_INCOMPLETE)


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

    def read_message(self):
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
        try:
            packet = engine.open(seqno, head, rest[:size], rest[size:])
        except BadTag as exc:
            raise SSHException(str(exc)) from None
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

    def check_ahead(self) -> None:
        """Before paramiko's read_message, with blocking reads (the
        net-child): read the next packet's first block, check the length
        and, where it is there, the padding length as sshd does, and put the
        block back for read_message to read.  paramiko checks neither bound
        nor, for AES-GCM and encrypt-then-MAC, the blocking, and slices the
        payload by the padding length unchecked.  Nothing to check before
        the first NEWKEYS (no cipher), as in the session's packets.py."""
        engine = self._Packetizer__block_engine_in
        if engine is None:
            return
        block = self._Packetizer__block_size_in
        first = self.read_all(block, check_rekey=True)
        self._Packetizer__remainder = first + self._Packetizer__remainder
        clear_length = self._Packetizer__etm_in or self._Packetizer__aead_in
        if clear_length:
            length = int.from_bytes(first[:4], "big")
            check_length(length, block, True)
            self._Packetizer__block_engine_in = PaddingChecked(self, engine, length)
            return
        clear = engine.update(first)
        self._Packetizer__block_engine_in = FirstBlock(self, engine, first, clear)
        length = int.from_bytes(clear[:4], "big")
        check_length(length, block, False)
        check_padding(clear[4], length)

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
