"""The user's program between fork and exec: run in the child the session
process forks, as the user, until execve replaces it.

It becomes a session leader (on a pty: with the pts as its controlling
terminal), puts its standard descriptors in place, shows a login shell what
PAM said at login, closes everything else and executes the program.
Nothing here returns: an error ends the child with status 127.
"""

from __future__ import annotations

import fcntl
import os
import signal
import termios
from dataclasses import dataclass
from typing import NoReturn

#: Signals the session process handles or ignores, given back their defaults.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP,
                  signal.SIGCHLD, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


@dataclass(frozen=True)
class Program:
    """What to execute, and where."""

    path: str
    argv: list[str]
    env: dict[str, str]
    home: str
    #: written to its stdout before the exec (a login shell's motd)
    banner: str = ""
    #: no word about a missing home directory (in a ChrootDirectory jail, as sshd)
    quiet_home: bool = False


def on_pty(program: Program, master: int, slave: int) -> NoReturn:
    """Session leader with ``slave`` as controlling tty and stdin/out/err."""
    try:
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
    except BaseException:
        os._exit(127)
    _exec(program)


def on_pipes(program: Program, stdin: int, stdout: int, stderr: int) -> NoReturn:
    """Session leader without a tty, its standard fds on the given pipe ends."""
    try:
        os.setsid()
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
    except BaseException:
        os._exit(127)
    _exec(program)


def _exec(program: Program) -> NoReturn:
    try:
        if program.banner:
            os.write(1, program.banner.encode("utf-8", "replace"))
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.closerange(3, 65536)
        try:
            os.chdir(program.home)
        except OSError as exc:
            if not program.quiet_home:
                os.write(2, f"Could not chdir to home directory {program.home}: "
                            f"{exc.strerror}\n".encode())
                os.chdir("/")
        try:
            os.execve(program.path, program.argv, program.env)
        except OSError as exc:
            # sshd's perror(shell) and exit(1): a jail without the shell says so
            os.write(2, f"{program.path}: {exc.strerror}\n".encode())
            os._exit(1)
    except BaseException:
        pass
    os._exit(127)
