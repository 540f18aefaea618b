"""publickey-hostbound-v00@openssh.com (issue 13, section 7): advertised in
EXT_INFO as sshd 9.2 advertises it, used by the stock client against both
daemons, and the monitor accepts a signature only when the signed request
names the host key of this connection's key exchange."""

from __future__ import annotations

import threading

import paramiko
import pytest
from paramiko.auth_handler import AuthHandler
from paramiko.common import cMSG_USERAUTH_REQUEST

from privsep.wire import userauth
from tests.daemon import ssh
from tests.test_hostile_child import (  # noqa: F401  (fixtures)
    NetChild, assert_refused, host_key_path, hostile, signed_verify, stranger_key, user_key,
)

METHOD = "publickey-hostbound-v00@openssh.com"


def hostbound_blob(session_id: bytes, user: str, keyblob: bytes, hostkey: bytes) -> bytes:
    m = paramiko.Message()
    m.add_string(session_id)
    m.add_byte(bytes([50]))
    for text in (user, "ssh-connection", METHOD):
        m.add_string(text)
    m.add_boolean(True)
    m.add_string("ssh-ed25519")
    m.add_string(keyblob)
    m.add_string(hostkey)
    return m.asbytes()


def test_parse_hostbound_blob():
    data = hostbound_blob(b"S" * 32, "alice", b"key", b"hostkey")
    signed = userauth.parse_signed_userauth(data)
    assert (signed.method, signed.keyblob, signed.hostkey) == (METHOD, b"key", b"hostkey")
    with pytest.raises(ValueError):  # the host key is not optional
        userauth.parse_signed_userauth(data[:-len(b"hostkey") - 4])


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_stock_client_uses_hostbound(server_with, user, kind: str) -> None:
    server = server_with(kind=kind)
    result = ssh(server, user, "echo bound", flags=["-vvv"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == b"bound\n"
    assert b"kex_input_ext_info: publickey-hostbound@openssh.com=<0>" in result.stderr
    assert f"sign_and_send_pubkey: using {METHOD} with ED25519".encode() in result.stderr
    assert "Accepted publickey for " + user.name in server.log_text()


def test_control_hostbound_naming_our_key_accepted(hostile, user, user_key):
    verdicts = []

    def steps(child: NetChild) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        blob = hostbound_blob(session_id, user.name, user_key.asbytes(),
                              child.host_public.asbytes())
        verdicts.append(child.verify(signed_verify(user_key, blob)))

    outcome = hostile(steps)
    assert verdicts == [True], str(outcome)
    assert f"Accepted publickey for {user.name}" in outcome.log


def test_hostbound_naming_another_host_key_refused(hostile, user, user_key, stranger_key):
    def steps(child: NetChild) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        blob = hostbound_blob(session_id, user.name, user_key.asbytes(), stranger_key.asbytes())
        child.attack(signed_verify(user_key, blob))

    assert_refused(hostile(steps),
                   "signed publickey-hostbound request names a host key not of this key exchange")


class HostboundClientAuth(AuthHandler):
    """paramiko's client publickey request, made host-bound, naming ``hostkey``."""

    hostkey = b""

    def _parse_service_accept(self, m):
        assert m.get_text() == "ssh-userauth"
        algorithm = self.private_key.get_name()
        keyblob = self.private_key.asbytes()
        blob = hostbound_blob(self.transport.session_id, self.username, keyblob, self.hostkey)
        request = paramiko.Message()
        request.add_byte(cMSG_USERAUTH_REQUEST)
        for text in (self.username, "ssh-connection", METHOD):
            request.add_string(text)
        request.add_boolean(True)
        request.add_string(algorithm)
        request.add_string(keyblob)
        request.add_string(self.hostkey)
        request.add_string(self.private_key.sign_ssh_data(blob, algorithm))
        self.transport._send_message(request)


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
@pytest.mark.parametrize("right_key", [True, False], ids=["our-host-key", "another-host-key"])
def test_hostbound_request_names_the_host_key(server_with, user, user_key, stranger_key,
                                              kind, right_key) -> None:
    server = server_with(kind=kind)
    transport = paramiko.Transport(("127.0.0.1", server.port))
    try:
        transport.start_client(timeout=20)
        handler = HostboundClientAuth(transport)
        handler.hostkey = (transport.get_remote_server_key().asbytes() if right_key
                           else stranger_key.asbytes())
        transport.auth_handler = handler
        event = threading.Event()
        handler.auth_publickey(user.name, user_key, event)
        if right_key:
            assert handler.wait_for_response(event) == []
            assert transport.is_authenticated()
        else:
            with pytest.raises(paramiko.SSHException):
                handler.wait_for_response(event)
            assert not transport.is_authenticated()
    finally:
        transport.close()
    if not right_key:
        line = f"userauth_pubkey: {METHOD} packet contained wrong host key"
        assert line in server.wait_for_log(line)


#: name -> the host key blob a host-bound request names, from the server's
_HOSTKEY_BLOBS = {
    "another host key": lambda ours, stranger: stranger,
    "host key blob short": lambda ours, stranger: ours[:-1],
    "host key blob with a byte after": lambda ours, stranger: ours + b"\0",
}


@pytest.mark.parametrize("case", _HOSTKEY_BLOBS)
def test_hostbound_host_key_blob_as_sshd(privsep_server, openssh_server, user, user_key,
                                         stranger_key, case: str) -> None:
    """A host-bound request naming another host key, or ours cut short or
    with a byte after: sshd parses the blob (sshkey_fromb) and compares
    it, and either way ends the connection with its fatal line, the same
    words here (the lines of the connection, ports written P)."""
    import re
    from tests.daemon import wait_until
    seen = {}
    for server in (privsep_server, openssh_server):
        start = len(server.log_text())
        transport = paramiko.Transport(("127.0.0.1", server.port))
        try:
            transport.start_client(timeout=20)
            port = transport.sock.getsockname()[1]
            handler = HostboundClientAuth(transport)
            handler.hostkey = _HOSTKEY_BLOBS[case](
                transport.get_remote_server_key().asbytes(), stranger_key.asbytes())
            transport.auth_handler = handler
            event = threading.Event()
            handler.auth_publickey(user.name, user_key, event)
            with pytest.raises(paramiko.SSHException):
                handler.wait_for_response(event)
            assert not transport.is_authenticated()
        finally:
            transport.close()
        wait_until(lambda: f"Connection from 127.0.0.1 port {port} on" in server.log_text()[start:]
                   and f"{METHOD}" in server.log_text()[start:], timeout=10)
        log = server.log_text()[start:]
        assert "Traceback" not in log
        seen[server.kind] = [re.sub(r"port \d+", "port P", line) for line in log.splitlines()
                             if f"port {port}" in line or " port " not in line]
    assert seen["privsep"] == seen["openssh"], seen
