"""Strict reading of SSH wire encodings (RFC 4251 section 5) from bytes.

Pure: no sockets, no logging.  The one reader every decoder here uses, as
OpenSSH's ``sshbuf`` serves all of its parsers: the monitor protocol's
records (monitor_wire.py) and the key blobs, signatures and signed userauth
data of public-key authentication (auth_pubkey.py).

Every read checks before it takes and raises rather than padding or
guessing.  The exception class is the caller's: monitor_wire.py wants its
ProtocolError, auth_pubkey.py plain ValueError; either way it is a
ValueError.  A string whose length runs past the end is "truncated", as is
any other short read.
"""

from __future__ import annotations

import struct

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Reader:
    """Reads SSH wire types from the front of ``data``, one field at a time.

    ``error`` is the exception class raised for malformed input (a ValueError
    subclass); ``what`` names the data in the truncation message
    ("truncated record").
    """

    def __init__(
        self, data: bytes, *, error: type[ValueError] = ValueError, what: str = "data"
    ) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0
        self._error = error
        self._what = what

    def take(self, n: int) -> bytes:
        """The next ``n`` raw bytes."""
        if n > len(self._data) - self._pos:
            raise self._error(f"truncated {self._what}")
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return chunk

    def byte(self) -> int:
        """A uint8."""
        return self.take(1)[0]

    def boolean(self) -> bool:
        """An SSH boolean: any non-zero byte is true (RFC 4251)."""
        return self.byte() != 0

    def uint32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def uint64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def string(self) -> bytes:
        """A uint32-length-prefixed byte string."""
        return self.take(self.uint32())

    def text(self, field: str = "text") -> str:
        """A string that must be UTF-8; ``field`` names it in the error."""
        raw = self.string()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._error(f"{field}: not UTF-8") from None

    def name(self, field: str = "name") -> str:
        """UTF-8 text without NUL (a C string in OpenSSH): algorithm and key
        type names, user names in signed data."""
        value = self.text(field)
        if "\0" in value:
            raise self._error(f"{field}: NUL byte inside")
        return value

    def mpint(self) -> int:
        """A non-negative multiple-precision integer; a negative one is refused."""
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise self._error("negative mpint")
        return int.from_bytes(raw, "big")

    def remaining(self) -> int:
        """How many bytes are left unread."""
        return len(self._data) - self._pos

    def end(self) -> None:
        """Refuse anything left after the last field."""
        if self.remaining():
            raise self._error(f"{self.remaining()} trailing bytes")
