"""The session process's one event loop: every descriptor and timer of a
logged-in connection is served from the main thread.

sshd's session process is one thread around poll(2) (serverloop.c); so is
this one, with ``selectors``.  A descriptor has at most one reader and one
writer; each may carry a condition (``when``), asked before every wait, so
that a program's output is read only while the channel's window has room
and a backlog is written only while there is one.  Nothing here blocks but
the wait itself.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import time
from dataclasses import dataclass, field
from typing import Callable

Callback = Callable[[], None]
Condition = Callable[[], bool]


@dataclass
class _Watch:
    """What the loop does when one descriptor is ready."""

    reader: Callback | None = None
    read_when: Condition | None = None
    writer: Callback | None = None
    write_when: Condition | None = None
    #: the events the selector has for this descriptor now
    registered: int = 0

    def wanted(self) -> int:
        events = 0
        if self.reader is not None and (self.read_when is None or self.read_when()):
            events |= selectors.EVENT_READ
        if self.writer is not None and (self.write_when is None or self.write_when()):
            events |= selectors.EVENT_WRITE
        return events


@dataclass(order=True)
class Timer:
    """A callback due at ``deadline`` (time.monotonic()); cancel() drops it."""

    deadline: float
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._watches: dict[int, _Watch] = {}
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        #: callbacks run at the start of every pass, before the wait
        self._each_pass: list[Callback] = []
        #: the descriptor whose readiness is handled before the others' in
        #: a pass: the client's socket (set by the transport)
        self.first_fd: int | None = None

    # --- descriptors ---------------------------------------------------------------

    def add_reader(self, fd: int, callback: Callback, when: Condition | None = None) -> None:
        watch = self._watches.setdefault(fd, _Watch())
        watch.reader, watch.read_when = callback, when

    def add_writer(self, fd: int, callback: Callback, when: Condition | None = None) -> None:
        watch = self._watches.setdefault(fd, _Watch())
        watch.writer, watch.write_when = callback, when

    def remove_reader(self, fd: int) -> None:
        watch = self._watches.get(fd)
        if watch is not None:
            watch.reader = watch.read_when = None
            self._drop_if_idle(fd, watch)

    def remove_writer(self, fd: int) -> None:
        watch = self._watches.get(fd)
        if watch is not None:
            watch.writer = watch.write_when = None
            self._drop_if_idle(fd, watch)

    def forget(self, fd: int) -> None:
        """Stop watching ``fd`` at all: call before closing it, or a new
        descriptor with the same number would inherit the watch."""
        watch = self._watches.pop(fd, None)
        if watch is not None and watch.registered:
            self._unregister(fd)

    def _drop_if_idle(self, fd: int, watch: _Watch) -> None:
        if watch.reader is None and watch.writer is None:
            self.forget(fd)

    def _unregister(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    def _sync(self) -> None:
        """Tell the selector what each descriptor waits for now."""
        for fd, watch in list(self._watches.items()):
            events = watch.wanted()
            if events == watch.registered:
                continue
            try:
                if not events:
                    self._selector.unregister(fd)
                elif watch.registered:
                    self._selector.modify(fd, events)
                else:
                    self._selector.register(fd, events)
            except (KeyError, ValueError, OSError):
                # closed behind our back: nothing more will come from it
                self._watches.pop(fd, None)
                self._unregister(fd)
                continue
            watch.registered = events

    # --- timers -----------------------------------------------------------

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(time.monotonic() + max(delay, 0.0), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def _timeout(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(self._timers[0].deadline - time.monotonic(), 0.0)

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].deadline <= now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    # --- the loop ----------------------------------------------------------------------

    def each_pass(self, callback: Callback) -> None:
        """Run ``callback`` at the start of every pass, before the wait:
        after everything the previous pass read was handled, and never once
        the loop's ``until`` is true (sshd's channel garbage collection,
        which runs as its loop prepares the poll)."""
        self._each_pass.append(callback)

    def run_once(self) -> None:
        """One wait and whatever became ready or due."""
        for callback in self._each_pass:
            callback()
        self._sync()
        timeout = self._timeout()
        ready = self._selector.select(timeout)
        # The client's socket first, as sshd's loop reads it before it writes
        # a byte: a reset that came before the wait is then a read's error
        # ("Read error"), never that of a write made for a program's output.
        ready.sort(key=lambda item: item[0].fd != self.first_fd)
        for key, events in ready:
            watch = self._watches.get(key.fd)
            if watch is None:
                continue
            # A callback may drop a watch of another descriptor: look again.
            if events & selectors.EVENT_READ and watch.reader is not None \
                    and watch.registered & selectors.EVENT_READ:
                watch.reader()
            watch = self._watches.get(key.fd)
            if watch is not None and events & selectors.EVENT_WRITE and watch.writer is not None \
                    and watch.registered & selectors.EVENT_WRITE:
                watch.writer()
        self._run_due_timers()

    def run(self, until: Condition) -> None:
        """Serve until ``until()`` is true."""
        while not until():
            self.run_once()

    def close(self) -> None:
        self._selector.close()
