"""A field longer than the message that carries it (a string whose length
field exceeds what follows), or trailing bytes where sshd calls
sshpkt_get_end: sshd's sshbuf refuses the message and sshd ends the
connection with one line; paramiko's Message would read zero bytes instead.
Each case runs against both daemons side by side, and the lines are
compared with the ports and the user's name taken out
(privsep/child/strict_message.py, privsep/session/parse_fatal.py)."""

from __future__ import annotations

import re
import secrets
import socket
import struct
import time
from pathlib import Path

import paramiko
import pytest
from paramiko.common import cMSG_CHANNEL_DATA, cMSG_CHANNEL_REQUEST

from tests.daemon import Server, ssh, wait_until
from tests.session_util import CLIENT_CIPHERS, forcing, paramiko_client


def _send_raw(transport: paramiko.Transport, *parts: bytes) -> None:
    """A message of the given bytes, as they are: no field re-encoded."""
    m = paramiko.Message()
    for part in parts:
        m.add_bytes(part)
    transport._send_user_message(m)


def _ended(transport: paramiko.Transport, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while transport.is_active() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not transport.is_active()


def _line_for(server: Server, start: int, port: int, pattern: str) -> str:
    """The one log line after offset ``start`` matching ``pattern`` and
    naming our port (or no port: sshd's fatal() names none), with the port
    written P and the user U (the comparison's form)."""
    def found() -> list[str]:
        return [line for line in server.log_text()[start:].splitlines()
                if re.search(pattern, line) and (f"port {port}" in line or " port " not in line)]
    wait_until(found, timeout=15)
    lines = found()
    assert len(lines) == 1, (server.kind, lines, server.log_text()[start:])
    return re.sub(r"port \d+", "port P", re.sub(r"user \S+", "user U", lines[0]))


def _bystander_ok(server: Server, make_user) -> None:
    assert server.process.poll() is None, "the listener died"
    other = make_user(prefix="sfby")
    assert ssh(server, other, "echo alive").stdout == b"alive\n"


# --- after login: CHANNEL_DATA -------------------------------------------------------------

@pytest.mark.parametrize("cipher", ["chacha20-poly1305", "aes128-ctr-hmac"])
@pytest.mark.parametrize("shape,error", [
    ("short", "incomplete message"),
    ("trailing", "unexpected bytes remain after decoding"),
])
def test_channel_data_with_a_wrong_length(privsep_session_server: Server,
                                          openssh_session_server: Server, user, make_user,
                                          cipher: str, shape: str, error: str) -> None:
    """CHANNEL_DATA whose length field says 100 with 3 bytes after it
    (short), or 3 with 6 after it (trailing): sshd's channel_input_data
    fatal, the connection ends, the program gets nothing.  chacha20 goes
    through the session's direct path (which leaves such a packet to the
    Message), the MAC-then-encrypt one through paramiko's read_message."""
    lines = {}
    for server in (privsep_session_server, openssh_session_server):
        target = Path(f"/tmp/short-fields-{secrets.token_hex(4)}")
        start = len(server.log_text())
        client = paramiko_client(server, user, **forcing(*CLIENT_CIPHERS[cipher]))
        try:
            transport = client.get_transport()
            port = transport.sock.getsockname()[1]
            chan = transport.open_session()
            chan.exec_command(f"cat > {target}")
            wait_until(target.exists, timeout=10)
            length, data = (100, b"abc") if shape == "short" else (3, b"abcXYZ")
            _send_raw(transport, cMSG_CHANNEL_DATA, struct.pack(">II", chan.remote_chanid, length),
                      data)
            assert _ended(transport), f"{server.kind} kept the connection"
        finally:
            client.close()
        lines[server.kind] = _line_for(server, start, port, rf"channel_input_data: .*{error}")
        time.sleep(0.5)  # cat, hung up, has written what it was given
        assert target.read_bytes() == b"", f"{server.kind} delivered {target.read_bytes()!r}"
        target.unlink()
        assert "Traceback" not in server.log_text()
    assert lines["privsep"] == lines["openssh"]
    assert lines["privsep"] == f"channel_input_data: channel 0: get data: {error}"
    _bystander_ok(privsep_session_server, make_user)


# --- after login: channel requests ----------------------------------------------------------

_SHORT = "incomplete message"
_TRAILING = "unexpected bytes remain after decoding"
_INVALID = "invalid format"


@pytest.mark.parametrize("kind,fields,function,error", [
    # exec whose command's length field says 100, with "true" after it
    ("exec", struct.pack(">I", 100) + b"true", "session_exec_req", _SHORT),
    # pty-req without its pixel sizes and modes
    ("pty-req", struct.pack(">I", 5) + b"xterm" + struct.pack(">II", 80, 24), "session_pty_req",
     _SHORT),
    # subsystem whose name's length field runs past the end
    ("subsystem", struct.pack(">I", 9) + b"sftp", "session_subsystem_req", _SHORT),
    # exec with two bytes after its command (sshd's sshpkt_get_end)
    ("exec", struct.pack(">I", 4) + b"trueXY", "session_exec_req", _TRAILING),
    # the fields every request has: the want-reply byte missing
    ("exec", b"", "server_input_channel_req", _SHORT),
    # a NUL inside a string sshd reads as a C string (sshbuf_get_cstring)
    ("exec", struct.pack(">I", 5) + b"tr\0ue", "session_exec_req", _INVALID),
    ("env", struct.pack(">I", 4) + b"LANG" + struct.pack(">I", 3) + b"C\0x", "session_env_req",
     _INVALID),
])
def test_channel_request_with_a_short_field(privsep_session_server: Server,
                                            openssh_session_server: Server, user, make_user,
                                            kind: str, fields: bytes, function: str,
                                            error: str) -> None:
    """A session request one of whose fields runs past the end, or with
    bytes after its last: sshd's session_*_req (or server_input_channel_req)
    sshpkt_fatal, "<function>: parse packet: Connection from user U A port
    P: <error>"; nothing runs."""
    lines = {}
    for server in (privsep_session_server, openssh_session_server):
        start = len(server.log_text())
        client = paramiko_client(server, user)
        try:
            transport = client.get_transport()
            port = transport.sock.getsockname()[1]
            chan = transport.open_session()
            name = kind.encode()
            _send_raw(transport, cMSG_CHANNEL_REQUEST,
                      struct.pack(">I", chan.remote_chanid), struct.pack(">I", len(name)), name,
                      b"\x01" if fields else b"", fields)
            assert _ended(transport), f"{server.kind} kept the connection"
        finally:
            client.close()
        lines[server.kind] = _line_for(server, start, port, rf"{function}: parse packet")
        assert "Traceback" not in server.log_text()
    assert lines["privsep"] == lines["openssh"]
    assert lines["privsep"] == (f"{function}: parse packet: Connection from user U 127.0.0.1 "
                                f"port P: {error}")
    _bystander_ok(privsep_session_server, make_user)


def test_command_ending_in_a_nul(privsep_session_server: Server,
                                 openssh_session_server: Server, user) -> None:
    """sshbuf_get_cstring allows one NUL, as the string's last byte: the
    command "echo hi\\0" runs as "echo hi" under sshd, and here."""
    for server in (privsep_session_server, openssh_session_server):
        client = paramiko_client(server, user)
        try:
            chan = client.get_transport().open_session()
            chan.exec_command("echo hi\0")
            out = chan.makefile("rb").read()
            assert (out, chan.recv_exit_status()) == (b"hi\n", 0), server.kind
        finally:
            client.close()
        assert "Traceback" not in server.log_text()


# --- before authentication: USERAUTH_REQUEST ------------------------------------------------

def _truncated_userauth(server: Server) -> int:
    """A key exchange, the ssh-userauth service, then a USERAUTH_REQUEST
    whose user name's length field says 64 with "root" after it; our port."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    port = sock.getsockname()[1]
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=15)
        service = b"ssh-userauth"
        _send_raw(transport, bytes([paramiko.common.MSG_SERVICE_REQUEST]),
                  struct.pack(">I", len(service)), service)
        time.sleep(0.5)  # the SERVICE_ACCEPT: sshd reads USERAUTH_REQUEST only after it
        _send_raw(transport, bytes([paramiko.common.MSG_USERAUTH_REQUEST]),
                  struct.pack(">I", 64), b"root")
        assert _ended(transport), f"{server.kind} kept the connection"
    finally:
        transport.close()
    return port


def test_userauth_request_with_a_short_user_name(privsep_server: Server, openssh_server: Server,
                                                 make_user) -> None:
    """Before authentication: sshd's input_userauth_request returns the
    parse error to the dispatch, "ssh_dispatch_run_fatal: Connection from
    A port P: incomplete message [preauth]"; no user is looked up (no
    "Invalid user" with NULs), and the monitor sees a clean end."""
    lines = {}
    for server in (privsep_server, openssh_server):
        start = len(server.log_text())
        port = _truncated_userauth(server)
        lines[server.kind] = _line_for(server, start, port, r"ssh_dispatch_run_fatal: ")
        log = server.log_text()[start:]
        assert "Invalid user" not in log and "\x00" not in log and "\\000" not in log
        assert "Traceback" not in log
    assert lines["privsep"] == lines["openssh"]
    assert lines["privsep"] == ("ssh_dispatch_run_fatal: Connection from 127.0.0.1 port P: "
                                "incomplete message [preauth]")
    _bystander_ok(privsep_server, make_user)


# --- before authentication: the key and signature blobs of a publickey request -------------

def _blob_parts(user) -> tuple[paramiko.Ed25519Key, bytes]:
    key = paramiko.Ed25519Key.from_private_key_file(str(user.key_path))
    return key, key.asbytes()


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _publickey_outcome(server: Server, user, blobs, tries: int = 1) -> tuple[list[str], int]:
    """A key exchange and a "none" attempt, then ``tries`` publickey
    requests for the user's key whose key blob and signature blob
    ``blobs(session_id, key, blob)`` makes (the signature None for a
    query), each after the answer to the one before: the server's answers
    ("failure", "pk_ok", "success", and "ended" if it ended the
    connection), and our port."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    port = sock.getsockname()[1]
    transport = paramiko.Transport(sock)
    answers: list[str] = []
    try:
        transport.start_client(timeout=15)
        try:
            transport.auth_none(user.name)
        except paramiko.BadAuthenticationType:
            pass
        handler = transport.auth_handler
        handler._parse_userauth_failure = lambda m: answers.append("failure")
        handler._parse_userauth_success = lambda m: answers.append("success")
        handler._parse_userauth_info_request = lambda m: answers.append("pk_ok")  # 60 both
        key, blob = _blob_parts(user)
        keyblob, signature = blobs(transport.session_id, key, blob)
        head = [bytes([paramiko.common.MSG_USERAUTH_REQUEST]), _string(user.name.encode()),
                _string(b"ssh-connection"), _string(b"publickey"),
                bytes([signature is not None]), _string(b"ssh-ed25519"), _string(keyblob)]
        for attempt in range(1, tries + 1):
            if not transport.is_active():
                break
            _send_raw(transport, *head, *([] if signature is None else [_string(signature)]))
            wait_until(lambda: len(answers) >= attempt or not transport.is_active(), timeout=10)
        if tries > 1:  # the last answer may be the end
            time.sleep(0.5)
    finally:
        if not transport.is_active():
            answers.append("ended")
        transport.close()
    return answers, port


