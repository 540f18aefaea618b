"""The monitor's request table: which request is permitted when.  Pure code.

In the manner of OpenSSH's mon_dispatch tables: each phase has a table of the
requests a child may make, some only once, some only after another.  The
monitor asks ``admit(state, request)`` before it answers anything; a
PolicyViolation means the child is compromised or broken, and the monitor logs
it, kills the child and drops the connection.  The state records what the
monitor itself decided, never what a child claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

from privsep.config.authmethods import MethodLists
from privsep.config.moduli import gex_request_error
from privsep.wire import banner, hostkey_blobs
from privsep.wire import messages as wire
from privsep.wire import tunnel
from privsep.wire.facts import MAX_USER_LEN, SSH_MSG_USERAUTH_REQUEST
from privsep.wire.keyoptions import KeyOption
from privsep.wire.userauth import (
    HOSTBOUND_METHOD, SignedHostbased, SignedUserauth, parse_signed_hostbased,
)

#: Longest password handed to PAM.
MAX_PASSWORD_LEN = 1024


class Phase(Enum):
    PREAUTH = "preauth"
    POSTAUTH = "postauth"


class PolicyViolation(Exception):
    """A request the monitor must not answer."""


@dataclass
class MonitorState:
    """What the monitor knows about one connection."""

    phase: Phase = Phase.PREAUTH
    #: Fixed by the first signature request: the first exchange hash.
    session_id: bytes | None = None
    #: the account's name: the login name without its ":style"
    user: str | None = None
    #: the login name as the client sent it (what a publickey signature names)
    requested_user: str | None = None
    #: the authentication style after ":" (sshd keeps it for BSD auth; PAM
    #: and keyboard-interactive on Linux use none), or None
    auth_style: str | None = None
    user_valid: bool = False
    authenticated: bool = False
    #: The one key the monitor last said was allowed (algorithm, blob, and
    #: the options of its authorized_keys line); every KeyAllowedRequest
    #: resets it, as OpenSSH's monitor_reset_key_state does, so a signature
    #: can only ever be checked for the key asked about last.
    allowed_key: AllowedKey | None = None
    #: The most ptys the session process may hold at once (MaxSessions).
    max_ptys: int = 10
    #: Ptys allocated for the session process and not yet given back.
    ptys: set[str] = field(default_factory=set)
    #: Public blobs of this server's host keys (set by the monitor at start):
    #: the only keys a hostkeys-prove signature may name.
    host_key_blobs: frozenset[bytes] = frozenset()
    #: The host key that signed the first exchange hash: a publickey-hostbound
    #: request must name it, or its HostCertificate when the key exchange
    #: offered that (the client names the key as it received it).
    initial_host_key: bytes | None = None
    initial_host_cert: bytes = b""
    #: Request types answered once already, for once-only rules.
    answered: set[wire.MsgType] = field(default_factory=set)
    #: AuthenticationMethods: the lists still to complete (set up once the
    #: user is named; methods that succeeded are crossed off by the monitor
    #: only).  A method that starts no list is not even tried.
    method_lists: MethodLists = field(default_factory=MethodLists)
    #: Public keys that already succeeded (publickey,publickey needs two).
    used_keys: set[bytes] = field(default_factory=set)
    #: PermitTunnel after the user's Match blocks, and the unit the key's
    #: tunnel="N" forces (None: none); set when the session process starts.
    permit_tunnel: str = "no"
    forced_tun: int | None = None
    #: A request of AUTH_ATTEMPTS reached the monitor: a connection that
    #: ends unauthenticated then earns an "authfail" penalty (generation 10)
    auth_attempted: bool = False


@dataclass(frozen=True)
class AllowedKey:
    algorithm: str
    blob: bytes
    options: tuple[KeyOption, ...] = ()


@dataclass(frozen=True)
class Rule:
    """A permitted request: at most ``once``, and only if ``when`` holds."""

    once: bool = False
    when: Callable[[MonitorState, object], str | None] = lambda state, msg: None


def _user_named(state: MonitorState, msg: object) -> str | None:
    if state.user is None:
        return "before the user was named"
    if state.authenticated:
        return "after authentication succeeded"
    return None


def _sign_ok(state: MonitorState, msg: wire.SignRequest) -> str | None:
    if len(msg.data) not in wire.HASH_SIZES:
        return f"data of {len(msg.data)} bytes is not an exchange hash"
    return None


def hostkeys_prove_error(state: MonitorState, msg: wire.SignRequest) -> str | None:
    """Why ``msg`` is not a hostkeys-prove-00@openssh.com proof for this
    connection, or None: the blob must name the recorded session id and one
    of our own host keys, and the algorithm must be that key's."""
    try:
        session_id, keyblob = hostkey_blobs.parse_hostkeys_prove(msg.data)
    except ValueError as exc:
        return str(exc)
    if state.session_id is None or session_id != state.session_id:
        return "hostkeys-prove blob for another session id"
    if keyblob not in state.host_key_blobs:
        return "hostkeys-prove blob names a key that is not ours"
    keytype = hostkey_blobs.blob_key_type(keyblob)
    wanted = hostkey_blobs.algorithms_for_type(keytype)
    if msg.algorithm not in wanted:
        return f"algorithm {msg.algorithm!r} is not the named key's"
    return None


