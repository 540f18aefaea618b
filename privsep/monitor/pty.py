"""Pseudo-terminals, monitor side (root): allocate one for the user, and give
its device back to root when the session is done with it, as sshd's
pty_allocate and pty_release.  The window size and terminal modes are the
session process's to set (privsep/session/tty.py)."""

from __future__ import annotations

import grp
import os

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


def release(tty: str) -> None:
    """Give the pty device back to root, as sshd's pty_release does."""
    if os.geteuid() != 0:
        return
    try:
        os.chown(tty, 0, 0)
        os.chmod(tty, 0o666)
    except FileNotFoundError:
        pass  # the kernel already freed it
