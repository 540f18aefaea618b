"""A session channel's data on its way to the program's stdin.

Runs in the post-auth session process, as the user.  paramiko buffers a
channel's data and wakes a reader thread for every packet; with a program
reading a pipe or a pty that is one thread hand-off per keystroke and a
lock-step between two threads through a whole upload.  Here the transport
thread writes the data to the program's fd itself while the fd takes it.
What does not fit waits in a backlog that a flusher thread writes as the fd
drains; the client's window opens again only for what was written, so the
backlog never outgrows the window we granted.  During a key exchange the
transport thread may not send a WINDOW_ADJUST (and only it can finish the
exchange), so then the flusher thread sends it, once the exchange is over.

When the program has closed its end (EPIPE), data is counted as written and
dropped, as sshd does, so that the client is never stalled.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading

from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from paramiko.message import Message
from paramiko.ssh_exception import SSHException

log = logging.getLogger("privsep.session")


class StdinSink:
    """Delivers one channel's data to ``fd`` (a pipe's write end or a pty
    master; set non-blocking here).  ``close_on_eof``: close ``fd`` once the
    client's EOF came and everything before it was written (a pipe); a pty
    master stays open for the program's output."""

    def __init__(self, chan, fd: int, close_on_eof: bool) -> None:
        self.chan = chan
        self.fd = fd
        self.close_on_eof = close_on_eof
        os.set_blocking(fd, False)
        self._lock = threading.Lock()
        self._more = threading.Condition(self._lock)
        self._backlog = bytearray()
        self._eof = False
        #: the program's end is gone: drop what comes
        self._broken = False
        #: nothing more is written, fd is not ours any longer (or closed)
        self._done = False
        #: window granted while a key exchange held WINDOW_ADJUST back
        self._grant_due = 0
        threading.Thread(target=self._flush_backlog, daemon=True, name="stdin").start()

    # --- the transport thread --------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        """Data from the client, in order: written now if the fd takes it."""
        with self._lock:
            if self._done:
                return
            if self._backlog:
                self._backlog += data
                self._more.notify()
                return
            written = self._write(data)
            if written < len(data):
                self._backlog += data[written:]
                self._more.notify()
        grant = self.chan._check_add_window(written) if written else 0
        if grant > 0 and not self.chan.transport.send_unless_rekeying(self._adjust(grant)):
            with self._lock:
                self._grant_due += grant
                self._more.notify()

    def client_eof(self) -> None:
        """The client sent EOF: close the fd once the backlog is written."""
        with self._lock:
            self._eof = True
            self._more.notify()

    def prepend(self, data: bytes) -> None:
        """What the channel buffered before this sink was attached."""
        with self._lock:
            self._backlog[:0] = data
            self._more.notify()

    # --- any thread --------------------------------------------------------------------

    def stop(self) -> None:
        """The channel or the program is gone: write nothing more, and close
        the fd if it is ours to close and still open."""
        with self._lock:
            if self._done:
                return
            self._done = True
            self._backlog.clear()
            self._more.notify()
            if self.close_on_eof:
                os.close(self.fd)

    # --- internals -------------------------------------------------------------------

    def _write(self, data) -> int:
        """Write what the fd takes now (the lock held); all of it when broken."""
        if self._broken:
            return len(data)
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EIO):
                log.debug("channel %d: write to the program failed: %s", self.chan.chanid, exc)
            self._broken = True
            return len(data)

    def _consumed(self, count: int) -> None:
        """``count`` bytes left the channel: open the client's window again
        (paramiko decides when a WINDOW_ADJUST is worth sending)."""
        if not count:
            return
        grant = self.chan._check_add_window(count)
        if grant > 0:
            self.chan.transport.send_reply(self._adjust(grant))

    def _adjust(self, grant: int) -> Message:
        m = Message()
        m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
        m.add_int(self.chan.remote_chanid)
        m.add_int(grant)
        return m

    def _flush_backlog(self) -> None:
        """The flusher thread's life; it ends with the channel or connection."""
        try:
            self._flush_until_done()
        except (OSError, EOFError, SSHException) as exc:  # the connection went away
            log.debug("channel %d: stdin flusher stops: %s", self.chan.chanid, exc)
            self.stop()

    def _flush_until_done(self) -> None:
        """Write the backlog as the fd drains; close a pipe after the EOF."""
        while True:
            with self._lock:
                while not (self._backlog or self._eof or self._done or self._grant_due):
                    self._more.wait()
                if self._done:
                    return
                grant, self._grant_due = self._grant_due, 0
            if grant:  # waits for the key exchange to end
                self.chan.transport.send_reply(self._adjust(grant))
            with self._lock:
                if self._done:
                    return
                if not self._backlog and not self._eof:
                    continue
                if not self._backlog:  # EOF, all written
                    self._done = True
                    if self.close_on_eof:
                        os.close(self.fd)
                    return
                fd = self.fd
            try:
                select.select([], [fd], [], 1.0)
            except (OSError, ValueError):  # closed under us by stop()
                return
            with self._lock:
                if self._done:
                    return
                written = self._write(self._backlog)
                del self._backlog[:written]
            self._consumed(written)
