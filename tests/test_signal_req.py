"""The "signal" channel request (RFC 4254 6.9), side by side with Debian's
sshd 9.2 (session.c session_signal_req): for each case the same reply
(success, failure, or none when no reply was wanted), the same effect on
the program's process group, the connection kept, and the same log line.

sshd refuses a name it does not know, a session whose program has not
started, a forced command and a subsystem; it reads the name as a C string
(a trailing NUL is cut, one inside is "invalid format") and, unlike the
other session requests, answers a malformed one with a failure and a log
line instead of ending the connection."""

from __future__ import annotations

import os
import re
import signal
import struct
import time
from dataclasses import dataclass

import pytest

from tests.daemon import Server
from tests.session_util import channel_request, paramiko_client

#: prints "ready <pid of a background sleep> <the shell's pid>", then
#: waits: a signal to the process group reaches the shell and the sleep alike
PROGRAM = "sleep 60 & echo ready $! $$; wait"


@dataclass(frozen=True)
class Outcome:
    """What one signal request did, in the terms both daemons share."""
    #: True/False: CHANNEL_SUCCESS/FAILURE; None: no reply was wanted
    reply: bool | None
    #: the session_signal_req line, from the function name on ("" if none)
    line: str
    #: whether the program (shell and background sleep) was still running
    running: bool
    #: whether the connection still answered a request afterwards
    alive: bool


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _line(server: Server, start: int, expect_line: bool) -> str:
    """The session_signal_req line logged after offset ``start``, from the
    function name on, without the session process's " [session]" tag."""
    def found() -> list[str]:
        return re.findall(r"session_signal_req: .*", server.log_text()[start:])
    if expect_line:
        deadline = time.monotonic() + 10
        while not found():
            assert time.monotonic() < deadline, (server.kind, server.log_text()[start:])
            time.sleep(0.05)
    else:
        time.sleep(0.3)
    lines = [line.removesuffix(" [session]").rstrip("\r") for line in found()]
    assert len(lines) <= 1, (server.kind, lines)
    return lines[0] if lines else ""


def _signal(server: Server, user, *fields, want_reply: bool = True, tail: bytes = b"",
            program: str | None = PROGRAM, subsystem: str | None = None,
            expect_line: bool = True) -> Outcome:
    """Open a session, start ``program`` (or ``subsystem``, or nothing),
    send a signal request of ``fields`` and ``tail``, and see what came of it."""
    client = paramiko_client(server, user)
    pids: list[int] = []
    try:
        transport = client.get_transport()
        chan = transport.open_session()
        if subsystem is not None:
            chan.invoke_subsystem(subsystem)
        elif program is not None:
            chan.exec_command(program)
            buf = b""
            while b"\n" not in buf:
                data = chan.recv(1024)
                assert data, (server.kind, buf)
                buf += data
            pids = [int(word) for word in buf.split()[1:3]]
        start = len(server.log_text())
        reply = channel_request(chan, "signal", *fields, want_reply=want_reply, tail=tail)
        line = _line(server, start, expect_line)
        if pids:
            # a delivered TERM ends the sleep at once; give it the time to
            time.sleep(0.3)
        running = all(_alive(pid) for pid in pids) if pids else not chan.exit_status_ready()
        # the connection still serves: a new session channel opens
        alive = transport.is_active() and transport.open_session(timeout=10) is not None
        return Outcome(reply, line, running, alive)
    finally:
        client.close()
        if pids and _alive(pids[1]):
            os.killpg(pids[1], signal.SIGKILL)  # the shell leads its own group


def _both(privsep: Server, openssh: Server, user, *fields, **kwargs) -> Outcome:
    """The case against both daemons: the outcomes must be equal."""
    ours = _signal(privsep, user, *fields, **kwargs)
    theirs = _signal(openssh, user, *fields, **kwargs)
    assert ours == theirs, (ours, theirs)
    return theirs


CASES = {
    # name: (fields, tail, want_reply, expected reply, expected line, still running)
    "delivered": (("TERM",), b"", True, True, "", False),
    "no-reply": (("TERM",), b"", False, None, "", False),
    "trailing-nul-cut": ((b"TERM\0",), b"", True, True, "", False),
    "unknown": (("WINCH",), b"", True, False,
                'session_signal_req: unsupported signal "WINCH"', True),
    "unknown-no-reply": (("WINCH",), b"", False, None,
                         'session_signal_req: unsupported signal "WINCH"', True),
    "siginfo": (("INFO@openssh.com",), b"", True, False,
                'session_signal_req: unsupported signal "INFO@openssh.com"', True),
    "lowercase": (("term",), b"", True, False,
                  'session_signal_req: unsupported signal "term"', True),
    "sig-prefix": (("SIGTERM",), b"", True, False,
                   'session_signal_req: unsupported signal "SIGTERM"', True),
    "high-bytes": ((b"\xffTERM",), b"", True, False,
                   'session_signal_req: unsupported signal "\\377TERM"', True),
    "nul-inside": ((b"TE\0RM",), b"", True, False,
                   "session_signal_req: parse: invalid format", True),
    "trailing-bytes": (("TERM",), b"\0", True, False,
                       "session_signal_req: parse: unexpected bytes remain after decoding", True),
    "short": ((), struct.pack(">I", 64) + b"TERM", True, False,
              "session_signal_req: parse: incomplete message", True),
    "empty": (("",), b"", True, False, 'session_signal_req: unsupported signal ""', True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_signal_request_matches_openssh(privsep_session_server: Server,
                                        openssh_session_server: Server, user, case: str) -> None:
    fields, tail, want_reply, reply, line, running = CASES[case]
    outcome = _both(privsep_session_server, openssh_session_server, user, *fields,
                    want_reply=want_reply, tail=tail, expect_line=bool(line))
    assert outcome == Outcome(reply, line, running, True)
    assert "Traceback" not in privsep_session_server.log_text()


def test_signal_before_the_program(privsep_session_server: Server,
                                   openssh_session_server: Server, user) -> None:
    """A session whose program has not started has no process: refused."""
    outcome = _both(privsep_session_server, openssh_session_server, user, "TERM", program=None)
    assert outcome == Outcome(False, "session_signal_req: no pid for session 0", True, True)


def test_signal_to_a_subsystem(privsep_session_server: Server,
                               openssh_session_server: Server, user) -> None:
    outcome = _both(privsep_session_server, openssh_session_server, user, "TERM",
                    subsystem="sftp")
    assert outcome == Outcome(
        False, "session_signal_req: refusing to send signal TERM to subsystem session", True, True)


def test_signal_to_a_forced_command(server_with, user) -> None:
    """ForceCommand's program is the administrator's: no signal reaches it."""
    forced = f"ForceCommand {PROGRAM}"
    outcome = _both(server_with(forced), server_with(forced, kind="openssh"), user, "TERM")
    assert outcome == Outcome(
        False, "session_signal_req: refusing to send signal TERM to forced-command session",
        True, True)
