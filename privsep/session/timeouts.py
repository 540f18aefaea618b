"""ChannelTimeout and UnusedConnectionTimeout: timers of the session
process's loop, with sshd 9.2's meaning (channels.c, serverloop.c).

ChannelTimeout gives each channel type pattern ("session:*=5m",
"direct-tcpip=30s", ...) an inactivity limit.  A channel's type is the one
sshd gives it: "session:shell", "session:command" or
"session:subsystem:NAME" once its program runs (a session's plain
"session" no longer matches then, as in 9.2), "direct-tcpip",
"direct-streamlocal@openssh.com", "forwarded-tcpip",
"forwarded-streamlocal@openssh.com", "agent-connection" and
"x11-connection".  The first pattern that matches decides; 0 means none.
The clock starts when the channel is open (a session: when its program
starts) and is set back by data moving either way; a channel idle for the
limit is closed (EOF and CLOSE to the client), once.

UnusedConnectionTimeout ends the connection once it has had no open
channel for that long, counting from the login: listeners (ssh -R, the
agent socket, an X11 display) are not channels, nor is a session channel
whose program has not started.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import paramiko

from privsep.common.log import verbose
from privsep.config.match import match_pattern
from privsep.config.values import parse_time
from privsep.session.loop import EventLoop, Timer

log = logging.getLogger("privsep.session")

#: the channel types of what the session process opens towards the client
SERVER_OPENED_TYPES = {
    "auth-agent@openssh.com": "agent-connection",
    "x11": "x11-connection",
}


def parse_channel_timeouts(specs: list[str]) -> list[tuple[str, int]]:
    """ChannelTimeout's "type=interval" words (checked when the file was
    read) as (pattern, seconds), in their order."""
    rules = []
    for spec in specs:
        pattern, _, interval = spec.partition("=")
        rules.append((pattern, parse_time(interval)))
    return rules


class ChannelTimeouts:
    """The inactivity clocks of one connection's channels."""

    def __init__(self, loop: EventLoop, specs: list[str]) -> None:
        self.loop = loop
        self.rules = parse_channel_timeouts(specs)
        self._timers: dict[int, Timer] = {}

    def lookup(self, ctype: str) -> int:
        """sshd's lookup_timeout: the first matching pattern's seconds."""
        for pattern, seconds in self.rules:
            if match_pattern(ctype, pattern):
                return seconds
        return 0

    def opened(self, chan: paramiko.Channel, ctype: str) -> None:
        """``chan`` is open as ``ctype`` from now on (or was relabelled, as
        a session when its program starts): its clock starts now."""
        old = self._timers.pop(chan.get_id(), None)
        if old is not None:
            old.cancel()
        seconds = self.lookup(ctype)
        log.debug("channel %d: labeled as %s (inactive timeout %u)", chan.get_id(), ctype, seconds)
        if not seconds:
            return
        chan.lastused = time.monotonic()
        self._schedule(chan, seconds, seconds)

    def _schedule(self, chan: paramiko.Channel, seconds: int, delay: float) -> None:
        self._timers[chan.get_id()] = self.loop.call_later(
            delay, lambda: self._check(chan, seconds))

    def _check(self, chan: paramiko.Channel, seconds: int) -> None:
        self._timers.pop(chan.get_id(), None)
        if chan.closed:
            return
        due = chan.lastused + seconds
        now = time.monotonic()
        if now < due:
            self._schedule(chan, seconds, due - now)
            return
        verbose(log, "channel %d: closing after %u seconds of inactivity", chan.get_id(), seconds)
        try:
            chan.close()  # EOF and CLOSE; the program's pipes close with the channel
        except (OSError, EOFError, paramiko.SSHException) as exc:
            log.debug("channel %d: not closed: %s", chan.get_id(), exc)

    def gone(self, chanid: int) -> None:
        timer = self._timers.pop(chanid, None)
        if timer is not None:
            timer.cancel()


class UnusedConnection:
    """UnusedConnectionTimeout: ``expire`` is called once the connection has
    been without an open channel (``channels_open()`` false) for ``seconds``."""

    def __init__(self, loop: EventLoop, seconds: int, channels_open: Callable[[], bool],
                 expire: Callable[[], None]) -> None:
        self.loop, self.seconds = loop, seconds
        self.channels_open, self.expire = channels_open, expire
        #: since when nothing has been open (the login, or the last close)
        self.idle_since = time.monotonic()
        loop.call_later(seconds, self._check)

    def channel_closed(self) -> None:
        """A channel went: if it was the last open one, the clock starts again."""
        if not self.channels_open():
            self.idle_since = time.monotonic()

    def _check(self) -> None:
        now = time.monotonic()
        if self.channels_open():
            self.loop.call_later(self.seconds, self._check)
            return
        due = self.idle_since + self.seconds
        if now < due:
            self.loop.call_later(due - now, self._check)
            return
        self.expire()
