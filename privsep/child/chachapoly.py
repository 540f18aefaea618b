"""chacha20-poly1305@openssh.com, as OpenSSH's PROTOCOL.chacha20poly1305
describes it, built from pyca/cryptography's ChaCha20 and Poly1305.

The 64 bytes of key material are two ChaCha20 keys: K_1 (the first 32) for
the packet and the Poly1305 key, K_2 (the last 32) for the 4-byte packet
length alone.  Each packet's nonce is its sequence number; cryptography's
ChaCha20 takes a 16-byte IV made of the 64-bit little-endian block counter
and the 64-bit nonce, which OpenSSH writes big-endian.  The Poly1305 key is
the first 32 bytes of K_1's keystream at counter 0, the payload is encrypted
from counter 1 on, and the tag covers the encrypted length and payload.

Per packet this costs two cipher contexts (one for the length, one that
gives the Poly1305 key and then runs on into the payload) and one Poly1305:
cryptography fixes the nonce when a context is made, so none can be reused
across packets.  The length needs K_2's keystream for the next sequence
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


class BadTag(Exception):
    """The Poly1305 tag did not match: the packet was forged or corrupted."""


def _iv(seqno: int) -> bytes:
    """Counter 0 and the big-endian sequence number as the nonce."""
    return bytes(8) + _SEQ.pack(seqno)


class ChaChaPoly:
    """One direction's chacha20-poly1305@openssh.com: pure, no I/O.

    Also stands in for paramiko's AEAD engine object, so paramiko's
    ``_get_engine(..., aead=True)`` returns one from ``ChaChaPoly(key)``."""

    __slots__ = ("key", "_k1", "_k2")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"{NAME} needs {KEY_SIZE} bytes of key, got {len(key)}")
        self.key = bytes(key)
        self._k1 = self.key[:32]
        self._k2 = self.key[32:]

    def _length_stream(self, iv: bytes):
        return Cipher(algorithms.ChaCha20(self._k2, iv), None).encryptor()

    def seal(self, seqno: int, packet: bytes) -> bytes:
        """``packet`` (length, padding length, payload, padding) encrypted,
        followed by its tag: the bytes that go on the wire."""
        iv = _iv(seqno)
        main = Cipher(algorithms.ChaCha20(self._k1, iv), None).encryptor()
        poly_key = main.update(_BLOCK0)[:32]
        wire = self._length_stream(iv).update(packet[:4]) + main.update(packet[4:])
        return wire + Poly1305.generate_tag(poly_key, wire)

    def open_length(self, seqno: int, head: bytes) -> int:
        """The packet length from the first four (encrypted) bytes; not yet
        authenticated: the caller bounds it before reading that much."""
        return struct.unpack(">I", self._length_stream(_iv(seqno)).update(head[:4]))[0]

    def open(self, seqno: int, wire: bytes, tag: bytes) -> bytes:
        """The decrypted packet after the length (padding length, payload,
        padding) of ``wire`` (the encrypted length and packet), once ``tag``
        is checked."""
        main = Cipher(algorithms.ChaCha20(self._k1, _iv(seqno)), None).encryptor()
        poly_key = main.update(_BLOCK0)[:32]
        try:
            Poly1305.verify_tag(poly_key, wire, tag)  # constant time
        except InvalidSignature:
            raise BadTag("Corrupted MAC on input.") from None
        return main.update(memoryview(wire)[4:])
