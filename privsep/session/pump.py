"""A descriptor's data on its way to a channel: a program's stdout, stderr or
pty master, or a forwarded socket.

Runs in the post-auth session process, as the user, in its event loop.  The
descriptor is read only while the channel's remote window has room and the
transport may send (no key exchange under way, the client keeping up), and
never more than the window takes: Channel.send then never waits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from typing import Callable

import paramiko

from privsep.session.loop import EventLoop

log = logging.getLogger("privsep.session")

#: What a program's pipe grows to once it carries bulk data (F_SETPIPE_SZ):
#: the kernel's default 64 KiB wakes the loop and the program every two
#: packets.  Only then, not for every pipe: a user's pipes beyond
#: /proc/sys/fs/pipe-user-pages-soft in all would shrink everyone's new pipes.
BULK_PIPE_SIZE = 1 << 20
#: how much more a pump reads at once from a grown pipe
BULK_READ_FACTOR = 2


def grow_pipe(fd: int) -> bool:
    """Grow the pipe ``fd`` to BULK_PIPE_SIZE; False if it is no pipe (a pty,
    a socket) or the user's pipe allowance is spent."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, BULK_PIPE_SIZE)
    except OSError:
        return False
    return True


class OutputPump:
    """Copies ``fd`` to ``chan`` (its extended data with ``stderr``) in reads
    of up to ``read_size``.  ``on_end(clean)`` is called once, when the
    descriptor reached EOF (clean) or failed, or the channel can take no more;
    an ``owned`` fd is closed then, so that a program still writing gets
    EPIPE/SIGPIPE, as with sshd (``yes | head``)."""

    def __init__(self, loop: EventLoop, chan: paramiko.Channel, fd: int, read_size: int,
                 on_end: Callable[[bool], None], stderr: bool = False, owned: bool = False) -> None:
        self.loop, self.chan, self.fd = loop, chan, fd
        self.read_size = read_size
        self.on_end = on_end
        self.stderr = stderr
        self.owned = owned
        self.ended = False
        self._draining = False
        #: the pipe was grown, or that was tried (see grow_pipe)
        self._grown = False
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable, when=self._may_read)

    def _channel_done(self) -> bool:
        return self.chan.closed or self.chan.eof_sent

    def _may_read(self) -> bool:
        if self._channel_done():
            return True  # read once more, to notice and end
        return self.chan.out_window_size > 0 and self.chan.transport.may_send_data()

    def _readable(self) -> None:
        if self._draining:
            self._drain()
        else:
            self._read_once()

    def _read_once(self) -> bool | None:
        """One read and its send: True if something was sent, False if the
        descriptor had nothing (EAGAIN), None once the pump ended."""
        if self._channel_done():
            self.end(False)
            return None
        size = min(self.read_size, self.chan.out_window_size)
        if size <= 0:
            return True  # the window is shut: wait for the client
        try:
            data = os.read(self.fd, size)
        except (BlockingIOError, InterruptedError):
            return False  # a pty master's spurious wake-up; or drained
        except OSError:  # EIO: the pty's last slave fd closed; or the socket failed
            self.end(True)
            return None
        if not data:
            self.end(True)
            return None
        if len(data) == self.read_size and not self._grown:
            # a full read: bulk output, worth a larger pipe and larger reads
            self._grown = True
            if grow_pipe(self.fd):
                self.read_size *= BULK_READ_FACTOR
        send, view = self.chan.transport.send_channel_data, memoryview(data)
        try:
            while view:
                sent = send(self.chan, view, self.stderr)
                if not sent:
                    raise EOFError("channel closed")
                view = view[sent:]
        except (OSError, EOFError, socket.timeout, paramiko.SSHException):
            self.end(False)
            return None
        return True

    def drain(self) -> None:
        """The program exited: send what is buffered, then end (at the first
        read that finds nothing), waiting for window as needed."""
        if self.ended:
            return
        self._draining = True
        self.chan.on_window = self._drain
        self._drain()

    def _drain(self) -> None:
        while not self.ended and self.chan.out_window_size > 0:
            if self._read_once() is False:
                self.end(True)
                return
        if not self.ended and self._channel_done():
            self.end(False)

    def end(self, clean: bool) -> None:
        """Stop reading; close the fd if ours; tell the owner, once."""
        if self.ended:
            return
        self.ended = True
        if self.chan.on_window == self._drain:
            self.chan.on_window = None
        self.loop.remove_reader(self.fd)
        if self.owned:
            self.loop.forget(self.fd)
            os.close(self.fd)
        self.on_end(clean)
