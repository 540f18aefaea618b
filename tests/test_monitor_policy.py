"""The monitor's request table (privsep/monitor/policy.py): pure tests.

Each rule of docs/DESIGN.md's "The monitor protocol" as the table states it:
what is permitted in which phase, once-only requests, requests that need an
earlier step, and the session binding of a signed userauth request.  The
state is built by hand, as the monitor would have set it from its own
decisions.
"""

from __future__ import annotations

import dataclasses

import pytest

from privsep.wire import messages as wire
from privsep.wire.userauth import SignedUserauth
from privsep.monitor.policy import (
    MAX_USER_LEN, AllowedKey, MonitorState, Phase, PolicyViolation, admit, bind_session_id,
    userauth_binding_error,
)

SID = bytes(range(32))
ALG = "ssh-ed25519"
BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))
OTHER_BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(1, 33))

HANDOFF = wire.Handoff(wire.TransportState(
    session_id=SID, local_version="SSH-2.0-a", remote_version="SSH-2.0-b",
    strict_kex=True, client_ext_info=False,
    inbound=wire.DirectionState("aes256-ctr", b"k", b"i", 0, b"", "hmac-sha2-256", b"m", 3, 3, 3),
    outbound=wire.DirectionState("aes256-ctr", b"k", b"i", 0, b"", "hmac-sha2-256", b"m", 4, 4, 4),
    pending=b"",
))


def after_kex() -> MonitorState:
    state = MonitorState()
    bind_session_id(state, SID)
    return state


def user_named(name: str = "alice") -> MonitorState:
    state = after_kex()
    admit(state, wire.PwnamRequest(name))
    state.user, state.user_valid = name, True
    return state


def authenticated() -> MonitorState:
    state = user_named()
    state.allowed_key = AllowedKey(ALG, BLOB)
    state.authenticated = True
    return state


def postauth() -> MonitorState:
    state = authenticated()
    admit(state, HANDOFF)
    state.phase = Phase.POSTAUTH
    return state


def refused(state: MonitorState, msg: object, match: str) -> None:
    with pytest.raises(PolicyViolation, match=match):
        admit(state, msg)


# --- signing: only exchange hashes, first one is the session id -----------------


@pytest.mark.parametrize("size", sorted(wire.HASH_SIZES))
@pytest.mark.parametrize("make_state", [MonitorState, user_named, authenticated, postauth])
def test_sign_hash_sized_data(size, make_state):
    assert size in (20, 32, 48, 64)
    admit(make_state(), wire.SignRequest(ALG, bytes(size)))


@pytest.mark.parametrize("size", [0, 1, 19, 21, 31, 33, 47, 49, 63, 65, 100, 1000])
@pytest.mark.parametrize("make_state", [MonitorState, user_named, postauth])
def test_sign_other_sizes_refused(size, make_state):
    refused(make_state(), wire.SignRequest(ALG, bytes(size)),
            f"SignRequest data of {size} bytes is not an exchange hash")


def test_hash_sizes_are_exactly_the_sha_sizes():
    assert wire.HASH_SIZES == {20, 32, 48, 64}


def test_first_sign_fixes_session_id():
    state = MonitorState()
    assert state.session_id is None
    first, second, third = b"\x01" * 32, b"\x02" * 32, b"\x03" * 64
    bind_session_id(state, first)
    assert state.session_id == first
    # Rekeys sign new exchange hashes; the session id stays the first.
    bind_session_id(state, second)
    bind_session_id(state, third)
    assert state.session_id == first


def test_repeated_sign_is_permitted_for_rekey():
    state = after_kex()
    for _ in range(3):
        admit(state, wire.SignRequest(ALG, bytes(32)))
    assert state.session_id == SID


# --- user lookup ---------------------------------------------------------------


def test_pwnam_before_key_exchange_refused():
    refused(MonitorState(), wire.PwnamRequest("alice"), "PwnamRequest before key exchange")


def test_pwnam_twice_refused():
    state = after_kex()
    admit(state, wire.PwnamRequest("alice"))
    refused(state, wire.PwnamRequest("alice"), "PwnamRequest repeated")
    refused(state, wire.PwnamRequest("root"), "PwnamRequest repeated")


def test_refused_pwnam_does_not_use_up_the_once():
    state = MonitorState()
    refused(state, wire.PwnamRequest("alice"), "before key exchange")
    bind_session_id(state, SID)
    admit(state, wire.PwnamRequest("alice"))


@pytest.mark.parametrize("name", ["", "x" * (MAX_USER_LEN + 1), "x" * 5000,
                                  "root\0", "\0", "al\0ice"])
