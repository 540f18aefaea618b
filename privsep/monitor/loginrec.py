"""Login records: utmp, wtmp and lastlog, as OpenSSH 9.2 leaves them on Debian 12,
and wtmpdb where libwtmpdb exists, as OpenSSH 10.0 does on Debian 13 (wtmpdb.py).

Runs in the root monitor (OpenSSH's loginrec.c role). On Debian, sshd writes
its records through glibc's login(), logout() and logwtmp(), so the layout and
the slot rules below follow what those functions do, as measured against the
real sshd on this machine:

* login: one USER_PROCESS record, ut_pid the monitor's pid, ut_line ``pts/N``,
  ut_id the last four characters of the line (``ts/0``), user, host and
  address; written into utmp and appended to wtmp; lastlog updated.
* logout, utmp: the live slot for that line is rewritten in place as
  DEAD_PROCESS with user and host cleared and the time updated; its pid, id
  and address stay as they were (that is what glibc's logout() does).
* logout, wtmp: a fresh DEAD_PROCESS record with the pid and line only; id,
  user, host and address empty (glibc's logwtmp()).

Locks are POSIX record locks (``fcntl.lockf``), the same kind glibc takes, so
monitors, glibc-based tools and this module exclude each other.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import ipaddress
import os
import struct
import threading
import time as _time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from privsep.monitor import wtmpdb

__all__ = [
    "UTMP_PATH", "WTMP_PATH", "LASTLOG_PATH",
    "EMPTY", "RUN_LVL", "BOOT_TIME", "NEW_TIME", "OLD_TIME", "INIT_PROCESS",
    "LOGIN_PROCESS", "USER_PROCESS", "DEAD_PROCESS", "ACCOUNTING",
    "UTMP_RECORD_SIZE", "LASTLOG_RECORD_SIZE",
    "LoginRecord", "UtmpEntry",
    "record_login", "record_logout", "ensure_utmp", "read_records", "user_processes",
]

UTMP_PATH = "/run/utmp"
WTMP_PATH = "/var/log/wtmp"
LASTLOG_PATH = "/var/log/lastlog"

# ut_type values from <utmp.h>.
EMPTY = 0
RUN_LVL = 1
BOOT_TIME = 2
NEW_TIME = 3
OLD_TIME = 4
INIT_PROCESS = 5
LOGIN_PROCESS = 6
USER_PROCESS = 7
DEAD_PROCESS = 8
ACCOUNTING = 9

# glibc x86-64 struct utmpx. ut_session and ut_tv are 32-bit there so that the
# file is shared with 32-bit programs; "<" pins byte order and disables native
# alignment, so every pad is spelled out.
_UTMPX = struct.Struct(
    "<"
    "h2x"    # ut_type + padding
    "i"      # ut_pid
    "32s"    # ut_line
    "4s"     # ut_id
    "32s"    # ut_user
    "256s"   # ut_host
    "hh"     # ut_exit: e_termination, e_exit
    "i"      # ut_session
    "ii"     # ut_tv: tv_sec, tv_usec
    "16s"    # ut_addr_v6, already in network order
    "20x"    # __glibc_reserved
)
assert _UTMPX.size == 384, _UTMPX.size
UTMP_RECORD_SIZE = _UTMPX.size
#: the first two fields alone: a record's type and pid, read without decoding it
_TYPE_PID = struct.Struct("<h2xi")

# Debian's struct lastlog: int32 ll_time, char ll_line[32], char ll_host[256],
# one record per uid at offset uid * 292.
_LASTLOG = struct.Struct("<i32s256s")
assert _LASTLOG.size == 292, _LASTLOG.size
LASTLOG_RECORD_SIZE = _LASTLOG.size

# POSIX locks belong to the process and are dropped when *any* descriptor of
# the file is closed, so they do not keep threads of one monitor apart.
_thread_lock = threading.RLock()


@dataclass(frozen=True)
class LoginRecord:
    """A login to record: who, on which pts, from where.

    ``pid`` is the monitor's pid (OpenSSH records the [priv] process, which
    outlives the session and is the one ``who`` checks for liveness).
    ``time`` defaults to now.
    """

    user: str
    line: str  # "pts/3"; a leading "/dev/" is dropped
    pid: int
    host: str
    addr: str  # ip text, v4 or v6; "" for none
    session: int = 0
    time: float | None = None


@dataclass(frozen=True)
class UtmpEntry:
    """One decoded struct utmpx record."""

    type: int
    pid: int
    line: str
    id: str
    user: str
    host: str
    exit_termination: int
    exit_status: int
    session: int
    tv_sec: int
    tv_usec: int
    addr: str  # as utmpdump prints it: "0.0.0.0" when unset

    @property
    def time(self) -> float:
        return self.tv_sec + self.tv_usec / 1e6

    @classmethod
    def from_bytes(cls, raw: bytes) -> UtmpEntry:
        (typ, pid, line, id_, user, host, term, status, session,
         sec, usec, addr) = _UTMPX.unpack(raw)
        return cls(type=typ, pid=pid, line=_text(line), id=_text(id_),
                   user=_text(user), host=_text(host),
                   exit_termination=term, exit_status=status, session=session,
                   tv_sec=sec, tv_usec=usec, addr=_addr_text(addr))

    def to_bytes(self) -> bytes:
        return _UTMPX.pack(self.type, self.pid, _raw(self.line), _raw(self.id),
                           _raw(self.user), _raw(self.host),
                           self.exit_termination, self.exit_status,
                           self.session, self.tv_sec, self.tv_usec,
                           _addr_raw(self.addr))


def record_login(rec: LoginRecord, utmp_path: str = UTMP_PATH,
                 wtmp_path: str = WTMP_PATH, lastlog_path: str = LASTLOG_PATH,
                 uid: int | None = None, wtmpdb_path: str | None | bool = None) -> None:
    """Write a USER_PROCESS record to utmp and wtmp, and lastlog if ``uid`` is given;
    a login entry to wtmpdb where libwtmpdb exists (``wtmpdb_path``: None for
    its default database, False for none).

    utmp slot: the one for the same ut_id (or ut_line when either id is empty),
    whatever process wrote it last; else the first EMPTY slot; else a new one
    at the end. Each file is attempted even if an earlier one failed; the first
    OSError is then raised (later ones are attached as notes).
    Raises ValueError, before writing anything, if ``rec.addr`` is not an IP
    or ``uid`` is negative.
    """
    if uid is not None and uid < 0:
        raise ValueError(f"uid {uid}")
    line = _strip_dev(rec.line)
    sec, usec = _split_time(_time.time() if rec.time is None else rec.time)
    entry = UtmpEntry(type=USER_PROCESS, pid=rec.pid, line=line, id=line[-4:],
                      user=rec.user, host=rec.host, exit_termination=0,
                      exit_status=0, session=rec.session, tv_sec=sec,
                      tv_usec=usec, addr=rec.addr)
    data = entry.to_bytes()
    steps: list[Callable[[], None]] = [
        lambda: _utmp_login(utmp_path, data),
        lambda: _append_record(wtmp_path, data),
    ]
    if uid is not None:
        ll = _LASTLOG.pack(sec, _raw(line), _raw(rec.host))
        steps.append(lambda: _lastlog_write(lastlog_path, uid, ll))
    if wtmpdb_path is not False:
        steps.append(lambda: wtmpdb.login(rec.user, line, rec.host, sec + usec / 1e6,
                                          wtmpdb_path))
    _run_all(steps)


def record_logout(line: str, pid: int, utmp_path: str = UTMP_PATH,
                  wtmp_path: str = WTMP_PATH, timeout: float | None = None,
                  wtmpdb_path: str | None | bool = None) -> None:
    """Mark ``line`` logged out: DEAD_PROCESS in utmp (in place) and in wtmp
    (appended), and the line's open wtmpdb entry closed (as record_login).

    utmp: the USER_PROCESS or LOGIN_PROCESS slot with this line, this line's
    id and ``pid`` (the one this login wrote) gets type 8, empty user and
    host and the current time; its pid, id and address are left alone.  No
    such slot: utmp is not touched, whoever else holds the line now.
    wtmp: a new record with ``pid`` and the line, every other field empty.
    Error handling as in record_login.  ``timeout``: give up on a file whose
    lock is not had within that many seconds (TimeoutError), for callers
    that must not block (the listener).
    """
    line = _strip_dev(line)
    sec, usec = _split_time(_time.time())
    dead = UtmpEntry(type=DEAD_PROCESS, pid=pid, line=line, id="", user="",
                     host="", exit_termination=0, exit_status=0, session=0,
                     tv_sec=sec, tv_usec=usec, addr="")
    steps: list[Callable[[], None]] = [
        lambda: _utmp_logout(utmp_path, _raw(line), pid, sec, usec, timeout),
        lambda: _append_record(wtmp_path, dead.to_bytes(), timeout),
    ]
    if wtmpdb_path is not False:
        steps.append(lambda: wtmpdb.logout(line, sec + usec / 1e6, wtmpdb_path))
    _run_all(steps)


def ensure_utmp(path: str = UTMP_PATH) -> bool:
    """Create ``path`` as an empty utmp, 0664 root:utmp, if it does not exist.

    Normally systemd-tmpfiles makes it; without systemd nobody does. An
    existing file is left exactly as it is. Returns True if it was created.
    """
    try:
        gid = grp.getgrnam("utmp").gr_gid
    except KeyError:
        gid = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o664)
    except FileExistsError:
        return False
    try:
        os.fchown(fd, 0, gid)
        os.fchmod(fd, 0o664)  # the umask may have taken group write away
    finally:
        os.close(fd)
    return True


def read_records(path: str, timeout: float | None = None) -> list[UtmpEntry]:
    """Decode every whole record of a utmp or wtmp file (a torn tail is ignored);
    ``timeout`` as in record_logout."""
    with _locked(path, os.O_RDONLY, fcntl.LOCK_SH, timeout=timeout) as fd:
        data = _read_all(fd)
    n = len(data) // UTMP_RECORD_SIZE
    return [UtmpEntry.from_bytes(data[i * UTMP_RECORD_SIZE:(i + 1) * UTMP_RECORD_SIZE])
            for i in range(n)]


def user_processes(path: str, pid: int, timeout: float | None = None) -> list[UtmpEntry]:
    """The USER_PROCESS records of ``path`` that name ``pid``, decoded; the
    others are skipped by their type and pid alone.  The listener asks this
    after every monitor, and a busy host's utmp holds a record for every pty
    number ever used: decoding them all cost it ~8 ms per login."""
    with _locked(path, os.O_RDONLY, fcntl.LOCK_SH, timeout=timeout) as fd:
        data = _read_all(fd)
    return [UtmpEntry.from_bytes(data[off:off + UTMP_RECORD_SIZE])
            for off in range(0, len(data) - UTMP_RECORD_SIZE + 1, UTMP_RECORD_SIZE)
            if _TYPE_PID.unpack_from(data, off) == (USER_PROCESS, pid)]


# --- file operations -------------------------------------------------------

def _utmp_login(path: str, data: bytes) -> None:
    new_line = _field(data, 8, 32)
    new_id = _field(data, 40, 4)
    with _locked(path, os.O_RDWR) as fd:
        slots = _read_all(fd)
        target = empty = None
        for off in range(0, len(slots) - UTMP_RECORD_SIZE + 1, UTMP_RECORD_SIZE):
            typ = _type_at(slots, off)
            if typ in (INIT_PROCESS, LOGIN_PROCESS, USER_PROCESS, DEAD_PROCESS):
                # glibc's rule: ids decide when both have one, else lines do.
                old_id = _field(slots, off + 40, 4)
                if old_id and new_id:
                    same = old_id == new_id
                else:
                    same = _field(slots, off + 8, 32) == new_line
                if same:
                    target = off
                    break
            elif typ == EMPTY and empty is None:
                empty = off
        # glibc itself never reuses EMPTY slots (it appends); taking one is
        # harmless to readers and keeps a utmp without systemd from growing.
        if target is None:
            target = empty
        if target is None:
            _append_fd(fd, data)
        else:
            _pwrite_record(fd, data, target)


def _utmp_logout(path: str, line: bytes, pid: int, sec: int, usec: int,
                 timeout: float | None = None) -> None:
    with _locked(path, os.O_RDWR, timeout=timeout) as fd:
        slots = _read_all(fd)
        for off in range(0, len(slots) - UTMP_RECORD_SIZE + 1, UTMP_RECORD_SIZE):
            f = list(_UTMPX.unpack_from(slots, off))
            if (f[0] in (LOGIN_PROCESS, USER_PROCESS) and f[1] == pid
                    and _field(slots, off + 8, 32) == line and f[3].rstrip(b"\0") == line[-4:]):
                f[0] = DEAD_PROCESS
                f[4] = b""   # ut_user
                f[5] = b""   # ut_host
                f[9], f[10] = sec, usec
                _pwrite_record(fd, _UTMPX.pack(*f), off)
                return


def _append_record(path: str, data: bytes, timeout: float | None = None) -> None:
    # O_APPEND is not used: the write offset is chosen under the lock so that
    # a torn tail can be cut first.
    with _locked(path, os.O_WRONLY, timeout=timeout) as fd:
        _append_fd(fd, data)


def _append_fd(fd: int, data: bytes) -> None:
    # Like glibc's updwtmp()/pututline(), which sshd goes through: a file whose
    # size is not a whole number of records (a writer died mid-record) is cut
    # back to the last boundary before appending, so records stay aligned.
    size = os.fstat(fd).st_size
    end = size - size % UTMP_RECORD_SIZE
    if end != size:
        os.ftruncate(fd, end)
    try:
        n = os.pwrite(fd, data, end)
    except OSError:
        os.ftruncate(fd, end)
        raise
    if n != len(data):
        os.ftruncate(fd, end)
        raise OSError(errno.EIO, f"short write ({n} of {len(data)} bytes)")


def _pwrite_record(fd: int, data: bytes, off: int) -> None:
    n = os.pwrite(fd, data, off)
    if n != len(data):
        raise OSError(errno.EIO, f"short write ({n} of {len(data)} bytes)")


def _lastlog_write(path: str, uid: int, data: bytes) -> None:
    off = uid * LASTLOG_RECORD_SIZE
    # No O_CREAT: like sshd, write lastlog only where the system keeps one.
    with _locked(path, os.O_WRONLY, fcntl.LOCK_EX, LASTLOG_RECORD_SIZE, off) as fd:
        _pwrite_record(fd, data, off)


@contextmanager
def _locked(path: str, flags: int, lock: int = fcntl.LOCK_EX,
            length: int = 0, start: int = 0,
            timeout: float | None = None) -> Iterator[int]:
    """Open ``path`` and hold a POSIX lock (default: all of it, exclusive),
    waiting for it at most ``timeout`` seconds if given (TimeoutError)."""
    with _thread_lock:
        fd = os.open(path, flags | os.O_CLOEXEC)
        try:
            if timeout is None:
                fcntl.lockf(fd, lock, length, start, os.SEEK_SET)
            else:
                _lock_within(fd, lock, length, start, timeout, path)
            yield fd
        finally:
            os.close(fd)  # releases the lock


def _lock_within(fd: int, lock: int, length: int, start: int, timeout: float,
                 path: str) -> None:
    deadline = _time.monotonic() + timeout
    while True:
        try:
            fcntl.lockf(fd, lock | fcntl.LOCK_NB, length, start, os.SEEK_SET)
            return
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
        if _time.monotonic() >= deadline:
            raise TimeoutError(errno.ETIMEDOUT, f"{path}: locked by another process")
        _time.sleep(0.005)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    parts: list[bytes] = []
    off = 0
    while off < size:
        chunk = os.pread(fd, size - off, off)
        if not chunk:
            break
        parts.append(chunk)
        off += len(chunk)
    return b"".join(parts)


def _run_all(steps: list[Callable[[], None]]) -> None:
    # One unwritable file must not cost the others their record.
    first: OSError | None = None
    for step in steps:
        try:
            step()
        except OSError as e:
            if first is None:
                first = e
            else:
                first.add_note(f"also failed: {e}")
    if first is not None:
        raise first


# --- field codecs ----------------------------------------------------------

def _strip_dev(line: str) -> str:
    return line[5:] if line.startswith("/dev/") else line


def _split_time(t: float) -> tuple[int, int]:
    return divmod(round(t * 1_000_000), 1_000_000)


def _raw(s: str) -> bytes:
    # struct's "Ns" pads with NULs and truncates, like strncpy into the field.
    return s.encode("utf-8", "surrogateescape")


def _text(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _field(buf: bytes, off: int, size: int) -> bytes:
    # Compared as C strings (strncmp), so bytes after a NUL do not count.
    return bytes(buf[off:off + size]).split(b"\0", 1)[0]


def _type_at(buf: bytes, off: int) -> int:
    return int.from_bytes(buf[off:off + 2], "little", signed=True)


def _addr_raw(addr: str) -> bytes:
    if not addr:
        return bytes(16)
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # sshd records a v4-mapped peer as plain IPv4
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.packed + bytes(12)
    return ip.packed


def _addr_text(raw: bytes) -> str:
    # utmpdump's reading: IPv4 when only the first word is used.
    if raw[4:] == bytes(12):
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


@dataclass(frozen=True)
class LastLogin:
    time: int
    line: str
    host: str


def read_lastlog(uid: int, path: str = LASTLOG_PATH) -> LastLogin | None:
    """The user's previous login from lastlog, or None if there is none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(uid * LASTLOG_RECORD_SIZE)
            raw = handle.read(LASTLOG_RECORD_SIZE)
    except OSError:
        return None
    if len(raw) != LASTLOG_RECORD_SIZE:
        return None
    sec, line, host = _LASTLOG.unpack(raw)
    if sec == 0:
        return None
    text = lambda b: b.split(b"\0", 1)[0].decode("utf-8", "replace")  # noqa: E731
    return LastLogin(sec, text(line), text(host))


def last_login_message(last: LastLogin | None) -> str:
    """sshd's "Last login: Sat Nov 21 05:45:01 2026 from 127.0.0.1"."""
    if last is None:
        return ""
    when = _time.strftime("%a %b %e %H:%M:%S %Y", _time.localtime(last.time))
    return f"Last login: {when} from {last.host}" if last.host else f"Last login: {when} on {last.line}"
