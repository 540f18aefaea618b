"""The monitor protocol's wire format (privsep/wire/messages.py): pure tests.

Every message class survives encode/decode unchanged, and every kind of
malformed record a compromised child could send is a ProtocolError, never a
message and never another exception.  hypothesis is not installed in the
test environment, so the variations are plain loops.
"""

from __future__ import annotations

import dataclasses
import struct
import typing

import pytest

from privsep.wire import messages as wire
from privsep.wire.messages import MAX_RECORD, ProtocolError

U32 = struct.Struct(">I")
U64_MAX = 2**64 - 1


def direction(seed: int) -> wire.DirectionState:
    return wire.DirectionState(
        cipher="aes256-ctr" if seed % 2 else "aes256-gcm@openssh.com",
        key=bytes(range(seed, seed + 32)),
        iv=bytes([seed]) * 16,
        stream_offset=seed * 16,
        aead_iv=b"" if seed % 2 else bytes([seed]) * 12,
        mac="hmac-sha2-256" if seed % 2 else "",
        mac_key=bytes([seed ^ 0x5A]) * 32 if seed % 2 else b"",
        seqno=U64_MAX if seed == 3 else seed,
        packets=seed * 7,
        bytes=seed * 1000,
    )


def transport(pending: bytes = b"\x00\x00\x01") -> wire.TransportState:
    return wire.TransportState(
        session_id=bytes(range(32)),
        local_version="SSH-2.0-privsep_sshd_test",
        remote_version="SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
        strict_kex=True,
        client_ext_info=False,
        inbound=direction(3),
        outbound=direction(4),
        pending=pending,
    )


#: Several instances of every message class, edge values included: empty
#: strings and bytes, non-ASCII text, 0 and 2**64-1, both bools, NUL bytes.
SAMPLES: list[object] = [
    wire.Log(0, b""),
    wire.Log(20, "Disconnected from 127.0.0.1 — bye ✓".encode()),
    wire.Log(U64_MAX, b"x" * 1000),
    wire.Log(30, b"unsupported signal \"\xffTERM\""),
    wire.BannerRefused("invalid", 'GET / HTTP/1.0 "quoted"'),
    wire.BannerRefused("", ""),
    wire.SignRequest("ssh-ed25519", bytes(32)),
    wire.SignRequest("rsa-sha2-512", b"\xff" * 64),
    wire.SignRequest("", b""),
    wire.SignAnswer(b"\x00\x00\x00\x0bssh-ed25519" + b"\x00" * 68),
    wire.SignAnswer(b""),
    wire.PwnamRequest("alice"),
    wire.PwnamRequest("名前"),
    wire.PwnamRequest(""),
    wire.PwnamAnswer(True),
    wire.PwnamAnswer(False),
    wire.PwnamAnswer(True, "publickey,password,keyboard-interactive"),
    wire.KbdintRequest(True, []),
    wire.KbdintRequest(False, ["secret", "", "ünïcode"]),
    wire.KbdintAnswer(False, False, "Welcome", ["Password: ", "Token: "], b"\x00\x01"),
    wire.KbdintAnswer(True, True, "", [], b""),
    wire.PasswordRequest(b"hunter2"),
    wire.PasswordRequest(b"\x00\xff\xfe not utf-8 \x80"),
    wire.PasswordRequest(b""),
    wire.PasswordAnswer(True),
    wire.PasswordAnswer(False),
    wire.KeyAllowedRequest("ssh-ed25519", b"\x00\x00\x00\x0bssh-ed25519" + bytes(36)),
    wire.KeyAllowedRequest("", b""),
    wire.KeyAllowedAnswer(True),
    wire.KeyAllowedAnswer(False),
    wire.KeyVerifyRequest("ssh-ed25519", b"blob", b"signed data", b"signature"),
    wire.ModuliRequest(2048, 3072, 8192),
    wire.ModuliRequest(0, U64_MAX, 1),
    wire.ModuliAnswer(b"\xff" * 1024, b"\x05"),
    wire.ModuliAnswer(b"", b""),
    wire.KeyVerifyRequest("", b"", b"", b""),
    wire.KeyVerifyAnswer(True),
    wire.KeyVerifyAnswer(False),
    wire.HostbasedRequest("ssh-ed25519", b"\x00blob", "client.example.", "alice", b"sig",
                          b"signed\x00data"),
    wire.HostbasedAnswer(True, False, "publickey,hostbased"),
    wire.Handoff(transport()),
    wire.Handoff(transport(pending=b"")),
    wire.Handoff(dataclasses.replace(transport(), strict_kex=False, client_ext_info=True,
                                     local_version="", remote_version="")),
    wire.PtyRequest("xterm-256color", 80, 24, 640, 480),
    wire.PtyRequest("", 0, 0, 0, 0),
    wire.PtyRequest("vt100", U64_MAX, U64_MAX, U64_MAX, U64_MAX),
    wire.PtyAnswer("/dev/pts/3"),
    wire.PtyAnswer(""),
    wire.PtyCleanupRequest("/dev/pts/3"),
    wire.PtyCleanupAnswer(True),
    wire.PtyCleanupAnswer(False),
    wire.TunRequest(1, 6),
    wire.TunRequest(2, 0x7FFFFFFF),
    wire.TunAnswer("tun6"),
    wire.TunRefused('sys_tun_open: failed to open tunnel control device "/dev/net/tun"'),
]


