"""The monitor protocol's wire format: pure encode/decode, no sockets, no policy.

A record is ``uint32 length | uint8 type | body``; the length counts the type
byte and the body.  Bodies are the fields of a message dataclass in order,
each encoded as SSH encodes them (RFC 4251): ``str`` and ``bytes`` as a
uint32-prefixed string, ``int`` as uint64, ``bool`` as one byte 0 or 1, and a
nested dataclass as its own fields.  Descriptors travel beside a record
(SCM_RIGHTS, see common/channel.py); the record says how many it expects.

Everything a child sends is untrusted: decoding rejects unknown types,
truncation, trailing bytes, over-long strings, bad UTF-8 and bools that are
not 0 or 1, raising ProtocolError.  What a request *means* in a given phase is
monitor/policy.py's business.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from privsep.wire.sshbuf import Reader, Writer

#: Largest record body accepted.  A transport hand-off with its pending bytes
#: is the biggest message; 256 KiB is far above any legitimate one.
MAX_RECORD = 256 * 1024

#: Most items in a list field (prompts of one keyboard-interactive query).
MAX_LIST = 64

#: The data sizes a host key may be asked to sign: SHA-1/256/384/512 hashes.
HASH_SIZES = frozenset({20, 32, 48, 64})


class ProtocolError(ValueError):
    """A record that does not decode: always treated as an attack."""


class MsgType(IntEnum):
    LOG = 1
    BANNER_REFUSED = 3
    SIGN_REQUEST = 10
    SIGN_ANSWER = 11
    PWNAM_REQUEST = 12
    PWNAM_ANSWER = 13
    PASSWORD_REQUEST = 14
    PASSWORD_ANSWER = 15
    KEY_ALLOWED_REQUEST = 16
    KEY_ALLOWED_ANSWER = 17
    KEY_VERIFY_REQUEST = 18
    KEY_VERIFY_ANSWER = 19
    HANDOFF = 30
    PTY_REQUEST = 40
    PTY_ANSWER = 41
    PTY_CLEANUP_REQUEST = 42
    PTY_CLEANUP_ANSWER = 43
    KBDINT_REQUEST = 20
    KBDINT_ANSWER = 21
    HOSTBASED_REQUEST = 22
    HOSTBASED_ANSWER = 23
    MODULI_REQUEST = 24
    MODULI_ANSWER = 25
    TUN_REQUEST = 60
    TUN_ANSWER = 61
    TUN_REFUSED = 62


# --- messages -----------------------------------------------------------------
# Each carries its type in TYPE; FDS is how many descriptors travel with it.


@dataclass(frozen=True)
class Log:
    """A child's log line, logged by the monitor with the child's role.
    Bytes, not text: a line may hold a client's bytes as they came (a
    signal name), which the monitor's formatter escapes as sshd's strnvis
    does ("\\377"); UTF-8 with surrogateescape both ways."""

    TYPE: ClassVar[MsgType] = MsgType.LOG
    FDS: ClassVar[int] = 0
    level: int
    text: bytes


@dataclass(frozen=True)
class BannerRefused:
    """The net-child refused the client's identification line: ``reason``
    and ``detail`` as in wire.banner.Refusal.  No answer; the monitor
    writes sshd's lines for it."""

    TYPE: ClassVar[MsgType] = MsgType.BANNER_REFUSED
    FDS: ClassVar[int] = 0
    reason: str
    detail: str


@dataclass(frozen=True)
class SignRequest:
    """Sign ``data`` with the host key for ``algorithm`` (kex, rekey)."""

    TYPE: ClassVar[MsgType] = MsgType.SIGN_REQUEST
    FDS: ClassVar[int] = 0
    algorithm: str
    data: bytes


@dataclass(frozen=True)
class SignAnswer:
    TYPE: ClassVar[MsgType] = MsgType.SIGN_ANSWER
    FDS: ClassVar[int] = 0
    signature: bytes


@dataclass(frozen=True)
class PwnamRequest:
    """The user name the client asked for; fixes the user for the connection."""

    TYPE: ClassVar[MsgType] = MsgType.PWNAM_REQUEST
    FDS: ClassVar[int] = 0
    user: str


