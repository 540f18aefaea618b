"""Session requests with the real client (and paramiko where the OpenSSH
client has no way to send them), side by side with Debian's sshd."""

from __future__ import annotations

import re
import time

import paramiko
import pytest

from privsep.session.pump import BULK_PIPE_SIZE
from tests.daemon import Server, ssh, ssh_background, wait_until
from tests.session_util import (CLIENT_CIPHERS, channel_request, closed_channel, forcing,
                                install_reply_recorder, paramiko_client)


def test_env_accept_patterns(session_server: Server, user) -> None:
    result = ssh(session_server, user, 'echo "$LANG|$LC_TIME|$PSX_ONE|${NOPE-unset}|$USER"',
                 options=["SetEnv=LANG=C.UTF-8 LC_TIME=POSIX PSX_ONE=1 NOPE=x USER=mallory"])
    assert result.returncode == 0, result.stderr
    # AcceptEnv LANG LC_* PSX_*: NOPE refused, USER set by sshd over the client's
    assert result.stdout.decode().strip() == f"C.UTF-8|POSIX|1|unset|{user.name}"


def test_env_debian_default(privsep_server: Server, user) -> None:
    """With no AcceptEnv line, LANG and LC_* as Debian's sshd_config has it."""
    result = ssh(privsep_server, user, 'echo "$LANG|$LC_ALL|${PSX_ONE-unset}"',
                 options=["SetEnv=LANG=C.UTF-8 LC_ALL=C PSX_ONE=1"])
    assert result.stdout.decode().strip() == "C.UTF-8|C|unset"


def _run_with_paramiko(server: Server, user, command: str, pty: bool = False,
                       cipher: str | None = None):
    """``command`` on a paramiko client's session channel; ``cipher``: one
    of session_util.CLIENT_CIPHERS, else paramiko's choice."""
    client = paramiko_client(server, user,
                             **(forcing(*CLIENT_CIPHERS[cipher]) if cipher else {}))
    chan = client.get_transport().open_session()
    if pty:
        chan.get_pty()
    chan.exec_command(command)
    return client, chan


@pytest.mark.parametrize("pty", [False, True])
def test_signal_reaches_the_program(session_server: Server, user, pty: bool) -> None:
    client, chan = _run_with_paramiko(
        session_server, user,
        "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done", pty)
    try:
        buf = b""
        while b"ready" not in buf:
            buf += chan.recv(1024)
        assert channel_request(chan, "signal", "USR1", want_reply=False) is None
        deadline = time.monotonic() + 10
        while not chan.exit_status_ready() and time.monotonic() < deadline:
            if chan.recv_ready():
                buf += chan.recv(1024)
            time.sleep(0.02)
        buf += chan.recv(1024) if chan.recv_ready() else b""
        assert chan.recv_exit_status() == 3
        assert b"got-usr1" in buf
    finally:
        client.close()


def test_unknown_signal_refused(session_server: Server, user) -> None:
    client, chan = _run_with_paramiko(session_server, user, "echo ready; exec sleep 5")
    try:
        assert chan.recv(6) == b"ready\n"
        assert channel_request(chan, "signal", "WINCH") is False
        started = time.monotonic()
        assert channel_request(chan, "signal", "TERM") is True
        chan.status_event.wait(10)  # exit-signal: paramiko records no status
        assert chan.closed or time.monotonic() - started < 4
    finally:
        client.close()


@pytest.mark.parametrize("pty", [False, True])
def test_break(session_server: Server, user, pty: bool) -> None:
    client, chan = _run_with_paramiko(session_server, user, "sleep 3", pty)
    try:
        assert channel_request(chan, "break", 0) is pty
    finally:
        client.close()


def _exit_signal(server: Server, user, command: str) -> tuple:
    """(signal name, core dumped) from the exit-signal request, via paramiko."""
    from paramiko.common import MSG_CHANNEL_REQUEST
    client = paramiko_client(server, user)
    transport = client.get_transport()
    seen = []
    original = transport._channel_handler_table[MSG_CHANNEL_REQUEST]

    def handler(chan, m):
        kind = m.get_text()
        if kind == "exit-signal":
            m.get_boolean()
            seen.append((m.get_text(), m.get_boolean()))
            chan.status_event.set()
            return
        m.rewind()
        m.get_int()
        original(chan, m)

    table = dict(transport._channel_handler_table)
    table[MSG_CHANNEL_REQUEST] = handler
    transport._channel_handler_table = table
    chan = transport.open_session()
    chan.exec_command(command)
    chan.status_event.wait(20)
    client.close()
    return seen[0] if seen else None


