"""A descriptor's data on its way to a channel: a program's stdout, stderr or
pty master, or a forwarded socket.

Runs in the post-auth session process, as the user, in its event loop.  The
descriptor is read only while the channel's remote window has room and the
transport may send (no key exchange under way, the client keeping up), and
never more than the window takes: Channel.send then never waits.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Callable

import paramiko

from privsep.session.loop import EventLoop

log = logging.getLogger("privsep.session")


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
        self.send = chan.send_stderr if stderr else chan.send
        self.owned = owned
        self.ended = False
        self._draining = False
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
        try:
            while data:
                sent = self.send(data)
                if not sent:
                    raise EOFError("channel closed")
                data = data[sent:]
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