def _postauth_sign_ok(state: MonitorState, msg: wire.SignRequest) -> str | None:
    """Post-auth: a rekey's exchange hash, or a proof of one of our host keys."""
    if len(msg.data) in wire.HASH_SIZES:
        return None
    reason = hostkeys_prove_error(state, msg)
    if reason:
        return f"data of {len(msg.data)} bytes is not an exchange hash, nor a " \
               f"hostkeys-prove blob ({reason})"
    return None


def _pwnam_ok(state: MonitorState, msg: wire.PwnamRequest) -> str | None:
    if state.session_id is None:
        return "before key exchange"
    if not msg.user or len(msg.user) > MAX_USER_LEN or "\0" in msg.user:
        return "user name malformed"
    return None


def _method_allowed(method: str) -> Callable[[MonitorState, object], str | None]:
    """A request for ``method``: only once the user is named, and only if
    the method starts one of the AuthenticationMethods lists left."""
    def check(state: MonitorState, msg: object) -> str | None:
        reason = _user_named(state, msg)
        if reason is None and not state.method_lists.allows(method):
            return f"for {method}, which AuthenticationMethods does not allow now"
        return reason
    return check


_publickey_allowed = _method_allowed("publickey")
_password_allowed = _method_allowed("password")
_kbdint_allowed = _method_allowed("keyboard-interactive")
_hostbased_allowed = _method_allowed("hostbased")


def _password_ok(state: MonitorState, msg: wire.PasswordRequest) -> str | None:
    if len(msg.password) > MAX_PASSWORD_LEN:
        return "password oversized"
    return _password_allowed(state, msg)


def _kbdint_ok(state: MonitorState, msg: wire.KbdintRequest) -> str | None:
    # Answers to a conversation already started need no new permission.
    return _kbdint_allowed(state, msg) if msg.start else _user_named(state, msg)


def _verify_ok(state: MonitorState, msg: wire.KeyVerifyRequest) -> str | None:
    key = state.allowed_key
    if key is None or (msg.algorithm, msg.keyblob) != (key.algorithm, key.blob):
        return "for a key other than the one last allowed"
    return _publickey_allowed(state, msg)


def _hostbased_ok(state: MonitorState, msg: wire.HostbasedRequest) -> str | None:
    """A hostbased request: the method may be tried now, and the data the
    net-child says was signed belongs to this connection and this request."""
    reason = _hostbased_allowed(state, msg)
    if reason:
        return reason
    try:
        signed = parse_signed_hostbased(msg.signed_data)
    except ValueError as exc:
        return f"with malformed signed data: {exc}"
    return hostbased_binding_error(state, msg, signed)


def _handoff_ok(state: MonitorState, msg: wire.Handoff) -> str | None:
    if not state.authenticated:
        return "before authentication"
    if msg.state.session_id != state.session_id:
        return "for another session id"
    return None


def _moduli_ok(state: MonitorState, msg: wire.ModuliRequest) -> str | None:
    """Sizes in sshd's order and range: the net-child clamps them first, so
    anything else is a child that is not ours (mm_answer_moduli)."""
    return gex_request_error(msg.min_bits, msg.want_bits, msg.max_bits)


def _pty_ok(state: MonitorState, msg: wire.PtyRequest) -> str | None:
    if len(state.ptys) >= state.max_ptys:
        return f"beyond {state.max_ptys} ptys (MaxSessions)"
    return None


def _pty_cleanup_ok(state: MonitorState, msg: wire.PtyCleanupRequest) -> str | None:
    return None if msg.tty in state.ptys else f"{msg.tty} is not this session's pty"


def _tun_ok(state: MonitorState, msg: wire.TunRequest) -> str | None:
    """Only what sshd itself would try to open: a mode PermitTunnel admits,
    and the unit the key forces (the session process resolved "any")."""
    if not tunnel.mode_permitted(state.permit_tunnel, msg.mode):
        return f"for mode {msg.mode}, which PermitTunnel {state.permit_tunnel} does not allow"
    if msg.unit > tunnel.TUNID_ANY:
        return f"for unit {msg.unit}"
    if state.forced_tun is not None and msg.unit != state.forced_tun:
        return f"for unit {msg.unit}, but the key forces {state.forced_tun}"
    return None


def _banner_refusal_ok(state: MonitorState, msg: wire.BannerRefused) -> str | None:
    """Only one of sshd's refusals, with a text it could quote, and only
    before anything else happened (the identification comes first)."""
    if state.user is not None or state.session_id is not None:
        return "after the identification"
    try:
        banner.Refusal(msg.reason, msg.detail)
    except ValueError as exc:
        return str(exc)
    return None


