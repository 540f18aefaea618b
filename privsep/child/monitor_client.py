"""Child-side stubs: how the net-child and the session process ask the monitor.

Each function sends one request and waits for its answer.  A lock keeps
paramiko's transport thread and channel threads from interleaving requests.
"""

from __future__ import annotations

import logging
import threading

from privsep.wire import messages as wire
from privsep.common.channel import MonitorChannel
from privsep.wire.facts import MAX_CHILD_LOG


class MonitorClient:
    def __init__(self, channel: MonitorChannel) -> None:
        self._channel = channel
        self._lock = threading.Lock()

    def fileno(self) -> int:
        """The monitor socket's descriptor (a forked child keeps it to log)."""
        return self._channel.fileno()

    def _call(self, request: wire.Message,
              answer: type | tuple[type, ...]) -> tuple[wire.Message, list[int]]:
        with self._lock:
            return self._channel.call(request, answer)

    def sign(self, algorithm: str, data: bytes) -> bytes:
        reply, _ = self._call(wire.SignRequest(algorithm, data), wire.SignAnswer)
        return reply.signature

    def pwnam(self, user: str) -> wire.PwnamAnswer:
        reply, _ = self._call(wire.PwnamRequest(user), wire.PwnamAnswer)
        return reply

    def kbdint(self, start: bool, responses: list[str]) -> wire.KbdintAnswer:
        reply, _ = self._call(wire.KbdintRequest(start, responses), wire.KbdintAnswer)
        return reply

    def auth_password(self, password: bytes) -> wire.PasswordAnswer:
        reply, _ = self._call(wire.PasswordRequest(password), wire.PasswordAnswer)
        return reply

    def key_allowed(self, algorithm: str, keyblob: bytes) -> bool:
        reply, _ = self._call(wire.KeyAllowedRequest(algorithm, keyblob), wire.KeyAllowedAnswer)
        return reply.allowed

    def key_verify(self, algorithm: str, keyblob: bytes, signed: bytes,
                   signature: bytes) -> wire.KeyVerifyAnswer:
        request = wire.KeyVerifyRequest(algorithm, keyblob, signed, signature)
        reply, _ = self._call(request, wire.KeyVerifyAnswer)
        return reply

    def hostbased(self, request: wire.HostbasedRequest) -> wire.HostbasedAnswer:
        reply, _ = self._call(request, wire.HostbasedAnswer)
        return reply

    def gex_group(self, min_bits: int, want_bits: int, max_bits: int) -> tuple[int, int]:
        """(prime, generator) of a group-exchange group the monitor chose."""
        reply, _ = self._call(wire.ModuliRequest(min_bits, want_bits, max_bits), wire.ModuliAnswer)
        return int.from_bytes(reply.prime, "big"), int.from_bytes(reply.generator, "big")

    def handoff(self, state: wire.TransportState) -> None:
        with self._lock:
            self._channel.send(wire.Handoff(state))

    def pty(self, term: str, cols: int, rows: int, width_px: int,
            height_px: int) -> tuple[wire.PtyAnswer, int, int]:
        """The answer (tty path, last login), master fd, slave fd of a pty the
        monitor allocated."""
        reply, fds = self._call(wire.PtyRequest(term, cols, rows, width_px, height_px), wire.PtyAnswer)
        return reply, fds[0], fds[1]

    def pty_cleanup(self, tty: str) -> None:
        self._call(wire.PtyCleanupRequest(tty), wire.PtyCleanupAnswer)

    def tun(self, mode: int, unit: int) -> tuple[str, int] | str:
        """(interface name, descriptor) of a tun or tap device the monitor
        opened with the user's rights, or the reason it could not."""
        reply, fds = self._call(wire.TunRequest(mode, unit), (wire.TunAnswer, wire.TunRefused))
        if isinstance(reply, wire.TunAnswer):
            return reply.ifname, fds[0]
        return reply.reason

    def banner_refused(self, reason: str, detail: str) -> None:
        """Tell the monitor why the client's identification was refused."""
        with self._lock:
            self._channel.send(wire.BannerRefused(reason, detail))

    def log(self, level: int, text: str) -> None:
        with self._lock:
            # a client's raw bytes (decoded with surrogateescape) go as they came
            raw = text[:MAX_CHILD_LOG].encode("utf-8", "surrogateescape")
            self._channel.send(wire.Log(level, raw))


class MonitorLogHandler(logging.Handler):
    """Sends a child's log records to the monitor, which writes them out."""

    def __init__(self, client: MonitorClient) -> None:
        super().__init__()
        self._client = client

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._client.log(record.levelno, record.getMessage())
        except Exception:  # the monitor is gone: nowhere left to log
            pass
