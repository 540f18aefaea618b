"""Pseudo-terminals, monitor side (root): allocate one for the user, and give
its device back to root when the session is done with it, as sshd's
pty_allocate and pty_release.  The window size and terminal modes are the
session process's to set (privsep/session/tty.py)."""

from __future__ import annotations

import fcntl
import grp
import os
import struct

#: TIOCGPTN, _IOR('T', 0x30, unsigned int) on Linux (x86-64, arm64): the
#: number of a master's pts.  Python's termios does not name it.
_TIOCGPTN = 0x80045430

#: ptys are given to the user with group tty, mode 0620 (write for `write`).
TTY_MODE = 0o620


def _tty_gid() -> int:
    try:
        return grp.getgrnam("tty").gr_gid
    except KeyError:
        return 0


def allocate(uid: int) -> tuple[int, int, str]:
    """(master, slave, /dev/pts/N), the slave owned by ``uid``:tty 0620."""
    master, slave = os.openpty()
    try:
        tty = os.ttyname(slave)
        if os.geteuid() == 0:  # an unprivileged daemon's ptys are its own already
            os.chown(tty, uid, _tty_gid())
            os.chmod(tty, TTY_MODE)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave, tty


def release(tty: str, master: int) -> None:
    """Give the pty device back to root, as sshd's pty_release does.

    ``master`` is the monitor's own master end, still open: the kernel keeps
    the number ours while it is, and it must be the one ``tty`` names, or
    the device is left alone."""
    if os.geteuid() != 0 or slave_name(master) != tty:
        return
    try:
        os.chown(tty, 0, 0)
        os.chmod(tty, 0o666)
    except FileNotFoundError:
        pass


def slave_name(master: int) -> str | None:
    """/dev/pts/N of a master end, from the kernel (TIOCGPTN), or None."""
    try:
        number = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))[0]
    except OSError:
        return None
    return f"/dev/pts/{number}"
