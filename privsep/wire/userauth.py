"""The data a client signs for publickey authentication (RFC 4252 section 7),
decoded without judging it: pure, so that the monitor's request table
(monitor/policy.py) can check the session binding in tests without processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from privsep.wire.sshbuf import Reader


@dataclass(frozen=True)
class SignedUserauth:
    """The data a client signs for publickey auth (RFC 4252 section 7)."""

    session_id: bytes
    msg_type: int
    user: str
    service: str
    method: str
    has_signature: bool
    algorithm: str
    keyblob: bytes


def parse_signed_userauth(data: bytes) -> SignedUserauth:
    """Decode the data a client signs for publickey authentication.

    Layout: string session id, byte message type, string user, string
    service, string method, boolean "has signature", string algorithm, string
    key blob.  Only decoding happens here; whether the fields fit this
    connection is the monitor's decision (monitor/policy.py).  Raises
    ValueError on truncation, a length running past the end, trailing bytes,
    or names that are not UTF-8 (or contain NUL).
    """
    r = Reader(data)
    signed = SignedUserauth(
        session_id=r.string(),
        msg_type=r.byte(),
        user=r.name("user"),
        service=r.name("service"),
        method=r.name("method"),
        has_signature=r.boolean(),
        algorithm=r.name("algorithm"),
        keyblob=r.string(),
    )
    r.end()
    return signed
