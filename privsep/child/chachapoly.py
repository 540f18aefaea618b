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

import ctypes
import hmac
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
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


#: OpenSSL's libcrypto as the system has it (Python's hashlib maps it already)
LIBCRYPTO = "libcrypto.so.3"


def _load_poly1305() -> tuple[ctypes.CDLL | None, int | None]:
    """libcrypto with EVP_MAC's functions declared, and its Poly1305 MAC
    looked up once (EVP_MAC_fetch); (None, None) without OpenSSL 3, and
    cryptography's Poly1305 is used instead.  Loaded and looked up when
    this module is imported, in the listener, before any fork, chroot or
    sandbox: the children inherit both."""
    void, size = ctypes.c_void_p, ctypes.c_size_t
    try:
        lib = ctypes.CDLL(LIBCRYPTO)
        lib.EVP_MAC_fetch.restype = void
        lib.EVP_MAC_fetch.argtypes = (void, ctypes.c_char_p, ctypes.c_char_p)
        lib.EVP_MAC_CTX_new.restype = void
        lib.EVP_MAC_CTX_new.argtypes = (void,)
        lib.EVP_MAC_CTX_free.restype = None
        lib.EVP_MAC_CTX_free.argtypes = (void,)
        lib.EVP_MAC_init.argtypes = (void, void, size, void)
        lib.EVP_MAC_update.argtypes = (void, void, size)
        lib.EVP_MAC_final.argtypes = (void, void, void, size)
    except (OSError, AttributeError):  # no OpenSSL 3
        return None, None
    mac = lib.EVP_MAC_fetch(None, b"POLY1305", None)
    return (lib, mac) if mac else (None, None)


_libcrypto, _POLY1305 = _load_poly1305()


class _Poly1305:
    """One OpenSSL Poly1305 context, keyed anew for each packet.

    cryptography's Poly1305 makes a new key object per packet, and OpenSSL 3
    looks the algorithm up again for each: about 4 us of every packet's tag
    (against about 2.5 us to tag 32 KiB), where keying a kept context costs
    nothing but the call."""

    __slots__ = ("_ctx", "_tag")

    def __init__(self) -> None:
        self._ctx = _libcrypto.EVP_MAC_CTX_new(_POLY1305)
        if not self._ctx:
            raise MemoryError("EVP_MAC_CTX_new")
        self._tag = ctypes.create_string_buffer(TAG_SIZE)

    def __del__(self) -> None:
        ctx, self._ctx = getattr(self, "_ctx", None), None
        lib = _libcrypto  # None only while the interpreter tears the module down
        if ctx and lib is not None:
            lib.EVP_MAC_CTX_free(ctx)  # clears the key

    def tag_into(self, key: bytes, address: int, size: int, out: int) -> None:
        """The tag of the ``size`` bytes at ``address``, keyed with the first
        32 bytes of ``key``, written to the 16 bytes at ``out``.  The caller
        holds the buffers behind both addresses for the call."""
        lib, ctx = _libcrypto, self._ctx
        if (lib.EVP_MAC_init(ctx, key, 32, None) != 1
                or lib.EVP_MAC_update(ctx, address, size) != 1
                or lib.EVP_MAC_final(ctx, out, None, TAG_SIZE) != 1):
            raise RuntimeError("Poly1305 through OpenSSL's EVP_MAC failed")

    def verify(self, key: bytes, sealed, end: int) -> bool:
        """Is the tag at ``sealed[end:end + 16]`` that of ``sealed[:end]``?
        ``sealed`` is a writable buffer (a view of the read buffer)."""
        tag = self._tag
        self.tag_into(key, ctypes.addressof(ctypes.c_char.from_buffer(sealed)), end,
                      ctypes.addressof(tag))
        return hmac.compare_digest(tag.raw, sealed[end:end + TAG_SIZE])  # constant time


class BadTag(Exception):
    """The Poly1305 tag did not match: the packet was forged or corrupted."""


#: what opening a packet raises when its AEAD tag does not match: ours, and
#: cryptography's AES-GCM (here, so that the packet layers need not import
#: cryptography)
TAG_ERRORS = (BadTag, InvalidTag)


def _iv(seqno: int) -> bytes:
    """Counter 0 and the big-endian sequence number as the nonce."""
    return _COUNTER0 + _SEQ.pack(seqno)


class ChaChaPoly:
    """One direction's chacha20-poly1305@openssh.com: pure, no I/O.

    Also stands in for paramiko's AEAD engine object, so paramiko's
    ``_get_engine(..., aead=True)`` returns one from ``ChaChaPoly(key)``."""

    __slots__ = ("key", "_main", "_length", "_mac")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"{NAME} needs {KEY_SIZE} bytes of key, got {len(key)}")
        self.key = bytes(key)
        self._main = Cipher(algorithms.ChaCha20(self.key[:32], _iv(0)), None).encryptor()
        self._length = Cipher(algorithms.ChaCha20(self.key[32:], _iv(0)), None).encryptor()
        #: OpenSSL's Poly1305 context for the bulk paths, None without OpenSSL 3
        self._mac = _Poly1305() if _libcrypto is not None else None

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
        main, length_stream, mac = self._main, self._length, self._mac
        generate_tag, pack = Poly1305.generate_tag, _SEQ.pack
        address, at = ctypes.addressof, ctypes.c_char.from_buffer
        sealed = []
        for length, body in packets:
            iv = _COUNTER0 + pack(seqno)
            size = 4 + len(body)
            out = bytearray(size + TAG_SIZE)
            view = memoryview(out)
            main.reset_nonce(iv)
            block0 = main.update(_BLOCK0)  # its first 32 bytes: the Poly1305 key
            length_stream.reset_nonce(iv)
            length_stream.update_into(length, view)
            main.update_into(body, view[4:size])
            if mac is None:
                view[size:] = generate_tag(block0[:32], view[:size])
            else:
                start = address(at(out))
                mac.tag_into(block0, start, size, start + size)
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
        if self._mac is not None:
            if not self._mac.verify(poly_key, sealed, end):
                raise BadTag("Corrupted MAC on input.")
        else:
            try:
                Poly1305.verify_tag(poly_key, sealed[:end], bytes(sealed[end:end + TAG_SIZE]))
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
