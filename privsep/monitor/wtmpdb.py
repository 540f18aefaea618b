"""wtmpdb, Debian 13's login database (what its `last` reads), written as
OpenSSH 10.0's sshd writes it: through libwtmpdb, where the library exists.

Debian 13's sshd is built with wtmpdb support (loginrec.c, USE_WTMPDB) and
its PAM profile keeps pam_wtmpdb out of sshd's sessions (``skip_if=sshd``):
PAM opens the session before any pty exists, so pam_wtmpdb could only
record PAM_TTY "ssh". sshd records the pty login itself instead, next to
utmp and wtmp:

* login: type USER_PROCESS (3), the user, the login time in microseconds,
  the line without "/dev/" (``pts/N``), the remote host as in utmp's
  ut_host, and no service;
* logout: the newest open entry of that line (wtmpdb_get_id), closed with
  the logout time.

This daemon does the same from its monitor (loginrec.record_login and
record_logout) and keeps pam_wtmpdb out of its sessions too (pam.d/privsep-sshd).
libwtmpdb is loaded with ctypes on first use; where it is missing (Debian
12) nothing is written and nothing fails.
"""

from __future__ import annotations

import ctypes
import errno
import functools

__all__ = ["LIBRARY", "USER_PROCESS", "available", "login", "logout"]

LIBRARY = "libwtmpdb.so.0"
#: wtmpdb.h's entry type of a user's login
USER_PROCESS = 3


@functools.cache
def _lib() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(LIBRARY)
    except OSError:
        return None
    text, error = ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)
    lib.wtmpdb_login.argtypes = [text, ctypes.c_int, text, ctypes.c_uint64, text, text, text, error]
    lib.wtmpdb_login.restype = ctypes.c_int64
    lib.wtmpdb_logout.argtypes = [text, ctypes.c_int64, ctypes.c_uint64, error]
    lib.wtmpdb_logout.restype = ctypes.c_int
    lib.wtmpdb_get_id.argtypes = [text, text, error]
    lib.wtmpdb_get_id.restype = ctypes.c_int64
    return lib


@functools.cache
def _free() -> ctypes._CFuncPtr:
    free = ctypes.CDLL(None).free
    free.argtypes, free.restype = [ctypes.c_void_p], None
    return free


def available() -> bool:
    """True where libwtmpdb can be loaded (Debian 13 with wtmpdb)."""
    return _lib() is not None


def _usec(when: float) -> int:
    return round(when * 1_000_000)


def _tty(line: str) -> bytes:
    return (line[5:] if line.startswith("/dev/") else line).encode("utf-8", "surrogateescape")


def _raise(what: str, code: int, message: ctypes.c_void_p) -> None:
    """OSError for a failed call, with the library's message (then freed)."""
    text = ctypes.string_at(message.value).decode(errors="replace") if message.value else ""
    if message.value:
        _free()(message.value)
    raise OSError(-code if code < 0 else errno.EIO, f"{what}: {text or 'failed'}")


def login(user: str, line: str, host: str, when: float, db_path: str | None = None) -> int | None:
    """Record a pty login; its entry's id, or None without libwtmpdb.
    ``db_path`` None is the library's default (/var/lib/wtmpdb/wtmp.db)."""
    lib = _lib()
    if lib is None:
        return None
    message = ctypes.c_void_p()
    entry = lib.wtmpdb_login(db_path.encode() if db_path else None, USER_PROCESS,
                             user.encode("utf-8", "surrogateescape"), _usec(when), _tty(line),
                             host.encode("utf-8", "surrogateescape"), None,
                             ctypes.byref(message))
    if entry < 0:
        _raise("wtmpdb_login", entry, message)
    return entry


def logout(line: str, when: float, db_path: str | None = None) -> None:
    """Close the newest open entry of ``line``, as sshd does at logout;
    nothing without libwtmpdb or without such an entry."""
    lib = _lib()
    if lib is None:
        return
    path = db_path.encode() if db_path else None
    message = ctypes.c_void_p()
    entry = lib.wtmpdb_get_id(path, _tty(line), ctypes.byref(message))
    if entry == -errno.ENOENT:  # no open login on that line: nothing to close
        if message.value:
            _free()(message.value)
        return
    if entry < 0:
        _raise("wtmpdb_get_id", entry, message)
    done = lib.wtmpdb_logout(path, entry, _usec(when), ctypes.byref(message))
    if done < 0:
        _raise("wtmpdb_logout", done, message)