def ids(msg: object) -> str:
    return type(msg).__name__


def record(msg_type: int, body: bytes) -> bytes:
    """A record with a correct length field around an arbitrary body."""
    return U32.pack(len(body) + 1) + bytes([msg_type]) + body


def sstr(data: bytes) -> bytes:
    return U32.pack(len(data)) + data


# --- round trips --------------------------------------------------------------


def test_samples_cover_every_message_class():
    assert {type(m) for m in SAMPLES} == set(wire.MESSAGE_CLASSES.values())
    # And the table maps each type to the class that carries it.
    for msg_type, cls in wire.MESSAGE_CLASSES.items():
        assert cls.TYPE is msg_type
    assert set(wire.MESSAGE_CLASSES) == set(wire.MsgType)


@pytest.mark.parametrize("msg", SAMPLES, ids=ids)
def test_round_trip(msg):
    rec = wire.encode(msg)
    assert U32.unpack(rec[:4])[0] == len(rec) - 4
    assert rec[4] == msg.TYPE
    back = wire.decode(rec)
    assert type(back) is type(msg)
    assert back == msg


def test_handoff_nested_state_round_trips_field_by_field():
    msg = wire.Handoff(transport(pending=bytes(range(256)) * 4))
    back = wire.decode(wire.encode(msg))
    assert isinstance(back, wire.Handoff)
    assert isinstance(back.state, wire.TransportState)
    assert isinstance(back.state.inbound, wire.DirectionState)
    assert isinstance(back.state.outbound, wire.DirectionState)
    assert back.state.inbound == direction(3)
    assert back.state.outbound == direction(4)
    assert back.state.inbound.seqno == U64_MAX
    assert back.state.pending == bytes(range(256)) * 4
    assert back.state.strict_kex is True and back.state.client_ext_info is False


def test_record_of_exactly_max_record_decodes():
    # type byte + uint32 string length + payload == MAX_RECORD
    payload = b"p" * (MAX_RECORD - 1 - 4)
    msg = wire.PasswordRequest(payload)
    rec = wire.encode(msg)
    assert len(rec) == 4 + MAX_RECORD
    assert wire.decode(rec) == msg


# --- rejections ----------------------------------------------------------------


def test_encode_refuses_oversized_message():
    with pytest.raises(ProtocolError):
        wire.encode(wire.PasswordRequest(b"p" * (MAX_RECORD - 1 - 4 + 1)))


@pytest.mark.parametrize("msg_type", [0, 2, 9, 26, 29, 31, 39, 44, 99, 255])
def test_unknown_type(msg_type):
    assert msg_type not in {int(t) for t in wire.MsgType}
    for body in (b"", b"\x00" * 8, wire.encode(wire.PwnamRequest("alice"))[5:]):
        with pytest.raises(ProtocolError, match="unknown message type"):
            wire.decode(record(msg_type, body))


@pytest.mark.parametrize("msg", SAMPLES, ids=ids)
def test_truncated_at_every_cut_point(msg):
    rec = wire.encode(msg)
    for cut in range(len(rec)):
        # As received: the length field says more than arrived.
        with pytest.raises(ProtocolError):
            wire.decode(rec[:cut])
        # Re-framed: a consistent length around a body cut short.
        if cut >= 5:
            with pytest.raises(ProtocolError):
                wire.decode(U32.pack(cut - 4) + rec[4:cut])


@pytest.mark.parametrize("msg", SAMPLES, ids=ids)
def test_trailing_bytes(msg):
    rec = wire.encode(msg)
    for extra in (b"\x00", b"\x01", b"\x00\x00\x00\x00", b"garbage" * 10):
        body = rec[4:] + extra
        with pytest.raises(ProtocolError, match="trailing bytes"):
            wire.decode(U32.pack(len(body)) + body)


@pytest.mark.parametrize("msg", SAMPLES, ids=ids)
def test_length_field_disagreeing_with_data(msg):
    rec = wire.encode(msg)
    length = len(rec) - 4
    for wrong in (0, 1, length - 1, length + 1, length + 1000):
        if wrong == length:
            continue
        with pytest.raises(ProtocolError):
            wire.decode(U32.pack(wrong) + rec[4:])


def test_length_over_max_record():
    # Claimed only: a header announcing too much, whatever follows.
    for claimed in (MAX_RECORD + 1, 2**31, 2**32 - 1):
        with pytest.raises(ProtocolError, match="oversized"):
            wire.decode(U32.pack(claimed) + bytes([wire.MsgType.PASSWORD_REQUEST]) + b"\0" * 4)
    # Real: a record one byte over the limit, length field consistent.
    payload = b"p" * (MAX_RECORD - 1 - 4 + 1)
    body = bytes([wire.MsgType.PASSWORD_REQUEST]) + sstr(payload)
    assert len(body) == MAX_RECORD + 1
    with pytest.raises(ProtocolError, match="oversized"):
        wire.decode(U32.pack(len(body)) + body)