def _signed(session_id: bytes, key, keyblob: bytes, user_name: str) -> bytes:
    """The signature blob of a good publickey request for ``keyblob``."""
    data = (_string(session_id) + bytes([paramiko.common.MSG_USERAUTH_REQUEST])
            + _string(user_name.encode()) + _string(b"ssh-connection") + _string(b"publickey")
            + b"\x01" + _string(b"ssh-ed25519") + _string(keyblob))
    return key.sign_ssh_data(data, "ssh-ed25519").asbytes()


#: name -> (key blob, signature blob) from (session id, key, its blob, user name)
_BAD_BLOBS = {
    "key blob short": lambda sid, key, blob, name: (blob[:-1], None),
    "key blob with a byte after": lambda sid, key, blob, name: (blob + b"\0", None),
    "key blob's name short": lambda sid, key, blob, name: (struct.pack(">I", 64) + b"ssh-ed25519",
                                                           None),
    "key blob of an unknown type": lambda sid, key, blob, name: (
        _string(b"ssh-nosuchkey") + blob[15:], None),
    "RSA key blob short": lambda sid, key, blob, name: (
        _string(b"ssh-rsa") + _string(b"\x01\x00\x01") + struct.pack(">I", 257) + bytes(200),
        None),
    "signature short": lambda sid, key, blob, name: (blob, _signed(sid, key, blob, name)[:-1]),
    "signature with a byte after": lambda sid, key, blob, name: (
        blob, _signed(sid, key, blob, name) + b"\0"),
    "signature's name short": lambda sid, key, blob, name: (
        blob, struct.pack(">I", 64) + b"ssh-ed25519"),
}


