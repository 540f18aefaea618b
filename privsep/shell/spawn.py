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

#: The system-wide rc file sshd runs when the user's ~/.ssh/rc does not.
SYSTEM_RC = "/etc/ssh/sshrc"
#: sshd's _PATH_BSHELL: what runs either rc file.
BSHELL = "/bin/sh"

#: Signals the session process handles or ignores, given back their defaults.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP,
                  signal.SIGCHLD, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


@dataclass(frozen=True)
class X11Auth:
    """A forwarded X11 display's authorization, as the rc files and xauth get it."""

    #: the authorization protocol and the (fake) cookie the client sent
    proto: str
    cookie: str
    #: the display name xauth files it under ("unix:10.0" for a localhost display)
    auth_display: str
    #: XAuthLocation
    xauth_path: str

    def rc_line(self) -> str:
        """What an rc file reads on its stdin: "proto cookie"."""
        return f"{self.proto} {self.cookie}\n"

    def xauth_input(self) -> str:
        """xauth's commands: drop any old entry for the display, add ours."""
        return (f"remove {self.auth_display}\n"
                f"add {self.auth_display} {self.proto} {self.cookie}\n")


@dataclass(frozen=True)
class Program:
    """What to execute, and where."""

    path: str
    argv: list[str]
    env: dict[str, str]
    home: str
    #: written to its stdout before the exec (a login shell's motd)
    banner: str = ""
    #: ~/.ssh/rc may run (PermitUserRC, no-user-rc, not a subsystem or ForceCommand)
    user_rc: bool = False
    #: the X11 display's authorization, when X11 is forwarded on this session
    x11: X11Auth | None = None
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


def spawn_on_pipes(program: Program, stdin: int, stdout: int, stderr: int) -> int | None:
    """``on_pipes`` without a fork of the session process: posix_spawn(3)
    (a vfork, so none of the session process's pages are copied or
    write-protected) makes the program a session leader with its standard
    fds on the pipe ends, the session process's signals back to their
    defaults, an empty signal mask, in the home directory.  Its pid; or None
    when the program needs what only ``on_pipes`` does between fork and
    exec (a banner, an rc file or xauth to run, a home directory it cannot
    enter and the message about it), or when the exec failed (``on_pipes``
    then says why, on the program's stderr).

    A fork of the daemon's image, its exit and the copy-on-write faults it
    causes cost the session process and the child about 2.5 ms of CPU per
    program; this about 0.4 ms (docs/DESIGN.md, "CPU per login")."""
    if program.banner or program.x11 is not None or _rc_file(program) is not None:
        return None
    # posix_spawn cannot close a range of descriptors: every one above 2 is
    # made close-on-exec instead (those received with SCM_RIGHTS are not).
    # Without /proc (a chroot jail) we cannot list them: fork instead.
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return None
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now
    try:
        here: str | None = os.getcwd()
    except OSError:
        here = None
    try:
        os.chdir(program.home)  # posix_spawn has no chdir: the child inherits ours
    except OSError:
        return None
    try:
        return os.posix_spawn(
            program.path, program.argv, program.env,
            file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
                          (os.POSIX_SPAWN_DUP2, stderr, 2)],
            setsid=True, setsigmask=(), setsigdef=_RESET_SIGNALS)
    except OSError:
        return None
    finally:
        try:
            os.chdir(here if here is not None else "/")
        except OSError:
            os.chdir("/")


def _rc_file(program: Program) -> str | None:
    """The rc file to run before the program, if any: ~/.ssh/rc if allowed
    and present, else /etc/ssh/sshrc if present (``run_rc_files``, and
    ``spawn_on_pipes``, which leaves the program to the fork when one is)."""
    user_rc = os.path.join(program.home, ".ssh", "rc")
    if program.user_rc and os.path.exists(user_rc):
        return user_rc
    if os.path.exists(SYSTEM_RC):
        return SYSTEM_RC
    return None


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
        run_rc_files(program)
        try:
            os.execve(program.path, program.argv, program.env)
        except OSError as exc:
            # sshd's perror(shell) and exit(1): a jail without the shell says so
            os.write(2, f"{program.path}: {exc.strerror}\n".encode())
            os._exit(1)
    except BaseException:
        pass
    os._exit(127)


def run_rc_files(program: Program) -> None:
    """sshd's do_rc_files: ~/.ssh/rc through the user's shell if allowed and
    present, else /etc/ssh/sshrc if present, each given the X11
    authorization ("proto cookie") on its stdin; with neither, xauth
    (XAuthLocation) files the X11 cookie in ~/.Xauthority.  Their output
    goes where the program's will.  Waited for."""
    rc = _rc_file(program)
    x11 = program.x11
    if rc == SYSTEM_RC:
        path, argv = BSHELL, [BSHELL, SYSTEM_RC]
        feed, what = (x11.rc_line() if x11 else ""), SYSTEM_RC
    elif rc is not None:  # the user's, through the user's shell
        path, argv = program.path, [program.path, "-c", f"{BSHELL} {rc}"]
        feed, what = (x11.rc_line() if x11 else ""), rc
    elif x11 is not None:
        path, argv = x11.xauth_path, [x11.xauth_path, "-q", "-"]
        feed, what = x11.xauth_input(), f"{x11.xauth_path} -q -"
    else:
        return
    _feed_and_wait(path, argv, program.env, feed, what)


def _feed_and_wait(path: str, argv: list[str], env: dict[str, str], feed: str,
                   what: str) -> None:
    """Run ``argv`` with ``feed`` on its stdin (popen(3) "w", as sshd) and wait."""
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
    except OSError:
        os.write(2, f"Could not run {what}\n".encode())
        return
    if pid == 0:
        try:
            os.dup2(read_end, 0)
            os.close(read_end)
            os.close(write_end)
            os.execve(path, argv, env)
        finally:
            os._exit(127)
    os.close(read_end)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # an rc file that reads nothing
    try:
        if feed:
            os.write(write_end, feed.encode())
    except OSError:
        pass
    os.close(write_end)
    os.waitpid(pid, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