def test_string_length_past_the_end():
    t = wire.MsgType.SIGN_REQUEST
    for alg_len in (48, 100, MAX_RECORD, 2**31, 2**32 - 1):
        body = U32.pack(alg_len) + b"ssh-ed25519" + sstr(bytes(32))
        with pytest.raises(ProtocolError, match="truncated"):
            wire.decode(record(t, body))
    # The last field's length overshooting by exactly one byte.
    body = sstr(b"ssh-ed25519") + U32.pack(33) + bytes(32)
    with pytest.raises(ProtocolError, match="truncated"):
        wire.decode(record(t, body))
    # A nested field inside a Handoff.
    good = wire.encode(wire.Handoff(transport(pending=b"abc")))
    bad = good[:-7] + U32.pack(4) + b"abc"
    with pytest.raises(ProtocolError, match="truncated"):
        wire.decode(bad)


@pytest.mark.parametrize("raw", [
    b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"abc\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80",
])
def test_invalid_utf8_in_str_field(raw):
    cases = [
        (wire.MsgType.PWNAM_REQUEST, sstr(raw)),
        (wire.MsgType.SIGN_REQUEST, sstr(raw) + sstr(bytes(32))),
        (wire.MsgType.PTY_REQUEST, sstr(raw) + struct.pack(">QQQQ", 80, 24, 0, 0)),
        (wire.MsgType.PTY_CLEANUP_REQUEST, sstr(raw)),
    ]
    for msg_type, body in cases:
        with pytest.raises(ProtocolError, match="not UTF-8"):
            wire.decode(record(msg_type, body))
    # The same bytes in a bytes field are fine: only str fields are text.
    assert wire.decode(record(wire.MsgType.PASSWORD_REQUEST, sstr(raw))) == \
        wire.PasswordRequest(raw)
    # A child's log line may hold a client's bytes as they came: the
    # monitor escapes them when it writes the line.
    assert wire.decode(record(wire.MsgType.LOG, struct.pack(">Q", 20) + sstr(raw))) == \
        wire.Log(20, raw)


def test_invalid_utf8_in_nested_str_field():
    good = wire.encode(wire.Handoff(transport()))
    needle = sstr(b"aes256-ctr")
    assert good.count(needle) == 1
    bad = good.replace(needle, sstr(b"aes256-ct\xff"))
    with pytest.raises(ProtocolError, match="not UTF-8"):
        wire.decode(bad)


@pytest.mark.parametrize("byte", [2, 3, 0x80, 0xFF])
def test_bool_not_0_or_1(byte):
    for msg_type in (wire.MsgType.PWNAM_ANSWER, wire.MsgType.PASSWORD_ANSWER,
                     wire.MsgType.KEY_ALLOWED_ANSWER, wire.MsgType.KEY_VERIFY_ANSWER,
                     wire.MsgType.PTY_CLEANUP_ANSWER):
        with pytest.raises(ProtocolError, match="bool"):
            wire.decode(record(msg_type, bytes([byte])))
    # Nested: strict_kex in a Handoff's TransportState.
    state = transport()
    prefix = wire.encode(wire.Handoff(dataclasses.replace(state, strict_kex=False)))
    flipped = wire.encode(wire.Handoff(state))
    diff = [i for i, (a, b) in enumerate(zip(prefix, flipped)) if a != b]
    assert len(diff) == 1
    bad = bytearray(flipped)
    bad[diff[0]] = byte
    with pytest.raises(ProtocolError, match="bool"):
        wire.decode(bytes(bad))


def test_short_records():
    for rec in (b"", b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x00",
                b"\x00\x00\x00\x01"):
        with pytest.raises(ProtocolError):
            wire.decode(rec)


def test_only_protocol_errors_escape_decode():
    """Byte-level mutations of valid records either decode to a message or
    raise ProtocolError, never another exception (a plain loop standing in
    for a fuzzer)."""
    for msg in SAMPLES:
        rec = wire.encode(msg)
        for i in range(len(rec)):
            for value in (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF):
                mutated = rec[:i] + bytes([value]) + rec[i + 1:]
                try:
                    out = wire.decode(mutated)
                except ProtocolError:
                    continue
                assert type(out) in wire.MESSAGE_CLASSES.values()


def test_every_field_kind_is_one_the_codec_knows():
    """A new message with a field of another type must not slip through
    encode/decode unchecked."""
    kinds = set()

    def walk(cls):
        for f in dataclasses.fields(cls):
            kind = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind)
            else:
                kinds.add(kind)

    for cls in wire.MESSAGE_CLASSES.values():
        walk(cls)
    assert kinds <= {bool, int, str, bytes, list[str]}
