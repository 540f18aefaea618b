"""umac-64@openssh.com and umac-128@openssh.com (and their -etm forms):
UMAC (RFC 4418) from libnettle, through ctypes.

OpenSSH's mac.c keys UMAC with 16 bytes and makes each packet's nonce the
64-bit packet sequence number, big-endian; the message is what an HMAC
would cover after the sequence number (the clear packet, or with -etm the
length and ciphertext).  UMAC-64's tag is 8 bytes, UMAC-128's 16.

paramiko's packet code asks its MAC table for a "class" whose instances
tell the key length (``digest_size``) and computes each tag with
``packet.compute_hmac(key, seqno + message, class)``: child/packetizer.py
puts a function in its place that sends the UMAC classes here.  Setting a
UMAC key derives AES subkeys and tables (a few kilobytes), so each key
keeps one nettle context, made on its first packet; a packet then costs a
nonce, an update and a digest.  Measured on the development machine: about
13 us per 32 KiB packet for UMAC-64 and 24 us for UMAC-128, against 43 us
for HMAC-SHA-256 from OpenSSL.

The library is loaded when this module is imported, before any sandbox or
chroot closes the file system; the daemon checks at start-up that it could
be (``require``), so that a missing library is one clear line, not a
connection that dies at NEWKEYS.
"""

from __future__ import annotations

import ctypes
import struct
from collections import OrderedDict

#: libnettle's soname on Debian 12 (libnettle8) and 13 (libnettle8t64)
LIBRARY = "libnettle.so.8"
#: UMAC's key length (OpenSSH's key_len of 128 bits)
KEY_SIZE = 16
#: Bytes kept for one nettle context: sizeof(struct umac64_ctx) is 2520 and
#: sizeof(struct umac128_ctx) 2768 with nettle 3.8 on x86-64; the library
#: has no function that tells, so the buffer is made larger than either.
_CTX_SIZE = 4096
#: contexts kept per UMAC size: a direction's current key, the other
#: direction's, and the ones a rekey is replacing
_CONTEXTS_KEPT = 8

_NONCE_HIGH = bytes(4)  # sequence numbers are 32 bits; the nonce is 64


class NettleMissing(RuntimeError):
    """libnettle could not be loaded: no UMAC."""


def _load() -> tuple[ctypes.CDLL | None, str]:
    """libnettle with the UMAC functions' argument types declared (so that
    ctypes passes addresses and lengths as the C prototypes want)."""
    try:
        lib = ctypes.CDLL(LIBRARY)
        for bits in (64, 128):
            prefix = f"nettle_umac{bits}_"
            getattr(lib, prefix + "set_key").argtypes = (ctypes.c_void_p, ctypes.c_char_p)
            for name in ("set_nonce", "update", "digest"):
                getattr(lib, prefix + name).argtypes = (
                    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
            for name in ("set_key", "set_nonce", "update", "digest"):
                getattr(lib, prefix + name).restype = None
    except (OSError, AttributeError) as exc:  # absent, or a nettle without UMAC
        return None, str(exc)
    return lib, ""


_nettle, _load_error = _load()


def require() -> None:
    """Raise NettleMissing, with what to install, when libnettle is absent."""
    if _nettle is None:
        raise NettleMissing(f"cannot load {LIBRARY} for the umac MACs ({_load_error}); "
                            "install Debian's libnettle8 (libnettle8t64 on Debian 13)")


class _Context:
    """One nettle UMAC context, keyed once; tags one message at a time."""

    __slots__ = ("_ctx", "_tag", "_size", "_set_nonce", "_update", "_digest")

    def __init__(self, bits: int, key: bytes) -> None:
        prefix = f"nettle_umac{bits}_"
        self._size = bits // 8
        self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
        self._tag = ctypes.create_string_buffer(self._size)
        self._set_nonce = getattr(_nettle, prefix + "set_nonce")
        self._update = getattr(_nettle, prefix + "update")
        self._digest = getattr(_nettle, prefix + "digest")
        getattr(_nettle, prefix + "set_key")(self._ctx, key)

    def tag(self, data: bytes) -> bytes:
        """The tag of ``data[4:]`` with the nonce ``data[:4]`` (the sequence
        number paramiko puts first), without copying the message."""
        self._set_nonce(self._ctx, 8, _NONCE_HIGH + data[:4])
        # the message's address, 4 bytes into the bytes object (which
        # ``data`` keeps alive for the call)
        start = ctypes.cast(data, ctypes.c_void_p).value + 4
        self._update(self._ctx, len(data) - 4, start)
        self._digest(self._ctx, self._size, self._tag)
        return self._tag.raw


class _Umac:
    """An entry of paramiko's MAC table: instances (paramiko makes one to
    size the key) say KEY_SIZE; ``tag`` computes a packet's MAC."""

    bits = 0
    digest_size = KEY_SIZE
    _contexts: OrderedDict[bytes, _Context]

    @classmethod
    def tag(cls, key: bytes, data: bytes) -> bytes:
        """The MAC of one packet: ``data`` is the 4-byte sequence number,
        then the message."""
        context = cls._contexts.get(key)
        if context is None:
            require()
            context = cls._contexts[key] = _Context(cls.bits, bytes(key))
            while len(cls._contexts) > _CONTEXTS_KEPT:
                cls._contexts.popitem(last=False)
        if type(data) is not bytes:
            data = bytes(data)
        return context.tag(data)


class Umac64(_Umac):
    bits = 64
    _contexts = OrderedDict()


class Umac128(_Umac):
    bits = 128
    _contexts = OrderedDict()


#: paramiko MAC-table entries for OpenSSH's four umac names
MAC_INFO: dict[str, dict] = {
    "umac-64@openssh.com": {"class": Umac64, "size": 8},
    "umac-128@openssh.com": {"class": Umac128, "size": 16},
    "umac-64-etm@openssh.com": {"class": Umac64, "size": 8},
    "umac-128-etm@openssh.com": {"class": Umac128, "size": 16},
}

_SEQ = struct.Struct(">I")


def tag_for(name: str, key: bytes, seqno: int, message: bytes) -> bytes:
    """The MAC ``name`` gives ``message`` as packet ``seqno`` (for tests and tools)."""
    return MAC_INFO[name]["class"].tag(key, _SEQ.pack(seqno) + message)[:MAC_INFO[name]["size"]]