#: The requests that count as an authentication attempt, those OpenSSH's
#: monitor flags MON_ISAUTH or MON_AUTHDECIDE (monitor.c, auth_attempted):
#: a password, a key asked about or verified, a keyboard-interactive
#: exchange, a hostbased signature.  The user lookup and "none" do not.
AUTH_ATTEMPTS = frozenset((wire.PasswordRequest, wire.KbdintRequest, wire.KeyAllowedRequest,
                           wire.KeyVerifyRequest, wire.HostbasedRequest))


REQUEST_TABLE: dict[Phase, dict[type, Rule]] = {
    Phase.PREAUTH: {
        wire.Log: Rule(),
        wire.BannerRefused: Rule(once=True, when=_banner_refusal_ok),
        wire.SignRequest: Rule(when=_sign_ok),
        wire.PwnamRequest: Rule(once=True, when=_pwnam_ok),
        wire.PasswordRequest: Rule(when=_password_ok),
        wire.KbdintRequest: Rule(when=_kbdint_ok),
        wire.KeyAllowedRequest: Rule(when=_publickey_allowed),
        wire.KeyVerifyRequest: Rule(when=_verify_ok),
        wire.HostbasedRequest: Rule(when=_hostbased_ok),
        wire.Handoff: Rule(once=True, when=_handoff_ok),
        wire.ModuliRequest: Rule(when=_moduli_ok),
    },
    Phase.POSTAUTH: {
        wire.Log: Rule(),
        wire.SignRequest: Rule(when=_postauth_sign_ok),
        wire.PtyRequest: Rule(when=_pty_ok),
        wire.PtyCleanupRequest: Rule(when=_pty_cleanup_ok),
        wire.ModuliRequest: Rule(when=_moduli_ok),  # a rekey by the session process
        wire.TunRequest: Rule(when=_tun_ok),
    },
}


def admit(state: MonitorState, msg: object) -> None:
    """Raise PolicyViolation unless ``msg`` may be answered now."""
    name = type(msg).__name__
    rule = REQUEST_TABLE[state.phase].get(type(msg))
    if rule is None:
        raise PolicyViolation(f"{name} not permitted in {state.phase.value}")
    if rule.once and msg.TYPE in state.answered:  # type: ignore[attr-defined]
        raise PolicyViolation(f"{name} repeated")
    reason = rule.when(state, msg)
    if reason:
        raise PolicyViolation(f"{name} {reason}")
    state.answered.add(msg.TYPE)  # type: ignore[attr-defined]


def bind_session_id(state: MonitorState, data: bytes) -> None:
    """The first signed exchange hash becomes the session id, for good."""
    if state.session_id is None:
        state.session_id = data


def _signed_header_error(state: MonitorState,
                         signed: SignedUserauth | SignedHostbased) -> str | None:
    """The fields every signed userauth request starts with: this
    connection's session id, USERAUTH_REQUEST, the user asked about, and
    the ssh-connection service."""
    if signed.session_id != state.session_id:
        return "signature over another session id"
    if signed.msg_type != SSH_MSG_USERAUTH_REQUEST:
        return f"signed message type {signed.msg_type}, not USERAUTH_REQUEST"
    requested = state.requested_user if state.requested_user is not None else state.user
    if signed.user != requested:
        return f"signed request names user {signed.user!r}"
    if signed.service != "ssh-connection":
        return f"signed request names service {signed.service!r}"
    return None


def userauth_binding_error(
    state: MonitorState, req: wire.KeyVerifyRequest, signed: SignedUserauth
) -> str | None:
    """Why a signed userauth request does not belong to this connection, or None.

    The monitor checks every field itself rather than trusting the child to
    have built the blob honestly.
    """
    reason = _signed_header_error(state, signed)
    if reason:
        return reason
    if signed.method not in ("publickey", HOSTBOUND_METHOD) or not signed.has_signature:
        return "signed request is not a publickey request with signature"
    if signed.method == HOSTBOUND_METHOD and (
            state.initial_host_key is None
            or signed.hostkey not in (state.initial_host_key, state.initial_host_cert or None)):
        return "signed publickey-hostbound request names a host key not of this key exchange"
    if signed.algorithm != req.algorithm or signed.keyblob != req.keyblob:
        return "signed request names another key or algorithm"
    return None


def hostbased_binding_error(
    state: MonitorState, req: wire.HostbasedRequest, signed: SignedHostbased
) -> str | None:
    """Why the signed data of a hostbased request does not belong to this
    connection and this request, or None (as userauth_binding_error)."""
    reason = _signed_header_error(state, signed)
    if reason:
        return reason
    if signed.method != "hostbased":
        return "signed request is not a hostbased request"
    if (signed.algorithm, signed.keyblob) != (req.algorithm, req.keyblob):
        return "signed request names another key or algorithm"
    if (signed.client_host, signed.client_user) != (req.client_host, req.client_user):
        return "signed request names another client host or user"
    return None
