"""What a connection leaves behind when one of its processes is killed, and
how it is taken away (root: the monitor, and the listener after a monitor).

A connection's processes are found by the audit session id that
pam_loginuid gives the login in the monitor (``/proc/PID/sessionid``). Every
process forked from then on inherits it, through setsid, double forks and
reparenting alike, and no unprivileged process can change it: it names the
connection's processes and nothing else.  Where there is none (no PAM, no
pam_loginuid, a kernel without audit, a container where loginuid cannot be
written) the id is the same as the listener's, and the processes whose
controlling terminal is one of the connection's ptys are taken instead.

A pts is given back to root only while something of the connection still
holds it: the kernel cannot give its number to another login until every
descriptor of it (master or slave) is closed, so the name is the
connection's as long as one of its frozen processes has it open or as its
controlling terminal.  Once the last holder is gone the device is gone too
(devpts removes ``/dev/pts/N`` when the master closes).
"""

from __future__ import annotations

import errno
import os
import pwd
import signal
import stat
import time
from dataclasses import dataclass, field

from privsep.monitor import loginrec

#: /proc/PID/sessionid of a process no login has marked ((u32)-1).
UNSET_SESSION = 4294967295

#: How long the killing may take before it is given up (a process stuck in
#: the kernel, uninterruptible, cannot be waited for by the listener).
KILL_DEADLINE = 2.0


def audit_session(pid: int) -> int | None:
    """The audit session id of ``pid`` (a zombie's too), or None."""
    try:
        with open(f"/proc/{pid}/sessionid", "rb") as handle:
            value = int(handle.read().strip() or b"0")
    except (OSError, ValueError):
        return None
    return None if value in (UNSET_SESSION, 0) else value


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str
    #: the controlling terminal's device number, 0 for none
    tty: int
    session: int | None


def _info(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session tty_nr ...": comm may hold anything.
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        state, tty = fields[0].decode(), int(fields[4])
    except (IndexError, ValueError):
        return None
    return ProcInfo(pid, state, tty, audit_session(pid))


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _uid(pid: int) -> int | None:
    """The real uid (/proc/PID itself is root's for a process that changed ids)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class Connection:
    """One connection's processes: those of audit session ``session``, and
    those of ``uid`` whose controlling terminal is one of ``ttys``."""

    session: int | None
    ttys: set[int] = field(default_factory=set)
    uid: int | None = None
    exclude: set[int] = field(default_factory=set)

    def members(self) -> dict[int, ProcInfo]:
        found = {}
        for pid in _pids():
            if pid in self.exclude:
                continue
            info = _info(pid)
            if info is None or info.state in ("Z", "X"):
                continue
            if self.session is not None and info.session == self.session:
                found[pid] = info
            elif info.tty and info.tty in self.ttys and self.uid is not None \
                    and _uid(pid) == self.uid:
                found[pid] = info
        return found

    def freeze(self, rounds: int = 20) -> dict[int, ProcInfo]:
        """SIGSTOP every member, again until a scan finds no new one (a
        process that forked meanwhile); the members, stopped."""
        stopped: dict[int, ProcInfo] = {}
        for _ in range(rounds):
            new = {pid: info for pid, info in self.members().items() if pid not in stopped}
            if not new:
                break
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            stopped.update(new)
        return stopped

    def kill(self, deadline: float = KILL_DEADLINE) -> int:
        """SIGKILL every member until none is left (or the deadline passed);
        how many were killed."""
        killed: set[int] = set()
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            alive = self.members()
            if not alive:
                break
            for pid in alive:
                if _signal(pid, signal.SIGKILL):
                    killed.add(pid)
            time.sleep(0.002)
        return len(killed)


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _holds(pid: int, path: str, rdev: int) -> bool:
    """Whether ``pid`` has ``path`` open or as its controlling terminal."""
    info = _info(pid)
    if info is not None and info.tty == rdev:
        return True
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                return True
        except OSError:
            continue
    return False


def pts_path(rdev: int) -> str | None:
    """/dev/pts/N of a Unix98 pty slave device number, or None."""
    major, minor = os.major(rdev), os.minor(rdev)
    if not 136 <= major <= 143:
        return None
    return f"/dev/pts/{(major - 136) * 256 + minor}"


def open_pts(path: str) -> int | None:
    """``path`` opened (it is held, its number ours to keep) if it is still a
    pts, or None (gone: its last master was closed)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISCHR(os.fstat(fd).st_mode) or pts_path(os.fstat(fd).st_rdev) != path:
        os.close(fd)
        return None
    return fd


def give_back(fd: int) -> bool:
    """The held pts back to root, mode 0666, as sshd's pty_release; whether
    it was anyone else's until now."""
    st = os.fstat(fd)
    if st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o666:
        return False
    os.fchown(fd, 0, 0)
    os.fchmod(fd, 0o666)
    return True


@dataclass
class Report:
    """What was taken away, for the log."""

    records: list[str] = field(default_factory=list)
    ptys: list[str] = field(default_factory=list)
    killed: int = 0
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.ptys or self.killed or self.errors)

    def text(self) -> str:
        parts = []
        if self.killed:
            parts.append(f"killed {self.killed} process{'es' if self.killed != 1 else ''}")
        if self.ptys:
            parts.append("gave " + ", ".join(self.ptys) + " back to root")
        if self.records:
            parts.append("wrote the logout record of " + ", ".join(self.records))
        parts.extend(self.errors)
        return "; ".join(parts) or "nothing was left"


