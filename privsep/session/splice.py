"""A forwarded connection: a channel and a socket joined both ways, in the
session process's event loop (forwarding and agent forwarding).

The socket's data goes to the channel through a pump (pump.OutputPump,
read only while the client's window has room); the channel's data goes to
the socket through a sink (stdin.StdinSink, the client's window opened
again only for what the socket took).  EOF travels as EOF (CHANNEL_EOF, a
shutdown of the socket's write side); an error on either side tears both
down.  The client's CLOSE ends the channel, not the data it sent before:
that may still wait in the sink's backlog for a slow reader, and is written
before the socket's write side is shut and the socket closed, as sshd
drains a channel's output after the peer's CLOSE (nchan.c,
CHAN_OUTPUT_WAIT_DRAIN).
"""

from __future__ import annotations

import logging
import socket

import paramiko

from privsep.session.loop import EventLoop
from privsep.session.pump import OutputPump
from privsep.session.stdin import StdinSink

log = logging.getLogger("privsep.session")

#: the most one read from a forwarded socket takes
BUFFER = 64 * 1024


class Splice:
    def __init__(self, loop: EventLoop, chan: paramiko.Channel, sock: socket.socket) -> None:
        self.loop, self.chan, self.sock = loop, chan, sock
        self.fd = sock.fileno()
        self.closed = False
        self._up_done = self._down_done = False
        sock.setblocking(False)
        self.sink = StdinSink(loop, chan, self.fd, close_on_eof=False, at_eof=self._down_eof,
                              on_broken=self._abort)
        self.pump = OutputPump(loop, chan, self.fd, BUFFER, on_end=self._up_ended)
        chan.on_gone = self._channel_gone
        chan.attach_sink(self.sink)

    def _down_eof(self) -> None:
        """The client's EOF, everything before it written: half-close the socket."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._down_done = True
        self._maybe_done()

    def _up_ended(self, clean: bool) -> None:
        """The socket's EOF (or failure)."""
        if not clean:
            self._abort()
            return
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            self._abort()
            return
        self._up_done = True
        self._maybe_done()

    def _channel_gone(self) -> None:
        """The channel is closed on both sides (the client's CLOSE, or the
        connection's end): nothing more is read for it, but what the client
        sent before still goes to the socket, then its write side is shut
        (``_down_eof``) and the splice ends.  Called with the channel's lock
        held (paramiko's _handle_close): the channel is not touched."""
        if self.closed:
            return
        self.pump.on_end = lambda clean: None  # nowhere to send what it would read
        self.pump.end(False)
        self._up_done = True
        self.sink.client_eof()  # at once when nothing waits, else once the backlog is written
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._up_done and self._down_done:
            self._close_channel()
            self.close()

    def _abort(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._close_channel()
        self.close()

    def _close_channel(self) -> None:
        if self.chan.closed:
            return  # closed already; and paramiko may hold its lock (_handle_close)
        try:
            self.chan.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def close(self) -> None:
        """Both ends are done, or one failed: let go of the socket."""
        if self.closed:
            return
        self.closed = True
        self.pump.on_end = lambda clean: None  # nothing more to tell
        self.pump.end(False)
        self.sink.stop()
        self.loop.forget(self.fd)
        self.sock.close()
