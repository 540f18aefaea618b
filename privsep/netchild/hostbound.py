"""publickey-hostbound-v00@openssh.com in the net-child (OpenSSH PROTOCOL,
section 3.1; what ssh-agent destination constraints rely on).

The request is a publickey request with one more string, the server's host
key, which the signed data also ends with.  It is read here, checked against
the host key of this key exchange (the monitor checks again, from its own
record), and handed to paramiko's publickey code as a plain publickey
request; only the data to verify differs (``signed_data``)."""

from __future__ import annotations

import paramiko
from paramiko.common import cMSG_USERAUTH_REQUEST

from privsep.wire.userauth import HOSTBOUND_METHOD

#: What sshd 9.2 sends in EXT_INFO after the first NEWKEYS (kex_send_ext_info):
#: version 0 of the host-bound method.
EXT_INFO_NAME, EXT_INFO_VALUE = "publickey-hostbound@openssh.com", "0"


class HostboundRequest:
    """A parsed host-bound request: the plain publickey request paramiko
    handles, and the host key it names."""

    def __init__(self, m: paramiko.Message) -> None:
        self.user, self.service, self.method = m.get_text(), m.get_text(), m.get_text()
        has_signature = m.get_boolean()
        algorithm, keyblob, self.hostkey = m.get_text(), m.get_binary(), m.get_binary()
        plain = paramiko.Message()
        plain.add_string(self.user)
        plain.add_string(self.service)
        plain.add_string("publickey")
        plain.add_boolean(has_signature)
        plain.add_string(algorithm)
        plain.add_string(keyblob)
        if has_signature:
            plain.add_string(m.get_binary())
        self.as_publickey = paramiko.Message(plain.asbytes())


def is_hostbound(m: paramiko.Message) -> bool:
    """Whether a USERAUTH_REQUEST (read position at its start) is host-bound;
    the position is left where it was."""
    start = m.packet.tell()
    try:
        m.get_string()
        m.get_string()
        return m.get_string() == HOSTBOUND_METHOD.encode()
    finally:
        m.packet.seek(start)


def publickey_algorithm(m: paramiko.Message) -> tuple[str, str] | None:
    """(user, signature algorithm) of a publickey or host-bound request, None
    for other methods; the read position is left where it was."""
    start = m.packet.tell()
    try:
        user, _service, method = m.get_text(), m.get_text(), m.get_text()
        if method not in ("publickey", HOSTBOUND_METHOD):
            return None
        m.get_boolean()
        return user, m.get_text()
    finally:
        m.packet.seek(start)


def signed_data(session_id: bytes, user: str, service: str, algorithm: str, keyblob: bytes,
                hostkey: bytes) -> bytes:
    """The data a client signs for a host-bound request."""
    m = paramiko.Message()
    m.add_string(session_id)
    m.add_byte(cMSG_USERAUTH_REQUEST)
    m.add_string(user)
    m.add_string(service)
    m.add_string(HOSTBOUND_METHOD)
    m.add_boolean(True)
    m.add_string(algorithm)
    m.add_string(keyblob)
    m.add_string(hostkey)
    return m.asbytes()
