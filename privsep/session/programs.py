"""The user's programs, session side: fork each shell or command on a pty or
on pipes (the child's side is privsep/shell/spawn.py), copy its output to
the channel in large reads (pump.OutputPump) and its input from the channel
(stdin.StdinSink), all in the session process's event loop, and report its
exit as sshd does: the loop learns of it through a pidfd."""

from __future__ import annotations

import logging
import os
import signal
from typing import Callable, NoReturn

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST

from privsep.common.trace import trace
from privsep.session.loop import EventLoop
from privsep.session.pump import OutputPump
from privsep.session.state import SessionChannel
from privsep.session.stdin import StdinSink
from privsep.shell import spawn

log = logging.getLogger("privsep.session")

#: paramiko keeps 64 bytes of the client's maximum packet for headers.
_PACKET_HEADROOM = 64
#: the most one read of a program's output asks for
_MAX_READ = 256 * 1024


def _send_exit(chan: paramiko.Channel, status: int) -> None:
    """exit-status, or exit-signal with the core flag, as sshd sends them."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name.removeprefix("SIG")
        except ValueError:
            name = f"SIG{sig}@openssh.com"
        m = paramiko.Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("exit-signal")
        m.add_boolean(False)
        m.add_string(name)
        m.add_boolean(os.WCOREDUMP(status))
        m.add_string("")
        m.add_string("")
        chan.transport._send_user_message(m)
    else:
        chan.send_exit_status(os.WEXITSTATUS(status))


def _output_read_size(chan: paramiko.Channel) -> int:
    """Two of the largest data packets paramiko sends on ``chan``: a full
    64 KiB pipe then leaves in two full packets, where a read of 65536
    bytes would add a third packet of 128 bytes and its whole cost.  The
    packet size is the client's word: kept between 1 KiB and 256 KiB."""
    payload = chan.out_max_packet_size - _PACKET_HEADROOM
    return 2 * min(max(payload, 1024), _MAX_READ // 2)


class _Runner:
    """What both kinds of program share: the fork's pid watched through a
    pidfd (readable once the program exited), the exit status reported once
    all output is delivered."""

    loop: EventLoop
    session: SessionChannel
    #: the wait status, once the program exited
    status: int | None = None
    #: exit status, EOF and CLOSE sent (or the channel was gone)
    finished: bool = False

    def _watch_exit(self) -> None:
        self.pidfd = os.pidfd_open(self.session.pid)
        self.loop.add_reader(self.pidfd, self._reap)

    def _reap(self) -> None:
        pid, status = os.waitpid(self.session.pid, os.WNOHANG)
        if pid == 0:
            return
        self.loop.forget(self.pidfd)
        os.close(self.pidfd)
        self.status = status
        self.session.exited = True
        self._exited()

    def _exited(self) -> None:
        raise NotImplementedError

    def eow(self) -> None:
        """eow@openssh.com: the client's stdout is gone."""


class PtyRunner(_Runner):
    """A program on a pty: session leader with the pts as controlling tty."""

    def __init__(self, loop: EventLoop, session: SessionChannel, program: spawn.Program,
                 release_pty: Callable[[SessionChannel], None]) -> None:
        self.loop, self.session, self.release_pty = loop, session, release_pty
        pty = session.pty
        assert pty is not None
        pid = os.fork()
        if pid == 0:
            spawn.on_pty(program, pty.master, pty.slave)
        session.pid = pid
        trace(log, "session", "started %s (pid %d): session leader (sid %d), controlling tty %s",
              program.argv[0], pid, pid, pty.tty)
        os.close(pty.slave)

    def start(self) -> None:
        pty, chan = self.session.pty, self.session.chan
        self.session.sink = StdinSink(self.loop, chan, pty.master, close_on_eof=False)
        chan.attach_sink(self.session.sink)
        self.pump = OutputPump(self.loop, chan, pty.master, _output_read_size(chan),
                               on_end=self._output_ended)
        self._watch_exit()

    def _exited(self) -> None:
        trace(log, "session", "%d on %s exited (wait status %d)", self.session.pid,
              self.session.pty.tty, self.status)
        self.pump.drain()  # what the program wrote last, then the pump ends
        if self.pump.ended:
            self._output_ended(True)

    def _output_ended(self, clean: bool) -> None:
        if self.status is None or self.finished:
            return  # the output ended first (EIO, the channel closed): wait for the exit
        self.finished = True
        pty = self.session.pty
        self.session.sink.stop()
        self.release_pty(self.session)
        self.loop.forget(pty.master)
        os.close(pty.master)
        _finish(self.session.chan, self.status)


class PipeRunner(_Runner):
    """A program without a pty: stdin, stdout and stderr on separate pipes."""

    def __init__(self, loop: EventLoop, session: SessionChannel, program: spawn.Program,
                 child: Callable[[int, int, int], NoReturn] | None = None) -> None:
        """``child``, when given, runs in the fork with the stdin, stdout and
        stderr ends instead of executing ``program`` (internal-sftp)."""
        self.loop, self.session = loop, session
        self.pumps: list[OutputPump] = []
        in_r, self.stdin = os.pipe()
        self.stdout, out_w = os.pipe()
        self.stderr, err_w = os.pipe()
        pid = spawn.spawn_on_pipes(program, in_r, out_w, err_w) if child is None else None
        if pid is None:
            pid = os.fork()
            if pid == 0:
                if child is not None:
                    child(in_r, out_w, err_w)
                spawn.on_pipes(program, in_r, out_w, err_w)
        session.pid = pid
        trace(log, "session", "started %s (pid %d): session leader (sid %d), no tty, pipes",
              program.argv[0], pid, pid)
        for fd in (in_r, out_w, err_w):
            os.close(fd)

    def start(self) -> None:
        chan = self.session.chan
        self.session.sink = StdinSink(self.loop, chan, self.stdin, close_on_eof=True)
        chan.attach_sink(self.session.sink)
        read_size = _output_read_size(chan)
        self.pumps = [
            OutputPump(self.loop, chan, self.stdout, read_size, self._output_ended, owned=True),
            OutputPump(self.loop, chan, self.stderr, read_size, self._output_ended, stderr=True,
                       owned=True),
        ]
        self._watch_exit()

    def eow(self) -> None:
        # Stop reading the program's output so that it gets EPIPE (sshd's chan_rcvd_eow).
        for pump in self.pumps:
            pump.end(False)

    def _exited(self) -> None:
        self._output_ended(True)

    def _output_ended(self, clean: bool) -> None:
        """Both outputs at EOF and the program gone: report, in sshd's order."""
        if self.status is None or self.finished or not all(p.ended for p in self.pumps):
            return
        self.finished = True
        self.session.sink.stop()
        _finish(self.session.chan, self.status)


def _finish(chan: paramiko.Channel, status: int) -> None:
    """All output delivered: exit status, EOF, close, in sshd's order; the
    client closes the connection.  The exit status goes first: a client
    whose input is done answers our EOF with its CLOSE at once, the
    loop answers that with ours, and an exit status sent after
    the EOF could then arrive after our CLOSE (a mux client reported 255)."""
    if chan.closed:  # the client closed it first: its id may name another channel soon
        return
    try:
        _send_exit(chan, status)
        chan.shutdown_write()
        chan.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("channel %d: exit status not delivered: %s", chan.get_id(), exc)