@pytest.mark.parametrize("command", ["kill -TERM $$", "kill -KILL $$",
                                     "ulimit -c unlimited; cd /tmp; kill -SEGV $$",
                                     "kill -HUP $$"])
def test_exit_signal_matches_openssh(privsep_session_server: Server,
                                     openssh_session_server: Server, user, command: str) -> None:
    ours = _exit_signal(privsep_session_server, user, command)
    theirs = _exit_signal(openssh_session_server, user, command)
    assert ours is not None and ours == theirs


def test_tty_with_command(session_server: Server, user) -> None:
    result = ssh(session_server, user, "tty; echo $TERM", tty=True)
    lines = result.stdout.decode().split()
    assert result.returncode == 0
    assert re.fullmatch(r"/dev/pts/\d+", lines[0])


def test_shell_without_pty(session_server: Server, user) -> None:
    """ssh -T: a shell on pipes; the session process is user@notty."""
    result = ssh(session_server, user, tty=False,
                 input=b"echo hi; tty; ps -o args= -p $PPID\n")
    out = result.stdout.decode().splitlines()
    at = out.index("hi")  # after the message of the day, if PAM has one
    assert out[at + 1] == "not a tty"
    assert out[at + 2].endswith(f"{user.name}@notty")


def test_stderr_after_stdout_closed(session_server: Server, user) -> None:
    result = ssh(session_server, user, "exec 1>&-; sleep 0.5; echo late-err >&2; exit 5")
    assert result.returncode == 5
    assert result.stdout == b""
    assert result.stderr.endswith(b"late-err\n")


def test_output_outlives_stdin(session_server: Server, user) -> None:
    result = ssh(session_server, user, "sleep 0.5; echo after", input=b"")
    assert result.stdout == b"after\n"


def test_nonexistent_subsystem(session_server: Server, user) -> None:
    client = paramiko_client(session_server, user)
    try:
        chan = client.get_transport().open_session()
        with pytest.raises(paramiko.SSHException):
            chan.invoke_subsystem("no-such-subsystem")
        # nothing else disturbed: the same connection runs a command
        chan2 = client.get_transport().open_session()
        chan2.exec_command("echo still")
        assert chan2.makefile().read() == b"still\n"
    finally:
        client.close()
    session_server.wait_for_log(
        f"subsystem request for no-such-subsystem by user {user.name} failed, subsystem not found")


def test_request_on_closed_channel_ends_connection(session_server: Server, user,
                                                   bystander) -> None:
    """A request for a channel already closed on both sides: sshd drops the
    connection ("server_input_channel_req: unknown channel N"), and so do
    we; other connections carry on."""
    client = paramiko_client(session_server, user)
    try:
        transport = client.get_transport()
        remote = closed_channel(transport)
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        m.add_int(remote)
        m.add_string("exec")
        m.add_boolean(False)
        m.add_string("echo ghost")
        transport._send_user_message(m)
        wait_until(lambda: not transport.is_active(), timeout=10)
    finally:
        client.close()
    # sshd's serverloop.c words, from both
    session_server.wait_for_log(f"server_input_channel_req: unknown channel {remote}")
    assert ssh(session_server, bystander, "echo alive").stdout == b"alive\n"


#: the window and largest packet both daemons announce for a session channel
SESSION_WINDOW = 64 * 32768
SESSION_MAX_PACKET = 32768


def _send_ignoring_window(chan: paramiko.Channel, payload: bytes, extended: bool = False) -> None:
    """CHANNEL_DATA (or stderr EXTENDED_DATA) as a client sends it that
    ignores the window and packet size it was given."""
    m = paramiko.Message()
    if extended:
        m.add_byte(paramiko.common.cMSG_CHANNEL_EXTENDED_DATA)
        m.add_int(chan.remote_chanid)
        m.add_int(1)
    else:
        m.add_byte(paramiko.common.cMSG_CHANNEL_DATA)
        m.add_int(chan.remote_chanid)
    m.add_string(payload)
    chan.transport._send_user_message(m)