@dataclass(frozen=True)
class PwnamAnswer:
    """Whether the user exists and may log in, and the methods to offer
    (after any Match block for the user)."""

    TYPE: ClassVar[MsgType] = MsgType.PWNAM_ANSWER
    FDS: ClassVar[int] = 0
    valid: bool
    methods: str = ""


@dataclass(frozen=True)
class PasswordRequest:
    TYPE: ClassVar[MsgType] = MsgType.PASSWORD_REQUEST
    FDS: ClassVar[int] = 0
    password: bytes


@dataclass(frozen=True)
class PasswordAnswer:
    """``accepted``: the login is complete.  ``partial``: the method
    succeeded but AuthenticationMethods wants more; ``methods`` is what
    USERAUTH_FAILURE offers next (both as for KeyVerifyAnswer)."""

    TYPE: ClassVar[MsgType] = MsgType.PASSWORD_ANSWER
    FDS: ClassVar[int] = 0
    accepted: bool
    partial: bool = False
    methods: str = ""


@dataclass(frozen=True)
class KbdintRequest:
    """Keyboard-interactive: ``start`` a PAM conversation, or answer its last
    query with ``responses``."""

    TYPE: ClassVar[MsgType] = MsgType.KBDINT_REQUEST
    FDS: ClassVar[int] = 0
    start: bool
    responses: list[str]


@dataclass(frozen=True)
class KbdintAnswer:
    """Either the conversation's next query (``prompts`` with one echo byte
    each, PAM's messages in ``instruction``) or, when ``done``, the verdict."""

    TYPE: ClassVar[MsgType] = MsgType.KBDINT_ANSWER
    FDS: ClassVar[int] = 0
    done: bool
    success: bool
    instruction: str
    prompts: list[str]
    echo: bytes
    partial: bool = False
    methods: str = ""


@dataclass(frozen=True)
class KeyAllowedRequest:
    """Is this public key in the user's authorized_keys?"""

    TYPE: ClassVar[MsgType] = MsgType.KEY_ALLOWED_REQUEST
    FDS: ClassVar[int] = 0
    algorithm: str
    keyblob: bytes


@dataclass(frozen=True)
class KeyAllowedAnswer:
    TYPE: ClassVar[MsgType] = MsgType.KEY_ALLOWED_ANSWER
    FDS: ClassVar[int] = 0
    allowed: bool


@dataclass(frozen=True)
class KeyVerifyRequest:
    """The client's signed userauth request, for the monitor to check itself."""

    TYPE: ClassVar[MsgType] = MsgType.KEY_VERIFY_REQUEST
    FDS: ClassVar[int] = 0
    algorithm: str
    keyblob: bytes
    signed_data: bytes
    signature: bytes


@dataclass(frozen=True)
class KeyVerifyAnswer:
    """``verified``: the login is complete.  ``partial``: the signature was
    good and a list of AuthenticationMethods goes on (``verified`` is then
    false, so that no child can take it for a login); ``methods``: the
    methods the next USERAUTH_FAILURE names, decided by the monitor."""

    TYPE: ClassVar[MsgType] = MsgType.KEY_VERIFY_ANSWER
    FDS: ClassVar[int] = 0
    verified: bool
    partial: bool = False
    methods: str = ""


@dataclass(frozen=True)
class HostbasedRequest:
    """A hostbased userauth request (RFC 4252 section 9), its fields as the
    client sent them, and the data the net-child says was signed: the
    monitor checks that data against the fields and its own session id
    and user, then rebuilds it itself before verifying ``signature``."""

    TYPE: ClassVar[MsgType] = MsgType.HOSTBASED_REQUEST
    FDS: ClassVar[int] = 0
    algorithm: str
    keyblob: bytes
    client_host: str
    client_user: str
    signature: bytes
    signed_data: bytes


@dataclass(frozen=True)
class HostbasedAnswer:
    """As KeyVerifyAnswer: ``accepted`` completes the login, ``partial``
    means a list of AuthenticationMethods goes on."""

    TYPE: ClassVar[MsgType] = MsgType.HOSTBASED_ANSWER
    FDS: ClassVar[int] = 0
    accepted: bool
    partial: bool = False
    methods: str = ""


