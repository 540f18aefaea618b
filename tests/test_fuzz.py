"""Mutated input never hurts (issue 12): a short seeded pass of tests/fuzz.py
against a live daemon, and one regression test for each crash the fuzzer
found, each replaying the message that caused it."""

from __future__ import annotations

import socket
import struct
import threading
import time

import paramiko
import pytest
from paramiko.message import Message

from tests.daemon import Server, wait_until
from tests.fuzz import FUZZ_CONFIG, LOG_MARKERS, AlwaysSeen, Fuzzer, report_line

#: inputs in the default run's pass: about a minute on a 2-core machine
SHORT_PASS = 3000


def test_short_seeded_fuzz_pass(server_with, make_user) -> None:
    """A few thousand mutated inputs at every stage, then: listener alive, a
    login works, no traceback, no leaked process, fd or utmp entry, and the
    bystander's session still answers."""
    server = server_with(*FUZZ_CONFIG)
    fuzzer = Fuzzer(server, make_user("fzz"), make_user("fzb"), seed=20261129, workers=10,
                    verbose=False)
    result = fuzzer.run(SHORT_PASS, max_seconds=75)
    print(report_line(result))
    assert result["inputs"] >= SHORT_PASS // 3, report_line(result)
    assert not result["failures"], "\n".join(result["failures"])


# --- regressions: each message that once crashed or hung a child -------------------

def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _string(data: bytes) -> bytes:
    return _u32(len(data)) + data


def _transport(server: Server, user=None) -> paramiko.Transport:
    t = paramiko.Transport(socket.create_connection(("127.0.0.1", server.port), timeout=10))
    t.channels_seen = AlwaysSeen()
    t.start_client(timeout=20)
    if user is not None:
        t.auth_publickey(user.name, paramiko.Ed25519Key.from_private_key_file(str(user.key_path)))
    return t


def _answers(t: paramiko.Transport, timeout: float = 5) -> bool:
    """A global request wanting a reply: answered (before login with a
    failure) within ``timeout`` by a daemon that is not stuck."""
    t.completion_event = threading.Event()
    m = Message()
    m.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
    m.add_string("keepalive@openssh.com")
    m.add_boolean(True)
    t._send_user_message(m)
    return t.completion_event.wait(timeout)


def _no_crash(server: Server) -> None:
    time.sleep(0.3)
    log = server.log_text()
    assert not [marker for marker in LOG_MARKERS if marker in log], log
    assert server.process.poll() is None


@pytest.mark.parametrize("logged_in", [False, True], ids=["preauth", "session"])
def test_debug_message_of_a_megabyte(server_with, user, logged_in: bool) -> None:
    """SSH2_MSG_DEBUG whose string says 1 MB - 1: paramiko padded it and
    escaped it byte by byte, quadratically; the child spun for hours."""
    server = server_with(*FUZZ_CONFIG)
    t = _transport(server, user if logged_in else None)
    try:
        t._send_user_message(Message(b"\x04\x00" + _u32((1 << 20) - 1) + b"x" * 16))
        assert _answers(t), "the child is stuck on a DEBUG message"
    finally:
        t.close()
    _no_crash(server)


def test_info_response_after_login(server_with, user) -> None:
    """USERAUTH_INFO_RESPONSE counting 2^32-1 answers after login: paramiko
    read them all (a core spinning, memory filling).  Now UNIMPLEMENTED, as
    from sshd, and the session goes on."""
    server = server_with(*FUZZ_CONFIG)
    t = _transport(server, user)
    try:
        t._send_user_message(Message(b"\x3d" + _u32(0xFFFFFFFF)))
        assert _answers(t), "the session process is stuck on an INFO_RESPONSE"
        assert t.is_active()
    finally:
        t.close()
    _no_crash(server)


@pytest.mark.parametrize("count", [0xFFFFFFFF, 1])
def test_info_response_without_a_question(server_with, count: int) -> None:
    """Before login, an INFO_RESPONSE no INFO_REQUEST asked for ends the
    connection with sshd's words, at once."""
    server = server_with(*FUZZ_CONFIG)
    t = _transport(server)
    port = t.sock.getsockname()[1]
    try:
        t._send_user_message(Message(b"\x3d" + _u32(count) + _string(b"x")))
        server.wait_for_log(f"ssh_dispatch_run_fatal: Connection from 127.0.0.1 port {port}: "
                            "input_userauth_info_response: no keyboard-interactive conversation",
                            timeout=10)
    finally:
        t.close()
    _no_crash(server)


