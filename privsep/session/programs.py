"""The user's programs, session side: fork each shell or command on a pty or
on pipes (the child's side is privsep/shell/spawn.py), copy its output to
the channel in large reads, and report its exit as sshd does."""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
from typing import Callable

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST

from privsep.common.trace import trace
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


def _pump_out(fd: int, send, read_size: int, stop_fd: int | None = None, owned: bool = False,
              eow: threading.Event | None = None) -> None:
    """Copy ``fd`` to the channel until EOF.  If ``stop_fd`` becomes readable
    (the program exited), drain what is already buffered and stop.  An
    ``owned`` fd is closed at the end, so that a program still writing after
    the channel went away gets EPIPE/SIGPIPE, as with sshd (``yes | head``)."""
    draining = False
    try:
        while True:
            if stop_fd is not None and not draining:
                ready, _, _ = select.select([fd, stop_fd], [], [])
                if stop_fd in ready and fd not in ready:
                    draining = True
                    os.set_blocking(fd, False)
            try:
                data = os.read(fd, read_size)
            except BlockingIOError:  # drained; or a pty master's spurious wake-up
                if draining or stop_fd is None:
                    return
                continue
            except OSError:  # EIO: the pty's last slave fd closed
                return
            if not data or (eow is not None and eow.is_set()):
                return
            try:
                send(data)
            except (OSError, EOFError, paramiko.SSHException):
                return
    finally:
        if owned:
            os.close(fd)


class PtyRunner:
    """A program on a pty: session leader with the pts as controlling tty."""

    def __init__(self, session: SessionChannel, program: spawn.Program,
                 release_pty: Callable[[SessionChannel], None]) -> None:
        self.session, self.release_pty = session, release_pty
        pty = session.pty
        assert pty is not None
        self.exited_r, self.exited_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(self.exited_r)
            os.close(self.exited_w)
            spawn.on_pty(program, pty.master, pty.slave)
        session.pid = pid
        trace(log, "session", "started %s (pid %d): session leader (sid %d), controlling tty %s",
              program.argv[0], pid, pid, pty.tty)
        os.close(pty.slave)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        pty, chan = self.session.pty, self.session.chan
        # (the sink makes the master non-blocking, for the reader too)
        self.session.sink = StdinSink(chan, pty.master, close_on_eof=False)
        chan.attach_sink(self.session.sink)
        reader = threading.Thread(target=_pump_out, daemon=True, args=(
            pty.master, chan.sendall, _output_read_size(chan), self.exited_r))
        reader.start()
        _, status = os.waitpid(self.session.pid, 0)
        trace(log, "session", "%d on %s exited (wait status %d)", self.session.pid, pty.tty, status)
        self.session.exited = True
        os.write(self.exited_w, b"x")
        reader.join()
        os.close(self.exited_r)
        os.close(self.exited_w)
        self.session.sink.stop()
        self.release_pty(self.session)
        os.close(pty.master)
        _finish(chan, status)


class PipeRunner:
    """A program without a pty: stdin, stdout and stderr on separate pipes."""

    def __init__(self, session: SessionChannel, program: spawn.Program) -> None:
        self.session = session
        in_r, self.stdin = os.pipe()
        self.stdout, out_w = os.pipe()
        self.stderr, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            spawn.on_pipes(program, in_r, out_w, err_w)
        session.pid = pid
        trace(log, "session", "started %s (pid %d): session leader (sid %d), no tty, pipes",
              program.argv[0], pid, pid)
        for fd in (in_r, out_w, err_w):
            os.close(fd)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        chan = self.session.chan
        self.session.sink = StdinSink(chan, self.stdin, close_on_eof=True)
        chan.attach_sink(self.session.sink)
        read_size = _output_read_size(chan)
        out = threading.Thread(target=_pump_out, daemon=True, args=(
            self.stdout, chan.sendall, read_size, None, True, self.session.eow))
        err = threading.Thread(target=_pump_out, daemon=True, args=(
            self.stderr, chan.sendall_stderr, read_size, None, True, self.session.eow))
        out.start()
        err.start()
        _, status = os.waitpid(self.session.pid, 0)
        self.session.exited = True
        out.join()
        err.join()
        self.session.sink.stop()
        _finish(chan, status)


def _finish(chan: paramiko.Channel, status: int) -> None:
    """All output delivered: exit status, EOF, close, in sshd's order; the
    client closes the connection.  The exit status goes first: a client
    whose input is done answers our EOF with its CLOSE at once, the
    transport thread answers that with ours, and an exit status sent after
    the EOF could then arrive after our CLOSE (a mux client reported 255)."""
    if chan.closed:  # the client closed it first: its id may name another channel soon
        return
    try:
        _send_exit(chan, status)
        chan.shutdown_write()
        chan.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("channel %d: exit status not delivered: %s", chan.get_id(), exc)
