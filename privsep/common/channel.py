"""The socketpair between the monitor and a child: one record per datagram.

A SOCK_SEQPACKET pair keeps record boundaries, so a record never straddles
two reads and a truncated one is seen as truncated (MSG_TRUNC).  Descriptors
travel with SCM_RIGHTS in the same datagram.  Both sides use this class; the
format itself is privsep/wire/messages.py.
"""

from __future__ import annotations

import array
import os
import socket

from privsep.wire import messages as wire

_RECV_SIZE = wire.MAX_RECORD + 4 + 1  # one more than the largest legal record
_MAX_FDS = 4


def make_pair() -> tuple[socket.socket, socket.socket]:
    """(monitor end, child end), both close-on-exec."""
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in pair:
        # A datagram must fit the send buffer whole, and the default one
        # (net.core.wmem_default, 208 KiB) is smaller than the largest record.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _RECV_SIZE + 4096)
    return pair


class MonitorChannel:
    """Send and receive whole records over one end of the pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: wire.Message, fds: tuple[int, ...] = ()) -> None:
        record = wire.encode(msg)
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        self.sock.sendmsg([record], ancillary)

    def recv(self) -> tuple[wire.Message, list[int]]:
        """The next record and its descriptors.

        Raises EOFError when the other end closed, ProtocolError for a record
        that is malformed, oversized or carries the wrong number of fds (any
        fds received are closed first, so an attacker cannot leak them in).
        """
        fd_space = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
        data, ancdata, flags, _ = self.sock.recvmsg(_RECV_SIZE, fd_space)
        fds = _fds_from(ancdata)
        try:
            if not data and not fds:
                raise EOFError("monitor channel closed")
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise wire.ProtocolError("oversized record")
            msg = wire.decode(data)
            if len(fds) != msg.FDS:
                raise wire.ProtocolError(
                    f"{type(msg).__name__} came with {len(fds)} descriptors"
                )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return msg, fds

    def call(self, msg: wire.Message,
             answer: type | tuple[type, ...]) -> tuple[wire.Message, list[int]]:
        """Send a request and wait for its answer, which must be of type
        ``answer`` (or one of them: a refusal travels without descriptors)."""
        self.send(msg)
        reply, fds = self.recv()
        if not isinstance(reply, answer):
            for fd in fds:
                os.close(fd)
            wanted = " or ".join(a.__name__ for a in (answer if isinstance(answer, tuple)
                                                      else (answer,)))
            raise wire.ProtocolError(f"expected {wanted}, got {type(reply).__name__}")
        return reply, fds

    def close(self) -> None:
        self.sock.close()


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
            fds.extend(arr)
    return fds
