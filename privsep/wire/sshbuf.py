"""SSH wire encodings (RFC 4251 section 5): strict reading from bytes, and
writing.

Pure: no sockets, no logging.  The one reader every decoder here uses, as
OpenSSH's ``sshbuf`` serves all of its parsers: the monitor protocol's
records (wire/messages.py), the key blobs, signatures and signed userauth
data of public-key authentication (monitor/pubkey.py, wire/userauth.py), the hostkeys-prove
blobs the monitor checks (wire/hostkey_blobs.py) and the client's terminal modes
(session/tty.py).  Its counterpart ``Writer`` builds what is not a paramiko
``Message``: monitor records and the data a host key signs.

Every read checks before it takes and raises rather than padding or
guessing.  The exception class is the caller's: wire/messages.py wants its
ProtocolError, the key code plain ValueError; either way it is a
ValueError.  A string whose length runs past the end is "truncated", as is
any other short read.
"""

from __future__ import annotations

import struct

_U8 = struct.Struct(">B")
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


class Writer:
    """Builds SSH wire encodings, one field at a time: what ``Reader`` reads.

    Each method appends one field and returns the writer, so that calls
    chain; ``bytes(writer)`` is the encoding so far::

        bytes(Writer().text("ssh-ed25519").string(blob))

    A value that does not fit its field (a negative integer, a uint32 or a
    string length of 2**32 or more) is the caller's bug, not input:
    ``struct.error``, or ValueError for a negative mpint.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> Writer:
        """``data`` as it is, with no length: what ``Reader.take`` reads."""
        self._parts.append(bytes(data))
        return self

    def byte(self, value: int) -> Writer:
        """A uint8."""
        return self.raw(_U8.pack(value))

    def boolean(self, value: bool) -> Writer:
        """An SSH boolean: 1 for true, 0 for false."""
        return self.raw(b"\x01" if value else b"\x00")

    def uint32(self, value: int) -> Writer:
        return self.raw(_U32.pack(value))

    def uint64(self, value: int) -> Writer:
        return self.raw(_U64.pack(value))

    def string(self, data: bytes) -> Writer:
        """A uint32-length-prefixed byte string."""
        data = bytes(data)  # the length in bytes, whatever view it came in
        return self.uint32(len(data)).raw(data)

    def text(self, value: str) -> Writer:
        """A string holding ``value`` in UTF-8."""
        return self.string(value.encode("utf-8"))

    def mpint(self, value: int) -> Writer:
        """A non-negative multiple-precision integer, in the fewest bytes
        (none for 0; a leading zero byte where the top bit would be set)."""
        if value < 0:
            raise ValueError("negative mpint")
        return self.string(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)
