"""Pseudo-terminals.  ``allocate``/``release`` run in the root monitor;
``apply_modes``, ``set_size`` and ``make_controlling`` in the session process
and the shell it forks, as the user."""

from __future__ import annotations

import fcntl
import grp
import os
import struct
import termios

from privsep.sshbuf import Reader

#: ptys are given to the user with group tty, mode 0620 (write for `write`).
TTY_MODE = 0o620


def _tty_gid() -> int:
    try:
        return grp.getgrnam("tty").gr_gid
    except KeyError:
        return 0


def allocate(uid: int, cols: int, rows: int, width_px: int, height_px: int) -> tuple[int, int, str]:
    """(master, slave, /dev/pts/N), the slave owned by ``uid``:tty 0620."""
    master, slave = os.openpty()
    try:
        tty = os.ttyname(slave)
        if os.geteuid() == 0:  # an unprivileged daemon's ptys are its own already
            os.chown(tty, uid, _tty_gid())
            os.chmod(tty, TTY_MODE)
        set_size(master, cols, rows, width_px, height_px)
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


def set_size(fd: int, cols: int, rows: int, width_px: int, height_px: int) -> None:
    """Set the window size; the kernel sends SIGWINCH to the foreground job."""
    clamp = lambda v: max(0, min(v, 0xFFFF))  # noqa: E731
    packed = struct.pack("HHHH", clamp(rows), clamp(cols), clamp(width_px), clamp(height_px))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, packed)


def make_controlling(slave: int) -> None:
    """In the forked shell: new session, with ``slave`` as controlling tty."""
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)


# RFC 4254 section 8 opcodes -> (termios attribute index, flag or cc index).
_CC = {1: "VINTR", 2: "VQUIT", 3: "VERASE", 4: "VKILL", 5: "VEOF", 6: "VEOL", 7: "VEOL2",
       8: "VSTART", 9: "VSTOP", 10: "VSUSP", 12: "VREPRINT", 13: "VWERASE", 14: "VLNEXT",
       18: "VDISCARD"}
_IFLAG = {30: "IGNPAR", 31: "PARMRK", 32: "INPCK", 33: "ISTRIP", 34: "INLCR", 35: "IGNCR",
          36: "ICRNL", 37: "IUCLC", 38: "IXON", 39: "IXANY", 40: "IXOFF", 41: "IMAXBEL", 42: "IUTF8"}
_LFLAG = {50: "ISIG", 51: "ICANON", 52: "XCASE", 53: "ECHO", 54: "ECHOE", 55: "ECHOK",
          56: "ECHONL", 57: "NOFLSH", 58: "TOSTOP", 59: "IEXTEN", 60: "ECHOCTL", 61: "ECHOKE",
          62: "PENDIN"}
_OFLAG = {70: "OPOST", 71: "OLCUC", 72: "ONLCR", 73: "OCRNL", 74: "ONOCR", 75: "ONLRET"}
_CFLAG = {90: "CS7", 91: "CS8", 92: "PARENB", 93: "PARODD"}
_FLAG_TABLES = ((0, _IFLAG), (1, _OFLAG), (2, _CFLAG), (3, _LFLAG))


def parse_modes(blob: bytes) -> list[tuple[int, int]]:
    """(opcode, value) pairs of an encoded terminal-modes string; stops at
    TTY_OP_END, at an opcode 160+ (values unknown) or at truncation."""
    pairs = []
    r = Reader(blob)
    while r.remaining() >= 5:  # less is a truncated pair: the ones before it stand
        opcode = r.byte()
        if opcode == 0 or opcode >= 160:
            break
        pairs.append((opcode, r.uint32()))
    return pairs


def apply_modes(fd: int, blob: bytes) -> None:
    """Apply the client's terminal modes to the pty; unknown opcodes are ignored."""
    attrs = termios.tcgetattr(fd)
    for opcode, value in parse_modes(blob):
        if opcode in _CC and hasattr(termios, _CC[opcode]):
            attrs[6][getattr(termios, _CC[opcode])] = bytes([value & 0xFF])
            continue
        for index, table in _FLAG_TABLES:
            name = table.get(opcode)
            if name and hasattr(termios, name):
                flag = getattr(termios, name)
                attrs[index] = attrs[index] | flag if value else attrs[index] & ~flag
        if opcode == 128:
            attrs[4] = _speed(value, attrs[4])
        elif opcode == 129:
            attrs[5] = _speed(value, attrs[5])
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _speed(baud: int, current: int) -> int:
    return getattr(termios, f"B{baud}", current)
