"""Opening a tun or tap device for ``ssh -w`` (the monitor's half of
tun@openssh.com), as sshd's sys_tun_open on Linux: /dev/net/tun, then
TUNSETIFF with IFF_TUN or IFF_TAP and IFF_NO_PI, named after the unit or
left to the kernel ("tun%d") for any unit.

Runs in the monitor, called inside ``ids.user_rights``: sshd 9.2 opens the
device in its post-auth child, which is the user (or root for a root login,
which sshd serves without a separate child), so the kernel's own rules
decide, and they must decide the same here.  With the user's effective uid
the monitor has no effective capabilities, so the user gets a device only
where the kernel lets the user have one: /dev/net/tun must be open to them,
and the interface must be a persistent one they own (``ip tuntap add ...
user NAME``).  The descriptor goes to the session process (SCM_RIGHTS); the
monitor keeps no copy.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct

from privsep.wire import tunnel

log = logging.getLogger("privsep.monitor")

TUN_CONTROL = "/dev/net/tun"
#: linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
#: struct ifreq: a 16-byte name, then a 24-byte union (flags first).
_IFNAMSIZ = 16
_IFREQ_SIZE = 40


class TunError(Exception):
    """The device could not be opened; the text is sshd's debug line."""


def open_device(mode: int, unit: int) -> tuple[int, str]:
    """(descriptor, interface name) of the device for ``mode`` and ``unit``
    (tunnel.TUNID_ANY lets the kernel number it)."""
    try:
        fd = os.open(TUN_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise TunError(f'sys_tun_open: failed to open tunnel control device '
                       f'"{TUN_CONTROL}": {exc.strerror}') from None
    try:
        if unit != tunnel.TUNID_ANY and unit > tunnel.TUNID_MAX:
            raise TunError(f"sys_tun_open: invalid tunnel id {unit:x}")
        name = tunnel.interface_pattern(mode, unit).encode()[:_IFNAMSIZ - 1]
        flags = (IFF_TAP if mode == tunnel.MODE_ETHERNET else IFF_TUN) | IFF_NO_PI
        request = struct.pack(f"{_IFNAMSIZ}sH", name, flags).ljust(_IFREQ_SIZE, b"\0")
        try:
            answer = fcntl.ioctl(fd, TUNSETIFF, request)
        except OSError as exc:
            raise TunError(f"sys_tun_open: failed to configure tunnel (mode {mode}): "
                           f"{exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    ifname = answer[:_IFNAMSIZ].split(b"\0", 1)[0].decode(errors="replace")
    log.debug("sys_tun_open: %s mode %d fd %d", ifname, mode, fd)
    return fd, ifname