@pytest.mark.parametrize("cipher", CLIENT_CIPHERS)
def test_window_overrun_is_dropped(session_server: Server, user, bystander, cipher: str) -> None:
    """A client that ignores the window: what does not fit, a packet over the
    maximum size and stderr data sent to the server are logged and dropped,
    as sshd 9.2 does, and the connection carries on.  With each cipher: the
    session process reads the first three on its direct path (inbound.py)."""
    client, chan = _run_with_paramiko(
        session_server, user,
        "sleep 3; cat > overrun.bin; wc -c < overrun.bin; tr -d a < overrun.bin | wc -c;"
        " rm overrun.bin", cipher=cipher)
    try:
        _send_ignoring_window(chan, b"b" * (SESSION_MAX_PACKET + 7232))
        _send_ignoring_window(chan, b"e" * 1000, extended=True)
        for _ in range(2 * SESSION_WINDOW // SESSION_MAX_PACKET):
            _send_ignoring_window(chan, b"a" * SESSION_MAX_PACKET)
        chan.shutdown_write()
        arrived, foreign = (int(n) for n in chan.makefile().read().split())
        assert chan.recv_exit_status() == 0
        # the whole window arrived; grants while `sleep` does not read are at
        # most a pipe's worth (this daemon grows a stdin pipe that fills to
        # BULK_PIPE_SIZE; sshd's stays at 64 KiB); the second window's worth
        # was dropped
        assert SESSION_WINDOW <= arrived <= SESSION_WINDOW + BULK_PIPE_SIZE + 256 * 1024
        assert foreign == 0  # neither the big packet nor the stderr data
        again = client.get_transport().open_session()
        again.exec_command("echo carries on")
        assert again.makefile().read() == b"carries on\n"
    finally:
        client.close()
    session_server.wait_for_log("rcvd big packet")
    session_server.wait_for_log("bad ext data")
    session_server.wait_for_log("rcvd too much data")
    assert ssh(session_server, bystander, "echo alive").stdout == b"alive\n"


@pytest.fixture
def bystander(make_user):
    return make_user(prefix="pby")


def test_no_more_sessions(session_server: Server, user) -> None:
    client = paramiko_client(session_server, user)
    try:
        transport = client.get_transport()
        chan = transport.open_session()
        transport.global_request("no-more-sessions@openssh.com", wait=False)
        # No wait: both daemons handle a connection's messages in order, so the
        # open below is read after this request has taken effect.
        with pytest.raises((paramiko.SSHException, EOFError)):
            transport.open_session(timeout=10)
        assert chan.closed or not transport.is_active()
    finally:
        client.close()


def test_keepalive_answered_with_failure(session_server: Server, user) -> None:
    client = paramiko_client(session_server, user)
    try:
        answer = client.get_transport().global_request("keepalive@openssh.com", wait=True)
        assert answer is None  # REQUEST_FAILURE, as sshd answers it
        assert client.get_transport().is_active()
    finally:
        client.close()


def test_server_alive_interval_keeps_connection(session_server: Server, user) -> None:
    result = ssh(session_server, user, "sleep 3; echo ok",
                 options=["ServerAliveInterval=1", "ServerAliveCountMax=2"])
    assert result.returncode == 0 and result.stdout == b"ok\n"


@pytest.mark.parametrize("cipher", CLIENT_CIPHERS)
def test_input_before_the_clients_close_reaches_the_program(session_server: Server,
                                                            user, cipher: str) -> None:
    """A client that sends its input, EOF and CLOSE at once, to a program
    that reads none of it yet (the pipe is full): the input still reaches
    the program, then its stdin ends, as sshd drains a channel's output
    after the peer's CLOSE (nchan.c, CHAN_OUTPUT_WAIT_DRAIN).  The session
    process's loop dropped what waited for the pipe.  The keepalive's answer
    shows that the server handled the CLOSE sent before it; only then may
    the program read."""
    data = bytes(range(256)) * 4096  # 1 MiB: within the 2 MiB window, far above a pipe
    flag, out = user.home / "may-read", user.home / "stdin-copy"
    client, chan = _run_with_paramiko(
        session_server, user,
        f"while [ ! -e {flag} ]; do sleep 0.05; done; exec cat > {out}", cipher=cipher)
    try:
        chan.sendall(data)
        chan.shutdown_write()
        chan.close()
        client.get_transport().global_request("keepalive@openssh.com", wait=True)
        flag.touch()
        try:
            wait_until(lambda: out.exists() and out.stat().st_size >= len(data))
        finally:
            got = out.read_bytes() if out.exists() else b""
        assert got == data
    finally:
        client.close()
