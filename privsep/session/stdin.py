"""A channel's data on its way to a descriptor: a program's stdin (a pipe or
a pty master) or a forwarded socket.

Runs in the post-auth session process, as the user, in its event loop.  The
client's data is written to the descriptor as it arrives, while the
descriptor takes it; what does not fit waits in a backlog that the loop
writes when the descriptor has room.  The client's window opens again only
for what was written, so the backlog never outgrows the window we granted.
A WINDOW_ADJUST waits for a key exchange under way to end
(SessionTransport.send_when_clear).

When the program has closed its end (EPIPE), data is counted as written and
dropped, as sshd does, so that the client is never stalled; a socket that
breaks calls ``on_broken`` instead.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable

from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from paramiko.message import Message

from privsep.session.loop import EventLoop
from privsep.session.pump import grow_pipe

log = logging.getLogger("privsep.session")

#: the most pieces one writev takes (Linux's UIO_MAXIOV)
_IOV_MAX = 1024


class StdinSink:
    """Delivers one channel's data to ``fd`` (set non-blocking here).

    ``close_on_eof``: close ``fd`` once the client's EOF came and everything
    before it was written (a pipe); a pty master stays open for the
    program's output.  ``at_eof`` runs then instead for a socket (shutdown of
    its write side), and ``on_broken`` when writing fails."""

    def __init__(self, loop: EventLoop, chan, fd: int, close_on_eof: bool,
                 at_eof: Callable[[], None] | None = None,
                 on_broken: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.chan = chan
        self.fd = fd
        self.close_on_eof = close_on_eof
        self.at_eof = at_eof
        self.on_broken = on_broken
        os.set_blocking(fd, False)
        self._backlog = bytearray()
        #: data delivered this turn of the loop, not yet written
        self._pending: list = []
        self._eof = False
        #: the program's end is gone: drop what comes
        self._broken = False
        #: nothing more is written, fd is not ours any longer (or closed)
        self._done = False
        #: the pipe was grown, or that was tried (pump.grow_pipe)
        self._grown = False
        loop.add_writer(fd, self._flush, when=lambda: bool(self._backlog) and not self._done)

    # --- the client's side -----------------------------------------------------------

    def deliver(self, data) -> None:
        """Data from the client, in order: written once the loop has handled
        every packet it read this turn, all of them with one writev (a
        write per 32 KiB packet was a fifth of an upload's time)."""
        if self._done:
            return
        if self._backlog:
            self._backlog += data
            return
        if not self._pending:
            self.loop.call_later(0, self._write_pending)
        self._pending.append(data)

    def _write_pending(self) -> None:
        """What deliver gathered: written as far as the fd takes it, the
        rest to the backlog, and the window opened once for what went."""
        pending, self._pending = self._pending, []
        if self._done or not pending:
            return
        written = self._write(pending)
        if written < sum(len(data) for data in pending):
            if not self._grown:  # the program reads slower than data comes
                self._grown = True
                grow_pipe(self.fd)
            skip = written
            for data in pending:
                if skip < len(data):
                    self._backlog += memoryview(data)[skip:]
                skip = max(skip - len(data), 0)
        self._consumed(written)

    def client_eof(self) -> None:
        """The client sent EOF (or closed the channel): end the fd's input
        once the backlog is written."""
        self._eof = True
        self._write_pending()  # what came before the EOF goes first
        if not self._backlog:
            self._end_input()

    def prepend(self, data: bytes) -> None:
        """What the channel buffered before this sink was attached."""
        if data:
            self._backlog[:0] = data

    def stop(self) -> None:
        """The channel or the program is gone: write nothing more, and close
        the fd if it is ours to close and still open."""
        if self._done:
            return
        self._write_pending()  # delivered before this: as if written on arrival
        if self._done:  # writing failed, and on_broken stopped us already
            return
        self._done = True
        self._backlog.clear()
        self.loop.remove_writer(self.fd)
        if self.close_on_eof:
            self.loop.forget(self.fd)
            os.close(self.fd)

    # --- internals -------------------------------------------------------------------

    def _end_input(self) -> None:
        """EOF, all written: the program (or the socket's peer) sees EOF."""
        if self._done:
            return
        if self.close_on_eof:
            self.stop()
            return
        self._done = True
        self.loop.remove_writer(self.fd)
        if self.at_eof is not None:
            self.at_eof()

    def _write(self, data) -> int:
        """Write what the fd takes now (``data``, or a list of pieces with
        one writev); all of it when broken."""
        if self._broken:
            return len(data) if not isinstance(data, list) else sum(map(len, data))
        try:
            if isinstance(data, list):
                return os.writev(self.fd, data[:_IOV_MAX])
            return os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EIO, errno.ECONNRESET):
                log.debug("channel %d: write failed: %s", self.chan.chanid, exc)
            self._broken = True
            if self.on_broken is not None:
                self.on_broken()
            return len(data) if not isinstance(data, list) else sum(map(len, data))

    def _flush(self) -> None:
        """The loop: the fd has room for the backlog."""
        if self._done:
            return
        written = self._write(self._backlog)
        del self._backlog[:written]
        self._consumed(written)
        if not self._backlog and self._eof:
            self._end_input()

    def _consumed(self, count: int) -> None:
        """``count`` bytes left the channel: open the client's window again
        (paramiko decides when a WINDOW_ADJUST is worth sending)."""
        if not count or self.chan.closed:
            return
        grant = self.chan._check_add_window(count)
        if grant > 0:
            m = Message()
            m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
            m.add_int(self.chan.remote_chanid)
            m.add_int(grant)
            self.chan.transport.send_when_clear(m)