def test_pwnam_malformed_name_refused(name):
    refused(after_kex(), wire.PwnamRequest(name), "PwnamRequest user name malformed")


def test_pwnam_longest_name_permitted():
    assert MAX_USER_LEN == 256
    admit(after_kex(), wire.PwnamRequest("x" * MAX_USER_LEN))


# --- password and key checks need a named user and no success yet -----------------


@pytest.mark.parametrize("msg", [wire.PasswordRequest(b"secret"),
                                 wire.KeyAllowedRequest(ALG, BLOB)], ids=lambda m: type(m).__name__)
def test_auth_requests_before_user_named_refused(msg):
    refused(MonitorState(), msg, "before the user was named")
    refused(after_kex(), msg, "before the user was named")


@pytest.mark.parametrize("msg", [wire.PasswordRequest(b"secret"),
                                 wire.KeyAllowedRequest(ALG, BLOB)], ids=lambda m: type(m).__name__)
def test_auth_requests_after_user_named_permitted_repeatedly(msg):
    state = user_named()
    for _ in range(3):  # several attempts are the monitor's MaxAuthTries business
        admit(state, msg)


@pytest.mark.parametrize("msg", [wire.PasswordRequest(b"secret"),
                                 wire.KeyAllowedRequest(ALG, BLOB),
                                 wire.KeyVerifyRequest(ALG, BLOB, b"data", b"sig")],
                         ids=lambda m: type(m).__name__)
def test_auth_requests_after_authenticated_refused(msg):
    refused(authenticated(), msg, "after authentication succeeded")


def test_oversized_password_refused():
    refused(user_named(), wire.PasswordRequest(b"p" * 1025), "password oversized")
    admit(user_named(), wire.PasswordRequest(b"p" * 1024))


def test_key_verify_for_key_never_allowed_refused():
    state = user_named()
    refused(state, wire.KeyVerifyRequest(ALG, BLOB, b"data", b"sig"), "for a key other than the one last allowed")
    state.allowed_key = AllowedKey(ALG, BLOB)
    # Same key under another algorithm name, or another key: still never allowed.
    refused(state, wire.KeyVerifyRequest("ssh-rsa", BLOB, b"d", b"s"), "for a key other than the one last allowed")
    refused(state, wire.KeyVerifyRequest(ALG, OTHER_BLOB, b"d", b"s"), "for a key other than the one last allowed")
    admit(state, wire.KeyVerifyRequest(ALG, BLOB, b"data", b"sig"))


# --- hand-off -------------------------------------------------------------------


@pytest.mark.parametrize("make_state", [MonitorState, after_kex, user_named])
def test_handoff_before_authenticated_refused(make_state):
    refused(make_state(), HANDOFF, "Handoff before authentication")


def test_handoff_with_allowed_key_but_no_verify_refused():
    state = user_named()
    state.allowed_key = AllowedKey(ALG, BLOB)
    refused(state, HANDOFF, "Handoff before authentication")


def test_handoff_once():
    state = authenticated()
    admit(state, HANDOFF)
    refused(state, HANDOFF, "Handoff repeated")


# --- phases ---------------------------------------------------------------------


PTY_REQUEST = wire.PtyRequest("xterm", 80, 24, 0, 0)


@pytest.mark.parametrize("make_state", [MonitorState, user_named, authenticated])
def test_postauth_requests_refused_in_preauth(make_state):
    refused(make_state(), PTY_REQUEST, "PtyRequest not permitted in preauth")
    refused(make_state(), wire.PtyCleanupRequest("/dev/pts/0"),
            "PtyCleanupRequest not permitted in preauth")


@pytest.mark.parametrize("msg", [
    wire.PasswordRequest(b"secret"), wire.PwnamRequest("alice"), HANDOFF,
    wire.KeyAllowedRequest(ALG, BLOB), wire.KeyVerifyRequest(ALG, BLOB, b"d", b"s"),
], ids=lambda m: type(m).__name__)
def test_preauth_requests_refused_in_postauth(msg):
    refused(postauth(), msg, f"{type(msg).__name__} not permitted in postauth")


