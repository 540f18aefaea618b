"""The SSH wire reader (privsep/sshbuf.py): pure tests.

Each field type reads what RFC 4251 says it holds; every short, overlong or
malformed input raises the caller's exception class and nothing else.
"""

from __future__ import annotations

import struct

import pytest

from privsep.sshbuf import Reader


class Custom(ValueError):
    """Stands in for a caller's own class (monitor_wire.ProtocolError)."""


def sstr(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_reads_each_type_in_order():
    data = (b"\x07" + b"\x00" + b"\x02" + struct.pack(">I", 0xDEADBEEF)
            + struct.pack(">Q", 2**64 - 1) + sstr(b"\x00raw\xff") + sstr("zoë".encode())
            + sstr(b"ssh-ed25519") + sstr(b"\x01\x00") + sstr(b"") + b"tail")
    r = Reader(data)
    assert r.byte() == 7
    assert r.boolean() is False
    assert r.boolean() is True  # any non-zero byte, as RFC 4251 says
    assert r.uint32() == 0xDEADBEEF
    assert r.uint64() == 2**64 - 1
    assert r.string() == b"\x00raw\xff"
    assert r.text() == "zoë"
    assert r.name() == "ssh-ed25519"
    assert r.mpint() == 256
    assert r.mpint() == 0
    assert r.remaining() == 4
    assert r.take(4) == b"tail"
    assert r.remaining() == 0
    r.end()


def test_accepts_bytearray_and_memoryview_and_copies():
    buf = bytearray(sstr(b"abc"))
    r = Reader(memoryview(buf))
    buf[4] = ord("X")  # the reader holds its own copy
    assert r.string() == b"abc"
    assert Reader(bytearray(b"\x01")).byte() == 1


@pytest.mark.parametrize("read, size", [
    ("byte", 1), ("boolean", 1), ("uint32", 4), ("uint64", 8),
])
def test_fixed_size_fields_truncated(read, size):
    for cut in range(size):
        with pytest.raises(ValueError, match="^truncated data$"):
            getattr(Reader(b"\xaa" * cut), read)()


@pytest.mark.parametrize("read", ["string", "text", "name", "mpint"])
def test_truncated_string(read):
    whole = sstr(b"abcd")
    for cut in range(len(whole)):  # inside the length, or inside the payload
        with pytest.raises(ValueError, match="^truncated data$"):
            getattr(Reader(whole[:cut]), read)()


@pytest.mark.parametrize("length", [5, 2**31, 2**32 - 1])
def test_string_length_beyond_buffer(length):
    with pytest.raises(ValueError, match="truncated"):
        Reader(struct.pack(">I", length) + b"abcd").string()


def test_string_length_exactly_the_buffer():
    r = Reader(struct.pack(">I", 4) + b"abcd")
    assert r.string() == b"abcd"
    r.end()


def test_trailing_bytes():
    r = Reader(sstr(b"x") + b"\x00\x00")
    r.string()
    assert r.remaining() == 2
    with pytest.raises(ValueError, match="^2 trailing bytes$"):
        r.end()


@pytest.mark.parametrize("raw", [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"abc\x80"])
def test_text_not_utf8(raw):
    with pytest.raises(ValueError, match="^user: not UTF-8$"):
        Reader(sstr(raw)).text("user")
    with pytest.raises(ValueError, match="^name: not UTF-8$"):
        Reader(sstr(raw)).name()


def test_text_keeps_nul_but_name_refuses_it():
    assert Reader(sstr(b"a\0b")).text() == "a\0b"
    with pytest.raises(ValueError, match="^algorithm: NUL byte inside$"):
        Reader(sstr(b"ssh-ed25519\0")).name("algorithm")


def test_negative_mpint_refused():
    with pytest.raises(ValueError, match="negative mpint"):
        Reader(sstr(b"\x80")).mpint()
    assert Reader(sstr(b"\x00\x80")).mpint() == 128


def test_caller_chooses_exception_class_and_wording():
    """monitor_wire.py reads with its ProtocolError and "record"; every
    failure is then that class, and still a ValueError."""
    cases = [
        (b"", lambda r: r.byte(), "^truncated record$"),
        (struct.pack(">I", 9) + b"ab", lambda r: r.string(), "^truncated record$"),
        (sstr(b"\xff"), lambda r: r.text("user"), "^user: not UTF-8$"),
        (sstr(b"a\0"), lambda r: r.name(), "NUL"),
        (sstr(b"\xff"), lambda r: r.mpint(), "negative mpint"),
        (b"\x00", lambda r: r.end(), "^1 trailing bytes$"),
    ]
    for data, read, message in cases:
        with pytest.raises(Custom, match=message):
            read(Reader(data, error=Custom, what="record"))

