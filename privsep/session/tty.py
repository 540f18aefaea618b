"""The user's terminal, session side (the user's uid): the window size and
the client's terminal modes, applied to a pty the monitor allocated."""

from __future__ import annotations

import fcntl
import struct
import termios

from privsep.wire.sshbuf import Reader


def set_size(fd: int, cols: int, rows: int, width_px: int, height_px: int) -> None:
    """Set the window size; the kernel sends SIGWINCH to the foreground job."""
    clamp = lambda v: max(0, min(v, 0xFFFF))  # noqa: E731
    packed = struct.pack("HHHH", clamp(rows), clamp(cols), clamp(width_px), clamp(height_px))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, packed)


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
            # 255 is the wire's "disabled", _POSIX_VDISABLE (0) on Linux, as
            # OpenSSH's ttymodes.c decodes it: stty then shows <undef>
            attrs[6][getattr(termios, _CC[opcode])] = bytes([0 if value == 255 else value & 0xFF])
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