@pytest.mark.parametrize("msg", [
    wire.SignAnswer(b""), wire.PwnamAnswer(True), wire.PasswordAnswer(True),
    wire.KeyAllowedAnswer(True), wire.KeyVerifyAnswer(True), wire.PtyAnswer("/dev/pts/0"),
    wire.PtyCleanupAnswer(True), wire.TunAnswer("tun6"), wire.TunRefused("no"),
], ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("make_state", [MonitorState, user_named, postauth])
def test_answers_are_never_requests(msg, make_state):
    with pytest.raises(PolicyViolation, match="not permitted"):
        admit(make_state(), msg)


def test_postauth_pty_and_log_permitted():
    state = postauth()
    admit(state, PTY_REQUEST)
    admit(state, PTY_REQUEST)  # several sessions may each want a pty
    admit(state, wire.Log(20, b"hello"))
    admit(state, wire.SignRequest(ALG, bytes(64)))


def test_pty_cleanup_only_of_allocated_tty():
    state = postauth()
    refused(state, wire.PtyCleanupRequest("/dev/pts/3"), "/dev/pts/3 is not this session's pty")
    state.ptys.add("/dev/pts/3")
    refused(state, wire.PtyCleanupRequest("/dev/pts/4"), "/dev/pts/4 is not this session's pty")
    refused(state, wire.PtyCleanupRequest("/dev/tty1"), "not this session's pty")
    admit(state, wire.PtyCleanupRequest("/dev/pts/3"))


def test_tun_only_as_permit_tunnel_and_the_key_allow():
    """The session process may ask for a device only where sshd would open
    one: a mode PermitTunnel allows, the unit tunnel="N" forces."""
    refused(user_named("alice"), wire.TunRequest(1, 6), "TunRequest not permitted in preauth")
    state = postauth()
    refused(state, wire.TunRequest(1, 6), "PermitTunnel no does not allow")
    state.permit_tunnel = "ethernet"
    refused(state, wire.TunRequest(1, 6), "mode 1, which PermitTunnel ethernet")
    admit(state, wire.TunRequest(2, 6))
    state.permit_tunnel = "yes"
    refused(state, wire.TunRequest(3, 6), "mode 3")
    refused(state, wire.TunRequest(1, 2**32), "for unit 4294967296")
    admit(state, wire.TunRequest(1, 0x7FFFFFFF))
    state.forced_tun = 7
    refused(state, wire.TunRequest(1, 6), "but the key forces 7")
    refused(state, wire.TunRequest(1, 0x7FFFFFFF), "but the key forces 7")
    admit(state, wire.TunRequest(1, 7))


# --- the signed userauth request must belong to this connection -------------------


def bound_state() -> MonitorState:
    state = user_named("alice")
    state.allowed_key = AllowedKey(ALG, BLOB)
    return state


REQ = wire.KeyVerifyRequest(ALG, BLOB, b"(signed data)", b"(signature)")
GOOD = SignedUserauth(session_id=SID, msg_type=50, user="alice", service="ssh-connection",
                      method="publickey", has_signature=True, algorithm=ALG, keyblob=BLOB)


def test_binding_correct_blob_is_none():
    assert userauth_binding_error(bound_state(), REQ, GOOD) is None


@pytest.mark.parametrize("change,reason", [
    (dict(session_id=b"\x02" * 32), "signature over another session id"),
    (dict(session_id=SID[:20]), "signature over another session id"),
    (dict(session_id=b""), "signature over another session id"),
    (dict(msg_type=51), "signed message type 51, not USERAUTH_REQUEST"),
    (dict(msg_type=0), "signed message type 0"),
    (dict(user="root"), "signed request names user 'root'"),
    (dict(user="Alice"), "signed request names user 'Alice'"),
    (dict(user=""), "signed request names user ''"),
    (dict(service="ssh-userauth"), "signed request names service 'ssh-userauth'"),
    (dict(service=""), "signed request names service ''"),
    (dict(method="password"), "not a publickey request with signature"),
    (dict(method="hostbased"), "not a publickey request with signature"),
    (dict(has_signature=False), "not a publickey request with signature"),
    (dict(algorithm="rsa-sha2-256"), "another key or algorithm"),
    (dict(algorithm="ssh-rsa"), "another key or algorithm"),
    (dict(keyblob=OTHER_BLOB), "another key or algorithm"),
    (dict(keyblob=b""), "another key or algorithm"),
], ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_binding_each_field(change, reason):
    signed = dataclasses.replace(GOOD, **change)
    error = userauth_binding_error(bound_state(), REQ, signed)
    assert error is not None
    assert reason in error


def test_binding_blob_must_match_the_request_not_just_an_allowed_key():
    """The blob names key A, the request key B: refused even if both allowed."""
    state = bound_state()
    state.allowed_key = AllowedKey(ALG, OTHER_BLOB)
    req = wire.KeyVerifyRequest(ALG, OTHER_BLOB, b"", b"")
    assert "another key or algorithm" in userauth_binding_error(state, req, GOOD)


def test_binding_without_session_id_refuses_everything():
    """Before any signature the monitor has no session id: nothing binds."""
    state = bound_state()
    state.session_id = None
    assert userauth_binding_error(state, REQ, GOOD) == "signature over another session id"


def test_binding_uses_first_session_id_after_rekey():
    state = bound_state()
    bind_session_id(state, b"\x09" * 32)  # a rekey's exchange hash
    assert userauth_binding_error(state, REQ, GOOD) is None
    rekeyed = dataclasses.replace(GOOD, session_id=b"\x09" * 32)
    assert userauth_binding_error(state, REQ, rekeyed) == "signature over another session id"


def test_handoff_for_another_session_id_refused() -> None:
    from privsep.monitor.policy import MonitorState, PolicyViolation, admit
    from privsep.wire import messages as wire
    state = MonitorState(session_id=b"s" * 32, user="alice", user_valid=True, authenticated=True)
    direction = wire.DirectionState("aes128-ctr", b"k" * 16, b"i" * 16, 0, b"", "hmac-sha2-256",
                                    b"m" * 32, 3, 3, 300)
    forged = wire.TransportState(b"x" * 32, "SSH-2.0-a", "SSH-2.0-b", True, True,
                                 direction, direction, b"")
    import pytest
    with pytest.raises(PolicyViolation, match="another session id"):
        admit(state, wire.Handoff(forged))
    admit(state, wire.Handoff(wire.TransportState(b"s" * 32, "SSH-2.0-a", "SSH-2.0-b", True, True,
                                                  direction, direction, b"")))


# --- hostkeys-prove-00@openssh.com: post-auth proofs of our own host keys ---------

from privsep.wire import hostkey_blobs as hostkeys  # noqa: E402

RSA_BLOB = b"\x00\x00\x00\x07ssh-rsa" + b"\x00\x00\x00\x03\x01\x00\x01" + b"\x00\x00\x00\x05\x00\xc0\xff\xee\x01"


def with_host_keys(state: MonitorState) -> MonitorState:
    state.host_key_blobs = frozenset({BLOB, RSA_BLOB})
    return state


def test_hostkeys_prove_blob_round_trip():
    data = hostkeys.hostkeys_prove_data(SID, BLOB)
    assert hostkeys.parse_hostkeys_prove(data) == (SID, BLOB)


@pytest.mark.parametrize("data", [
    b"",
    b"\x00\x00\x00\x1dhostkeys-prove-00@openssh.com",
    hostkeys.hostkeys_prove_data(SID, BLOB) + b"x",
    hostkeys.hostkeys_prove_data(SID, BLOB)[:-1],
    hostkeys.hostkeys_prove_data(SID, b""),
    hostkeys.hostkeys_prove_data(b"", BLOB),
    b"\x00\x00\x00\x1dhostkeys-prove-01@openssh.com" + hostkeys.hostkeys_prove_data(SID, BLOB)[33:],
    b"\xff\xff\xff\xff" + bytes(40),
])
def test_hostkeys_prove_parser_refuses_malformed(data):
    with pytest.raises(ValueError):
        hostkeys.parse_hostkeys_prove(data)


@pytest.mark.parametrize("blob, keytype", [
    (BLOB, "ssh-ed25519"), (RSA_BLOB, "ssh-rsa"), (b"\x00\x00\x00\x00", ""),
    (b"", ""), (b"\x00\x00\x00", ""), (b"\x00\x00\x00\x08ssh-rsa", ""),
    (b"\x00\x00\x00\x02\xc3\xa9", ""),  # not ASCII
])
def test_blob_key_type(blob, keytype):
    assert hostkeys.blob_key_type(blob) == keytype


def test_postauth_signs_prove_of_our_key():
    state = with_host_keys(postauth())
    admit(state, wire.SignRequest(ALG, hostkeys.hostkeys_prove_data(SID, BLOB)))
    admit(state, wire.SignRequest("rsa-sha2-512", hostkeys.hostkeys_prove_data(SID, RSA_BLOB)))
    admit(state, wire.SignRequest("rsa-sha2-256", hostkeys.hostkeys_prove_data(SID, RSA_BLOB)))


@pytest.mark.parametrize("make_state", [MonitorState, user_named, authenticated])
def test_preauth_never_signs_prove(make_state):
    state = with_host_keys(make_state())
    bind_session_id(state, SID)
    refused(state, wire.SignRequest(ALG, hostkeys.hostkeys_prove_data(SID, BLOB)),
            "not an exchange hash")


def test_prove_for_another_session_refused():
    state = with_host_keys(postauth())
    refused(state, wire.SignRequest(ALG, hostkeys.hostkeys_prove_data(bytes(32), BLOB)),
            "another session id")


def test_prove_of_a_foreign_key_refused():
    state = with_host_keys(postauth())
    refused(state, wire.SignRequest(ALG, hostkeys.hostkeys_prove_data(SID, OTHER_BLOB)),
            "not ours")


@pytest.mark.parametrize("algorithm,blob", [
    ("ssh-ed25519", RSA_BLOB), ("rsa-sha2-512", BLOB), ("ssh-rsa", RSA_BLOB),
    ("ecdsa-sha2-nistp256", BLOB),
])
def test_prove_with_the_wrong_algorithm_refused(algorithm, blob):
    state = with_host_keys(postauth())
    refused(state, wire.SignRequest(algorithm, hostkeys.hostkeys_prove_data(SID, blob)),
            "is not the named key's")


def test_other_postauth_data_still_refused():
    state = with_host_keys(postauth())
    refused(state, wire.SignRequest(ALG, b"\x00\x00\x00\x05hello" + bytes(40)),
            "not an exchange hash")


# --- one key state (issue 11.3): each KeyAllowedRequest resets it -------------------------

def test_verify_only_the_key_allowed_last() -> None:
    """Allowed R, then asked about U: a signature by R is no longer admitted,
    so R's options cannot ride on U's approval or the other way round."""
    state = user_named()
    state.allowed_key = AllowedKey(ALG, BLOB)
    admit(state, wire.KeyVerifyRequest(ALG, BLOB, b"d", b"s"))
    state.allowed_key = AllowedKey(ALG, OTHER_BLOB)  # what answer_key_allowed leaves
    refused(state, wire.KeyVerifyRequest(ALG, BLOB, b"d", b"s"),
            "for a key other than the one last allowed")
    state.allowed_key = None  # a key refused last resets it too
    refused(state, wire.KeyVerifyRequest(ALG, OTHER_BLOB, b"d", b"s"),
            "for a key other than the one last allowed")


# --- ptys bounded by MaxSessions (issue 11.6) -----------------------------------------------

def test_ptys_beyond_max_sessions_are_refused() -> None:
    state = postauth()
    state.max_ptys = 2
    for tty in ("/dev/pts/7", "/dev/pts/8"):
        admit(state, PTY_REQUEST)
        state.ptys.add(tty)
    refused(state, PTY_REQUEST, r"beyond 2 ptys \(MaxSessions\)")
    state.ptys.discard("/dev/pts/7")
    admit(state, PTY_REQUEST)


# --- group exchange: the monitor chooses the group (MONITOR_REQ_MODULI) ---------


@pytest.mark.parametrize("make_state", [MonitorState, after_kex, user_named, postauth])
def test_moduli_permitted_in_both_phases(make_state):
    """Before login (the first exchange, before any session id) and after
    (the session process rekeys), as often as key exchanges come."""
    state = make_state()
    admit(state, wire.ModuliRequest(2048, 3072, 8192))
    admit(state, wire.ModuliRequest(2048, 2048, 2048))
    admit(state, wire.ModuliRequest(8192, 8192, 8192))


@pytest.mark.parametrize("sizes", [
    (3072, 2048, 8192), (2048, 8192, 4096), (4096, 3072, 2048),  # out of order
    (1024, 2048, 8192), (2048, 3072, 16384), (0, 0, 0), (2048, 2048, 2**64 - 1),  # out of range
])
@pytest.mark.parametrize("make_state", [MonitorState, postauth])
def test_moduli_bad_sizes_refused(make_state, sizes):
    refused(make_state(), wire.ModuliRequest(*sizes), "ModuliRequest bad parameters")


# --- publickey-hostbound-v00@openssh.com: the host key of this key exchange ------

HOSTKEY = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + b"\x07" * 32
HOSTBOUND = dataclasses.replace(GOOD, method="publickey-hostbound-v00@openssh.com",
                                hostkey=HOSTKEY)


def test_hostbound_naming_our_initial_host_key_binds():
    state = bound_state()
    state.initial_host_key = HOSTKEY
    assert userauth_binding_error(state, REQ, HOSTBOUND) is None


@pytest.mark.parametrize("initial", [None, OTHER_BLOB])
@pytest.mark.parametrize("named", [HOSTKEY, b"", OTHER_BLOB])
def test_hostbound_naming_another_host_key_refused(initial, named):
    state = bound_state()
    state.initial_host_key = initial
    if initial == named:
        return
    signed = dataclasses.replace(HOSTBOUND, hostkey=named)
    assert "names a host key not of this key exchange" in userauth_binding_error(state, REQ, signed)