@pytest.mark.parametrize("case,tries", [(case, 1) for case in _BAD_BLOBS]
                         + [("key blob short", 6), ("signature short", 6)])
def test_publickey_request_with_a_malformed_blob(privsep_server: Server, openssh_server: Server,
                                                 user, make_user, case: str, tries: int) -> None:
    """A publickey request whose key blob or signature blob runs short, has
    a byte after its last field, or names its type with a short string:
    sshd's sshkey_from_blob / sshkey_verify refuse it and the attempt
    fails with sshd's lines; paramiko's lenient Message would read zeros.
    Each counts as a failed try: six end the connection (MaxAuthTries 6).
    The answers and the lines match sshd's."""
    make = _BAD_BLOBS[case]
    seen = {}
    for server in (privsep_server, openssh_server):
        start = len(server.log_text())
        outcome, port = _publickey_outcome(
            server, user, lambda sid, key, blob: make(sid, key, blob, user.name), tries)
        time.sleep(0.5)
        log = server.log_text()[start:]
        assert "Traceback" not in log
        lines = [re.sub(r"port \d+", "port P", re.sub(r"SHA256:\S+", "SHA256:K", line))
                 for line in log.splitlines() if f"port {port}" in line or " port " not in line]
        seen[server.kind] = {"outcome": outcome, "lines": lines}
    assert seen["privsep"] == seen["openssh"], seen
    assert seen["privsep"]["outcome"] == ["failure"] * (tries - 1) + (
        ["ended"] if tries > 1 else ["failure"])
    _bystander_ok(privsep_server, make_user)
