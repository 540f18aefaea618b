"""The file system side of internal-sftp: paramiko's SFTPServerInterface and
SFTPHandle over the process's own file system, as the user, inside the
chroot when there is one.  Paths are used as the client sends them,
relative to the working directory, as sftp-server does: the jail is the
kernel's chroot, so ``..`` at ``/`` and a symbolic link to ``/etc`` stay
inside it, as they do for sshd."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import time

from paramiko import SFTPAttributes, SFTPHandle, SFTPServerInterface
from paramiko.sftp import (SFTP_BAD_MESSAGE, SFTP_EOF, SFTP_FAILURE, SFTP_NO_SUCH_FILE,
                           SFTP_OK, SFTP_OP_UNSUPPORTED, SFTP_PERMISSION_DENIED)

#: sftp-server's errno_to_portable
_PORTABLE = {
    0: SFTP_OK,
    errno.ENOENT: SFTP_NO_SUCH_FILE, errno.ENOTDIR: SFTP_NO_SUCH_FILE,
    errno.EBADF: SFTP_NO_SUCH_FILE, errno.ELOOP: SFTP_NO_SUCH_FILE,
    errno.EPERM: SFTP_PERMISSION_DENIED, errno.EACCES: SFTP_PERMISSION_DENIED,
    errno.EFAULT: SFTP_PERMISSION_DENIED,
    errno.ENAMETOOLONG: SFTP_BAD_MESSAGE, errno.EINVAL: SFTP_BAD_MESSAGE,
    errno.ENOSYS: SFTP_OP_UNSUPPORTED,
}
#: what sshd's readdir sends at most in one answer
DIR_BATCH = 100
#: half a year, sshd's limit between "Mon dd HH:MM" and "Mon dd  YYYY"
_HALF_YEAR = 365 * 24 * 60 * 60 // 2


def portable(err: OSError | int) -> int:
    """An errno as the SFTP status sshd's sftp-server answers for it."""
    code = err.errno if isinstance(err, OSError) else err
    return _PORTABLE.get(code, SFTP_FAILURE)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def longname(name: str, st: os.stat_result) -> str:
    """The ``ls -l`` line sftp-server sends with each name (its ls_file)."""
    mtime = time.localtime(st.st_mtime)
    now = time.time()
    recent = now - _HALF_YEAR < st.st_mtime <= now
    when = time.strftime("%b %e %H:%M" if recent else "%b %e  %Y", mtime)
    user, group = _user(st.st_uid), _group(st.st_gid)
    return (f"{stat.filemode(st.st_mode)}  {st.st_nlink:3d} {user:<8} {group:<8} "
            f"{st.st_size:8d} {when} {name}")


def attributes(st: os.stat_result, name: str = "") -> SFTPAttributes:
    attr = SFTPAttributes.from_stat(st, name)
    attr.longname = longname(name, st) if name else ""
    return attr


def sftp_realpath(path: str) -> str:
    """The absolute path with links resolved; only the last component may
    be missing (sshd's sftp_realpath), else OSError."""
    resolved = os.path.realpath(path or ".")
    parent = os.path.dirname(resolved)
    if not os.path.isdir(parent):
        raise OSError(errno.ENOENT if not os.path.lexists(parent) else errno.ENOTDIR,
                      os.strerror(errno.ENOENT))
    return resolved


class FileHandle(SFTPHandle):
    """An open file: reads and writes at the offsets asked (pread, pwrite),
    counted for the close line sftp-server logs."""

    def __init__(self, name: str, fd: int, flags: int) -> None:
        super().__init__(flags)
        self.name, self.fd = name, fd
        self.bytes_read = self.bytes_written = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, offset: int, length: int):
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as exc:
            return portable(exc)
        self.bytes_read += len(data)
        return data

    def write(self, offset: int, data: bytes) -> int:
        try:
            written = os.pwrite(self.fd, data, offset)
        except OSError as exc:
            return portable(exc)
        self.bytes_written += written
        return SFTP_OK if written == len(data) else SFTP_FAILURE

    def stat(self):
        try:
            return attributes(os.fstat(self.fd))
        except OSError as exc:
            return portable(exc)

    def chattr(self, attr: SFTPAttributes) -> int:
        return set_attributes(self.fd, attr)


