"""The SSH wire reader and writer (privsep/sshbuf.py): pure tests.

Each field type reads what RFC 4251 says it holds; every short, overlong or
malformed input raises the caller's exception class and nothing else.  The
writer writes those same bytes (checked against encodings spelled out here,
not against the reader alone), and what it writes reads back unchanged.
"""

from __future__ import annotations

import struct

import pytest

from privsep.wire.sshbuf import Reader, Writer


class Custom(ValueError):
    """Stands in for a caller's own class (monitor_wire.ProtocolError)."""


def sstr(data: bytes) -> bytes:
    """An SSH string spelled out with struct, independently of Writer."""
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
    """wire/messages.py reads with its ProtocolError and "record"; every
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



# --- Writer -----------------------------------------------------------------------


def test_writes_each_type_in_order():
    w = Writer()
    out = (w.byte(7).boolean(False).boolean(True).uint32(0xDEADBEEF).uint64(2**64 - 1)
           .string(b"\x00raw\xff").text("zoë").text("ssh-ed25519").mpint(256).mpint(0)
           .raw(b"tail"))
    assert out is w  # every method chains
    assert bytes(w) == (b"\x07" + b"\x00" + b"\x01" + struct.pack(">I", 0xDEADBEEF)
                        + struct.pack(">Q", 2**64 - 1) + sstr(b"\x00raw\xff")
                        + sstr("zoë".encode()) + sstr(b"ssh-ed25519") + sstr(b"\x01\x00")
                        + sstr(b"") + b"tail")


def test_empty_writer_and_repeated_bytes():
    w = Writer()
    assert bytes(w) == b""
    w.string(b"ab")
    assert bytes(w) == bytes(w) == b"\x00\x00\x00\x02ab"  # reading does not consume


def test_boolean_writes_0_or_1_by_truth():
    assert bytes(Writer().boolean(5).boolean([]).boolean("x")) == b"\x01\x00\x01"


def test_string_accepts_bytearray_and_memoryview_and_copies():
    buf = bytearray(b"abc")
    w = Writer().string(memoryview(buf)).raw(buf)
    buf[0] = ord("X")  # the writer holds its own copy
    assert bytes(w) == sstr(b"abc") + b"abc"


@pytest.mark.parametrize("value, encoded", [
    # RFC 4251 section 5's examples
    (0, b"\x00\x00\x00\x00"),
    (0x9A378F9B2E332A7, b"\x00\x00\x00\x08\x09\xa3\x78\xf9\xb2\xe3\x32\xa7"),
    (0x80, b"\x00\x00\x00\x02\x00\x80"),
    (0x7F, b"\x00\x00\x00\x01\x7f"),
    (0xFF00, b"\x00\x00\x00\x03\x00\xff\x00"),
])
def test_mpint_fewest_bytes_with_sign_byte(value, encoded):
    assert bytes(Writer().mpint(value)) == encoded
    assert Reader(encoded).mpint() == value


@pytest.mark.parametrize("write, value", [
    ("byte", -1), ("byte", 256), ("uint32", -1), ("uint32", 2**32),
    ("uint64", -1), ("uint64", 2**64),
])
def test_out_of_range_is_a_struct_error(write, value):
    with pytest.raises(struct.error):
        getattr(Writer(), write)(value)


def test_negative_mpint_refused_by_the_writer_too():
    with pytest.raises(ValueError, match="negative mpint"):
        Writer().mpint(-1)


#: (field type, value): each written, then read back, in this order.
ROUND_TRIP = (
    [("byte", v) for v in (0, 1, 0x7F, 0x80, 0xFF)]
    + [("boolean", True), ("boolean", False)]
    + [("uint32", v) for v in (0, 1, 0x80, 2**31, 2**32 - 1)]
    + [("uint64", v) for v in (0, 2**32, 2**63, 2**64 - 1)]
    + [("string", b) for b in (b"", b"\x00", bytes(range(256)), b"x" * 70000)]
    + [("text", t) for t in ("", "a\0b", "zoë ✓", "ssh-rsa")]
    + [("mpint", n) for n in (0, 1, 127, 128, 255, 256, 2**64, 2**521 - 1)]
)


def test_round_trip_with_the_reader():
    w = Writer()
    for kind, value in ROUND_TRIP:
        getattr(w, kind)(value)
    r = Reader(bytes(w))
    assert [(kind, getattr(r, kind)()) for kind, _ in ROUND_TRIP] == ROUND_TRIP
    r.end()