def after_monitor(pid: int, crashed: bool, own_session: int | None,
                  lock_timeout: float = 1.0) -> Report:
    """The listener's cleanup after its monitor ``pid``, which has exited
    and is not reaped yet (a zombie keeps its pid, so the utmp entries that
    name it are its own).

    Every time: the utmp USER_PROCESS entries naming ``pid`` are closed (a
    monitor that ended normally has closed them itself).  When it did not end
    normally (``crashed``): its connection's processes are frozen, the ptys
    they still hold are given back to root, then they are killed.
    ``own_session`` is the listener's audit session: a monitor still in it
    had not opened a PAM session, and its id names no login."""
    report = Report()
    try:
        entries = loginrec.user_processes(loginrec.UTMP_PATH, pid, timeout=lock_timeout)
    except FileNotFoundError:
        entries = []
    except OSError as exc:
        entries = []
        report.errors.append(f"utmp not read: {exc}")
    if crashed:
        try:
            _end_connection(pid, entries, own_session, report, lock_timeout)
        except Exception as exc:  # the records are still to be closed
            report.errors.append(f"cleanup failed: {exc!r}")
    for entry in entries:
        try:
            loginrec.record_logout(entry.line, pid, timeout=lock_timeout)
            report.records.append(entry.line)
        except OSError as exc:
            report.errors.append(f"logout record of {entry.line} not written: {exc}")
    return report


def _end_connection(pid: int, entries: list[loginrec.UtmpEntry], own_session: int | None,
                    report: Report, lock_timeout: float) -> None:
    session = audit_session(pid)
    if session == own_session:
        session = None
    held: dict[str, int] = {}  # /dev/pts/N -> our descriptor
    uid = None
    try:
        for entry in entries:
            path = "/dev/" + entry.line
            fd = open_pts(path)
            if fd is not None:
                held[path] = fd
            if uid is None:
                try:
                    uid = pwd.getpwnam(entry.user).pw_uid
                except KeyError:
                    pass
        # Held now, a pts cannot change hands; it is still this login's if
        # its utmp entry still names the monitor (another login on the same
        # number would have rewritten it before its shell could start).
        if held:
            still = {"/dev/" + e.line
                     for e in loginrec.user_processes(loginrec.UTMP_PATH, pid, timeout=lock_timeout)}
            for path in [p for p in held if p not in still]:
                os.close(held.pop(path))
        conn = Connection(session, {os.fstat(fd).st_rdev for fd in held.values()}, uid,
                          exclude={os.getpid(), pid})
        if conn.session is None and not conn.ttys:
            return  # nothing names this connection's processes
        frozen = conn.freeze()
        # The terminals of the frozen processes too (a pty whose utmp record
        # could not be written, or was not meant to be).
        for info in frozen.values():
            path = pts_path(info.tty) if info.tty else None
            if path and path not in held:
                fd = open_pts(path)
                if fd is not None:
                    held[path] = fd
        for path, fd in held.items():
            rdev = os.fstat(fd).st_rdev
            if any(_holds(p, path, rdev) for p in frozen):
                try:
                    if give_back(fd):
                        report.ptys.append(path.removeprefix("/dev/"))
                except OSError as exc:
                    report.errors.append(f"{path} not given back: {exc.strerror}")
        report.killed = conn.kill()
    finally:
        for fd in held.values():
            os.close(fd)


def end_own_connection(own_session_before: int | None, pty_slaves: list[str],
                       uid: int) -> int:
    """The monitor's cleanup after its session process was killed: the
    connection's other processes (its audit session, and those of ``uid`` on
    its ptys, whose masters the monitor still holds) are killed.  How many."""
    session = audit_session(os.getpid())
    if session == own_session_before:
        session = None
    ttys = set()
    for path in pty_slaves:
        try:
            ttys.add(os.stat(path).st_rdev)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    conn = Connection(session, ttys, uid, exclude={os.getpid()})
    if conn.session is None and not conn.ttys:
        return 0
    conn.freeze()
    return conn.kill()