class DirHandle(SFTPHandle):
    """An open directory, read lazily in batches as sftp-server reads it."""

    def __init__(self, name: str) -> None:
        super().__init__(0)
        self.name = name
        self._entries = os.scandir(name)
        self._dots: tuple[str, ...] = (".", "..")

    def next_batch(self) -> list[SFTPAttributes]:
        """Up to DIR_BATCH names with their attributes; [] at the end.
        scandir leaves out . and ..; readdir (sftp-server) gives them too."""
        out = []
        for dot in self._dots:
            try:
                out.append(attributes(os.lstat(os.path.join(self.name, dot)), dot))
            except OSError:
                pass
        self._dots = ()
        for entry in self._entries:
            try:
                out.append(attributes(os.lstat(entry.path), entry.name))
            except OSError:
                continue
            if len(out) >= DIR_BATCH:
                break
        return out

    def close(self) -> None:
        self._entries.close()


def set_attributes(target: str | int, attr: SFTPAttributes) -> int:
    """setstat / fsetstat: size, permissions, owner, times, in sshd's order."""
    try:
        if attr._flags & attr.FLAG_SIZE:
            os.truncate(target, attr.st_size)
        if attr._flags & attr.FLAG_PERMISSIONS:
            os.chmod(target, attr.st_mode & 0o7777)
        if attr._flags & attr.FLAG_AMTIME:
            os.utime(target, (attr.st_atime, attr.st_mtime))
        if attr._flags & attr.FLAG_UIDGID:
            os.chown(target, attr.st_uid, attr.st_gid)
    except OSError as exc:
        return portable(exc)
    return SFTP_OK


class LocalFiles(SFTPServerInterface):
    """Requests on paths, answered with os calls as the user."""

    def open(self, path: str, flags: int, attr: SFTPAttributes):
        mode = attr.st_mode & 0o7777 if attr._flags & attr.FLAG_PERMISSIONS else 0o666
        try:
            fd = os.open(path, flags | os.O_CLOEXEC, mode)
        except OSError as exc:
            return portable(exc)
        return FileHandle(path, fd, flags)

    def list_folder(self, path: str):
        try:
            return DirHandle(path)
        except OSError as exc:
            return portable(exc)

    def stat(self, path: str):
        try:
            return attributes(os.stat(path))
        except OSError as exc:
            return portable(exc)

    def lstat(self, path: str):
        try:
            return attributes(os.lstat(path))
        except OSError as exc:
            return portable(exc)

    def remove(self, path: str) -> int:
        return self._call(os.unlink, path)

    def rename(self, oldpath: str, newpath: str) -> int:
        # sftp-server's plain rename never replaces an existing target
        if os.path.lexists(newpath):
            return SFTP_FAILURE
        return self._call(os.rename, oldpath, newpath)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._call(os.rename, oldpath, newpath)

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        mode = attr.st_mode & 0o7777 if attr._flags & attr.FLAG_PERMISSIONS else 0o777
        return self._call(os.mkdir, path, mode)

    def rmdir(self, path: str) -> int:
        return self._call(os.rmdir, path)

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        return set_attributes(path, attr)

    def canonicalize(self, path: str) -> str:
        return sftp_realpath(path)

    def readlink(self, path: str):
        try:
            return os.readlink(path)
        except OSError as exc:
            return portable(exc)

    def symlink(self, target_path: str, path: str) -> int:
        return self._call(os.symlink, target_path, path)

    def hardlink(self, oldpath: str, newpath: str) -> int:
        return self._call(os.link, oldpath, newpath)

    @staticmethod
    def _call(func, *args) -> int:
        try:
            func(*args)
        except OSError as exc:
            return portable(exc)
        return SFTP_OK


__all__ = ["DirHandle", "FileHandle", "LocalFiles", "SFTP_EOF", "longname", "portable",
           "sftp_realpath"]
