"""systemd's sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

Used by the listener (root) only: READY=1 once it listens, RELOADING=1 and
READY=1 around a SIGHUP re-exec, STOPPING=1 on SIGTERM.  Outside systemd
(no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send STATE (e.g. "READY=1\\nMAINPID=42") to the service manager;
    False when there is none or it cannot be reached."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True