@pytest.mark.parametrize("logged_in", [False, True], ids=["preauth", "session"])
def test_newkeys_outside_a_key_exchange(server_with, user, logged_in: bool) -> None:
    """A stray NEWKEYS: paramiko switched keys with a secret of None and died
    of a TypeError.  Now a protocol error with a clear line."""
    server = server_with(*FUZZ_CONFIG)
    t = _transport(server, user if logged_in else None)
    try:
        t._send_user_message(Message(b"\x15"))
        wait_until(lambda: not t.is_active(), timeout=10)  # the daemon ended it
    finally:
        t.close()
    if not logged_in:
        server.wait_for_log("kex protocol error: NEWKEYS outside a key exchange")
    _no_crash(server)


@pytest.mark.parametrize("logged_in", [False, True], ids=["preauth", "session"])
@pytest.mark.parametrize("ptype", [67, 128, 191])
def test_unknown_message_type(server_with, user, logged_in: bool, ptype: int) -> None:
    """A message type nobody handles: UNIMPLEMENTED, as from sshd, and the
    connection goes on (paramiko died of a KeyError looking up its name)."""
    server = server_with(*FUZZ_CONFIG)
    t = _transport(server, user if logged_in else None)
    try:
        t._send_user_message(Message(bytes([ptype]) + b"\x00" * 8))
        assert _answers(t)
        assert t.is_active()
    finally:
        t.close()
    _no_crash(server)


@pytest.mark.parametrize("logged_in", [False, True], ids=["preauth", "session"])
@pytest.mark.parametrize("ptype", [0, 192, 255])
def test_message_type_out_of_range(server_with, user, logged_in: bool, ptype: int) -> None:
    """A message type outside 1..191 (SSH2_MSG_MIN, SSH2_MSG_LOCAL_MIN):
    sshd's packet layer refuses it before any handler, with a DISCONNECT
    "Invalid ssh2 packet type: N" and "Protocol error"; the same from both
    daemons, side by side."""
    from tests.session_util import record_disconnect
    seen = {}
    for kind in ("privsep", "openssh"):
        server = server_with(*FUZZ_CONFIG, kind=kind)
        t = _transport(server, user if logged_in else None)
        received = record_disconnect(t)
        try:
            t._send_user_message(Message(bytes([ptype]) + b"\x00" * 8))
            wait_until(lambda: not t.is_active(), timeout=10)
        finally:
            t.close()
        log = server.wait_for_log(": Protocol error")
        assert not [marker for marker in LOG_MARKERS if marker in log], log
        seen[kind] = received
    assert seen["privsep"] == seen["openssh"] == [(2, f"Invalid ssh2 packet type: {ptype}", "")]


@pytest.mark.parametrize("logged_in", [False, True], ids=["preauth", "session"])
def test_ext_info_with_too_many_extensions(server_with, user, logged_in: bool) -> None:
    """EXT_INFO counting 2^32-1 extensions: ended as sshd ends it."""
    server = server_with(*FUZZ_CONFIG)
    t = _transport(server, user if logged_in else None)
    try:
        t._send_user_message(Message(b"\x07" + _u32(0xFFFFFFFF)))
        wait_until(lambda: not t.is_active(), timeout=10)  # the daemon ended it
    finally:
        t.close()
    _no_crash(server)


@pytest.mark.parametrize("name", [b"", b"a\x00b", b"u" * 300])
def test_malformed_user_name(server_with, name: bytes) -> None:
    """A user name the monitor refuses to look up (empty, with a NUL, over
    256 characters): the net-child ends the connection with a clear line;
    the monitor no longer sees it and takes its child for a hostile one."""
    server = server_with(*FUZZ_CONFIG)
    t = _transport(server)
    port = t.sock.getsockname()[1]
    try:
        t._send_user_message(Message(b"\x05" + _string(b"ssh-userauth")))
        t._send_user_message(Message(b"\x32" + _string(name) + _string(b"ssh-connection")
                                     + _string(b"none")))
        server.wait_for_log(f"ssh_dispatch_run_fatal: Connection from 127.0.0.1 port {port}: "
                            "invalid format (user name empty, too long or with a NUL)", timeout=10)
    finally:
        t.close()
    assert "fatal: monitor:" not in server.log_text()
    _no_crash(server)


@pytest.mark.parametrize("host", [b"a" * 64 + b".example", b"a\x00b"])
def test_direct_tcpip_to_a_name_getaddrinfo_refuses(server_with, user, host: bytes) -> None:
    """A direct-tcpip open to a name IDNA cannot encode: the connecting
    thread died with a traceback in the log and the open went unanswered.
    Now refused with "connect failed"."""
    server = server_with(*FUZZ_CONFIG)
    t = _transport(server, user)
    try:
        with pytest.raises(paramiko.ChannelException) as refused:
            t.open_channel("direct-tcpip", (host.decode("utf-8", "replace"), 22),
                           ("127.0.0.1", 5555), timeout=10)
        assert refused.value.code == paramiko.common.OPEN_FAILED_CONNECT_FAILED
        assert _answers(t)
    finally:
        t.close()
    _no_crash(server)
