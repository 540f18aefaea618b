"""The data a client signs for publickey authentication (RFC 4252 section 7),
decoded without judging it: pure, so that the monitor's request table
(monitor/policy.py) can check the session binding in tests without processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from privsep.wire.sshbuf import Reader


#: OpenSSH's host-bound publickey method (PROTOCOL, section 3.1): the signed
#: request also names the server's host key, which ssh-agent destination
#: constraints rely on.
HOSTBOUND_METHOD = "publickey-hostbound-v00@openssh.com"


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
    #: The server host key a publickey-hostbound request names (else empty).
    hostkey: bytes = b""


def parse_signed_userauth(data: bytes) -> SignedUserauth:
    """Decode the data a client signs for publickey authentication.

    Layout: string session id, byte message type, string user, string
    service, string method, boolean "has signature", string algorithm, string
    key blob, and for the host-bound method the server's host key blob.
    Only decoding happens here; whether the fields fit this
    connection is the monitor's decision (monitor/policy.py).  Raises
    ValueError on truncation, a length running past the end, trailing bytes,
    or names that are not UTF-8 (or contain NUL).
    """
    r = Reader(data)
    session_id, msg_type = r.string(), r.byte()
    user, service, method = r.name("user"), r.name("service"), r.name("method")
    has_signature, algorithm, keyblob = r.boolean(), r.name("algorithm"), r.string()
    hostkey = r.string() if method == HOSTBOUND_METHOD else b""
    r.end()
    return SignedUserauth(session_id, msg_type, user, service, method, has_signature, algorithm,
                          keyblob, hostkey)