@dataclass(frozen=True)
class DirectionState:
    """One direction of an SSH transport, enough to continue it elsewhere."""

    cipher: str
    #: The cipher's key (64 bytes for chacha20-poly1305: K_1 then K_2).
    key: bytes
    #: The IV to start from: the key exchange's for CTR (see stream_offset),
    #: the last ciphertext block for CBC; unused by AEADs.
    iv: bytes
    #: Bytes already run through a CTR keystream (0 for others).
    stream_offset: int
    #: The current AES-GCM nonce (empty for others; chacha20-poly1305's
    #: nonce is the sequence number).
    aead_iv: bytes
    mac: str
    mac_key: bytes
    seqno: int
    packets: int
    bytes: int
    #: "none", or "zlib@openssh.com": delayed compression, which begins with
    #: the hand-off, so that its streams cross it still empty.
    compression: str = "none"
    #: sshd's count for the whole connection so far (packet.c p_*.bytes):
    #: every packet's length field + 4, never reset; ``bytes`` above is
    #: paramiko's, since the last key exchange, for RekeyLimit.
    total: int = 0


@dataclass(frozen=True)
class TransportState:
    session_id: bytes
    local_version: str
    remote_version: str
    strict_kex: bool
    client_ext_info: bool
    inbound: DirectionState
    outbound: DirectionState
    #: Bytes read from the socket but not yet processed.
    pending: bytes


@dataclass(frozen=True)
class Handoff:
    """Sent once, after USERAUTH_SUCCESS, by a net-child about to exit."""

    TYPE: ClassVar[MsgType] = MsgType.HANDOFF
    FDS: ClassVar[int] = 0
    state: TransportState


@dataclass(frozen=True)
class PtyRequest:
    TYPE: ClassVar[MsgType] = MsgType.PTY_REQUEST
    FDS: ClassVar[int] = 0
    term: str
    cols: int
    rows: int
    width_px: int
    height_px: int


@dataclass(frozen=True)
class PtyAnswer:
    """The allocated pty: ``tty`` is ``/dev/pts/N``; master and slave fds follow."""

    TYPE: ClassVar[MsgType] = MsgType.PTY_ANSWER
    FDS: ClassVar[int] = 2
    tty: str
    #: sshd's "Last login: ..." line (PrintLastLog), read before this login.
    last_login: str = ""


@dataclass(frozen=True)
class PtyCleanupRequest:
    TYPE: ClassVar[MsgType] = MsgType.PTY_CLEANUP_REQUEST
    FDS: ClassVar[int] = 0
    tty: str


@dataclass(frozen=True)
class PtyCleanupAnswer:
    TYPE: ClassVar[MsgType] = MsgType.PTY_CLEANUP_ANSWER
    FDS: ClassVar[int] = 0
    done: bool


@dataclass(frozen=True)
class ModuliRequest:
    """A group for diffie-hellman-group-exchange: the sizes the client asked
    for, already brought into 2048..8192 (OpenSSH's MONITOR_REQ_MODULI).
    The net-child is chrooted and cannot read the moduli file itself."""

    TYPE: ClassVar[MsgType] = MsgType.MODULI_REQUEST
    FDS: ClassVar[int] = 0
    min_bits: int
    want_bits: int
    max_bits: int


@dataclass(frozen=True)
class ModuliAnswer:
    """The group chosen: prime and generator, unsigned big-endian."""

    TYPE: ClassVar[MsgType] = MsgType.MODULI_ANSWER
    FDS: ClassVar[int] = 0
    prime: bytes
    generator: bytes


@dataclass(frozen=True)
class TunRequest:
    """Open a tun (point-to-point) or tap (ethernet) device: ``mode`` and
    ``unit`` as in the client's tun@openssh.com (privsep/wire/tunnel.py)."""

    TYPE: ClassVar[MsgType] = MsgType.TUN_REQUEST
    FDS: ClassVar[int] = 0
    mode: int
    unit: int


@dataclass(frozen=True)
class TunAnswer:
    """The device's name (``tun6``); its descriptor follows."""

    TYPE: ClassVar[MsgType] = MsgType.TUN_ANSWER
    FDS: ClassVar[int] = 1
    ifname: str


@dataclass(frozen=True)
class TunRefused:
    """The device could not be opened with the user's rights."""

    TYPE: ClassVar[MsgType] = MsgType.TUN_REFUSED
    FDS: ClassVar[int] = 0
    reason: str


