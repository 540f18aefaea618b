"""The data a client signs for publickey and hostbased authentication
(RFC 4252 sections 7 and 9), decoded without judging it: pure, so that the monitor's request table
(monitor/policy.py) can check the session binding in tests without processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from privsep.wire.facts import SSH_MSG_USERAUTH_REQUEST
from privsep.wire.sshbuf import Reader, Writer


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


@dataclass(frozen=True)
class SignedHostbased:
    """The data a client signs for hostbased auth (RFC 4252 section 9)."""

    session_id: bytes
    msg_type: int
    user: str
    service: str
    method: str
    algorithm: str
    keyblob: bytes
    client_host: str
    client_user: str


def parse_signed_hostbased(data: bytes) -> SignedHostbased:
    """Decode the data a client signs for hostbased authentication.

    Layout: string session id, byte message type, string user, string
    service, string "hostbased", string algorithm, string host key blob,
    string client host name, string client user name (no "has signature"
    flag, unlike publickey).  Raises ValueError as parse_signed_userauth.
    """
    r = Reader(data)
    signed = SignedHostbased(
        session_id=r.string(),
        msg_type=r.byte(),
        user=r.name("user"),
        service=r.name("service"),
        method=r.name("method"),
        algorithm=r.name("algorithm"),
        keyblob=r.string(),
        client_host=r.name("client host"),
        client_user=r.name("client user"),
    )
    r.end()
    return signed


def hostbased_signed_data(session_id: bytes, user: str, algorithm: str, keyblob: bytes,
                          client_host: str, client_user: str) -> bytes:
    """The data a hostbased signature must cover, as sshd rebuilds it from
    its own session id and user (service ssh-connection)."""
    return bytes(Writer().string(session_id).byte(SSH_MSG_USERAUTH_REQUEST).text(user)
                 .text("ssh-connection").text("hostbased").text(algorithm).string(keyblob)
                 .text(client_host).text(client_user))
