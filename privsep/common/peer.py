"""The two ends of a client's TCP connection, and the text sshd's log lines
give them ("127.0.0.1 port 50022"): one definition for the monitor, the
net-child and the session process."""

from __future__ import annotations

import socket
from dataclasses import dataclass

#: What sshd prints when the connection is not TCP (inetd mode over pipes).
UNKNOWN = ("UNKNOWN", 65535)


@dataclass(frozen=True)
class Peer:
    """Both ends of the TCP connection, as sshd logs them."""

    addr: str
    port: int
    local_addr: str
    local_port: int
    #: the routing domain as sshd 9.2 on Linux knows it: the device the
    #: socket is bound to (SO_BINDTODEVICE), "" when none; None when the
    #: connection is no socket (what ``Match RDomain`` then cannot test)
    rdomain: str | None = None

    @classmethod
    def of(cls, sock: socket.socket) -> "Peer":
        rdomain = bound_device(sock)
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return cls(*UNKNOWN, *UNKNOWN, rdomain)
        remote, local = sock.getpeername(), sock.getsockname()
        return cls(plain_address(remote[0]), remote[1], plain_address(local[0]), local[1],
                   rdomain)

    def __str__(self) -> str:
        return f"{self.addr} port {self.port}"


def bound_device(sock: socket.socket) -> str | None:
    """The network device (VRF) ``sock`` is bound to, "" for none, None
    when it is not a socket: sshd 9.2's sys_get_rdomain on Linux."""
    try:
        device = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
    except OSError:
        return None
    return device.split(b"\0", 1)[0].decode("ascii", "replace")


def plain_address(addr: str) -> str:
    """IPv4-mapped IPv6 addresses as plain IPv4, as sshd prints them."""
    return addr.removeprefix("::ffff:") if addr.startswith("::ffff:") and "." in addr else addr