Message = (
    Log | BannerRefused | SignRequest | SignAnswer | PwnamRequest | PwnamAnswer | PasswordRequest
    | PasswordAnswer | KeyAllowedRequest | KeyAllowedAnswer | KeyVerifyRequest
    | KeyVerifyAnswer | Handoff | PtyRequest | PtyAnswer | PtyCleanupRequest
    | PtyCleanupAnswer | KbdintRequest | KbdintAnswer | HostbasedRequest | HostbasedAnswer
    | ModuliRequest | ModuliAnswer | TunRequest | TunAnswer | TunRefused
)

MESSAGE_CLASSES: dict[MsgType, type] = {
    cls.TYPE: cls for cls in typing.get_args(Message)
}


# --- encoding -----------------------------------------------------------------

#: Each record class's fields and their types, worked out once.  With
#: ``from __future__ import annotations`` the types are strings, and
#: typing.get_type_hints compiles and evaluates each of them on every call:
#: a few milliseconds of CPU per login in each process, and fresh objects in
#: pages the forked processes would otherwise share.  Filled at import (so,
#: in the daemon, before the listener forks) for every dataclass here.
_FIELD_TYPES: dict[type, tuple[tuple[str, object], ...]] = {}


def _field_types(cls: type) -> tuple[tuple[str, object], ...]:
    """(name, type) of each field of the dataclass ``cls``, in order."""
    found = _FIELD_TYPES.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = tuple((field.name, hints[field.name]) for field in dataclasses.fields(cls))
        _FIELD_TYPES[cls] = found
    return found


def _encode_fields(obj: object, out: Writer) -> None:
    for name, kind in _field_types(type(obj)):
        value = getattr(obj, name)
        if kind is bool:
            out.boolean(value)
        elif kind is int:
            out.uint64(value)
        elif kind is str:
            out.text(value)
        elif kind is bytes:
            out.string(value)
        elif kind == list[str]:
            out.uint32(len(value))
            for item in value:
                out.text(item)
        elif dataclasses.is_dataclass(kind):
            _encode_fields(value, out)
        else:  # a programming error, not input
            raise TypeError(f"cannot encode field {name}: {kind}")


def encode(msg: Message) -> bytes:
    """The record for ``msg``: length, type, body."""
    out = Writer().byte(msg.TYPE)
    _encode_fields(msg, out)
    body = bytes(out)
    if len(body) > MAX_RECORD:
        raise ProtocolError(f"{type(msg).__name__} of {len(body)} bytes is oversized")
    return bytes(Writer().string(body))


def _decode_fields(cls: type, reader: Reader) -> object:
    values = {}
    for name, kind in _field_types(cls):
        if kind is bool:
            byte = reader.byte()
            if byte > 1:
                raise ProtocolError(f"{name}: bool must be 0 or 1")
            values[name] = bool(byte)
        elif kind is int:
            values[name] = reader.uint64()
        elif kind is str:
            values[name] = reader.text(name)
        elif kind is bytes:
            values[name] = reader.string()
        elif kind == list[str]:
            count = reader.uint32()
            if count > MAX_LIST:
                raise ProtocolError(f"{name}: {count} items is too many")
            values[name] = [reader.text(name) for _ in range(count)]
        else:
            values[name] = _decode_fields(kind, reader)
    return cls(**values)


def decode(record: bytes) -> Message:
    """Decode one whole record; anything but an exact, known record fails."""
    if len(record) < 5:
        raise ProtocolError("truncated record")
    reader = Reader(record, error=ProtocolError, what="record")
    length = reader.uint32()
    if length > MAX_RECORD:
        raise ProtocolError(f"record of {length} bytes is oversized")
    if length != reader.remaining():
        raise ProtocolError(f"record length {length} but {reader.remaining()} bytes")
    msg_type = reader.byte()
    try:
        cls = MESSAGE_CLASSES[MsgType(msg_type)]
    except ValueError:
        raise ProtocolError(f"unknown message type {msg_type}") from None
    msg = _decode_fields(cls, reader)
    if reader.remaining():
        raise ProtocolError(f"trailing bytes after {cls.__name__}")
    return msg  # type: ignore[return-value]


for _cls in list(globals().values()):
    if isinstance(_cls, type) and dataclasses.is_dataclass(_cls):
        _field_types(_cls)
del _cls
