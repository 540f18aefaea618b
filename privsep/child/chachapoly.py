"""chacha20-poly1305@openssh.com, as OpenSSH's PROTOCOL.chacha20poly1305
describes it, built from pyca/cryptography's ChaCha20 and Poly1305.

The 64 bytes of key material are two ChaCha20 keys: K_1 (the first 32) for
the packet and the Poly1305 key, K_2 (the last 32) for the 4-byte packet
length alone.  Each packet's nonce is its sequence number; cryptography's
ChaCha20 takes a 16-byte IV made of the 64-bit little-endian block counter
and the 64-bit nonce, which OpenSSH writes big-endian.  The Poly1305 key is
the first 32 bytes of K_1's keystream at counter 0, the payload is encrypted
from counter 1 on, and the tag covers the encrypted length and payload.

Each direction keeps two ChaCha20 contexts for its whole life (K_1's, which
gives the Poly1305 key and then runs on into the payload, and K_2's for the
length) and moves them to each packet's nonce with ``reset_nonce``
(cryptography 43 and later): making a context costs an OpenSSL algorithm
fetch, about a third of the cipher's time per 32 KiB packet.  One Poly1305
is made per packet (its key changes).  The length needs K_2's keystream for the next sequence
number before the rest of the packet is read, so reading is split in two
(``open_length``, then ``open``).
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.poly1305 import Poly1305

NAME = "chacha20-poly1305@openssh.com"
KEY_SIZE = 64
TAG_SIZE = 16
#: the ChaCha20 block: what counter 0 covers before the payload starts at 1
_BLOCK0 = bytes(64)
_SEQ = struct.Struct(">Q")
#: the IV's first half: block counter 0
_COUNTER0 = bytes(8)


class BadTag(Exception):
    """The Poly1305 tag did not match: the packet was forged or corrupted."""


def _iv(seqno: int) -> bytes:
    """Counter 0 and the big-endian sequence number as the nonce."""
    return _COUNTER0 + _SEQ.pack(seqno)


class ChaChaPoly:
    """One direction's chacha20-poly1305@openssh.com: pure, no I/O.

    Also stands in for paramiko's AEAD engine object, so paramiko's
    ``_get_engine(..., aead=True)`` returns one from ``ChaChaPoly(key)``."""

    __slots__ = ("key", "_main", "_length")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"{NAME} needs {KEY_SIZE} bytes of key, got {len(key)}")
        self.key = bytes(key)
        self._main = Cipher(algorithms.ChaCha20(self.key[:32], _iv(0)), None).encryptor()
        self._length = Cipher(algorithms.ChaCha20(self.key[32:], _iv(0)), None).encryptor()

    def _length_stream(self, iv: bytes):
        self._length.reset_nonce(iv)
        return self._length

    def _main_stream(self, iv: bytes):
        """K_1's keystream at ``iv``, and the Poly1305 key (its first block)."""
        main = self._main
        main.reset_nonce(iv)
        return main, main.update(_BLOCK0)[:32]

    def seal(self, seqno: int, packet: bytes) -> bytearray:
        """``packet`` (length, padding length, payload, padding) encrypted,
        followed by its tag: the bytes that go on the wire."""
        clear = memoryview(packet)
        return self.seal_many(seqno, [(clear[:4], clear[4:])])[0]

    def seal_many(self, seqno: int, packets) -> list[bytearray]:
        """Each of ``packets``, given as its length field and the rest
        (``(length, body)``), sealed as seal() would, from sequence number
        ``seqno`` on: the bulk path (SessionPacketizer.send_messages), with
        the look-ups made once for all and the two parts never joined.  Each
        packet is written into one buffer, so that its body is copied only
        by the cipher."""
        main, length_stream = self._main, self._length
        generate_tag, pack = Poly1305.generate_tag, _SEQ.pack
        sealed = []
        for length, body in packets:
            iv = _COUNTER0 + pack(seqno)
            size = 4 + len(body)
            out = bytearray(size + TAG_SIZE)
            view = memoryview(out)
            main.reset_nonce(iv)
            poly_key = main.update(_BLOCK0)[:32]
            length_stream.reset_nonce(iv)
            length_stream.update_into(length, view)
            main.update_into(body, view[4:size])
            view[size:] = generate_tag(poly_key, view[:size])
            sealed.append(out)
            seqno = (seqno + 1) & 0xFFFFFFFF
        return sealed

    def open_length(self, seqno: int, head: bytes) -> int:
        """The packet length from the first four (encrypted) bytes; not yet
        authenticated: the caller bounds it before reading that much."""
        return struct.unpack(">I", self._length_stream(_iv(seqno)).update(head[:4]))[0]

    def open_sealed(self, seqno: int, sealed, length: int) -> bytes:
        """The decrypted packet after the length, from ``sealed``, the
        packet as it came (the encrypted length, ``length`` bytes more, the
        tag; a buffer's view), once the tag is checked: open() for a packet
        that lies whole in one buffer, with one call for its tag."""
        main, poly_key = self._main_stream(_iv(seqno))
        end = 4 + length
        try:
            Poly1305.verify_tag(poly_key, sealed[:end], bytes(sealed[end:end + TAG_SIZE]))  # constant time
        except InvalidSignature:
            raise BadTag("Corrupted MAC on input.") from None
        return main.update(sealed[4:end])

    def open(self, seqno: int, head: bytes, body, tag: bytes) -> bytes:
        """The decrypted packet after the length (padding length, payload,
        padding), from ``head`` (the four encrypted length bytes) and
        ``body`` (the encrypted rest), once ``tag`` is checked."""
        main, poly_key = self._main_stream(_iv(seqno))
        mac = Poly1305(poly_key)
        mac.update(head)
        mac.update(body)
        try:
            mac.verify(bytes(tag))  # constant time
        except InvalidSignature:
            raise BadTag("Corrupted MAC on input.") from None
        return main.update(body)
