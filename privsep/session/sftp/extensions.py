"""The extended requests sftp-server 9.2 answers (the names it announces in
its version packet), each as it answers them.  ``sftp`` is the running
server.InternalSFTP: its tables, its replies, its pipes."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import resource
from typing import Callable

from paramiko import SFTPAttributes
from paramiko.message import Message
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK

from privsep.common.log import VERBOSE
from privsep.session.sftp.files import portable, sftp_realpath

log = logging.getLogger("privsep.sftp")

#: sftp-server's limits (sftp-common.h)
MAX_MSG_LENGTH = 256 * 1024
#: statvfs flags sftp-server sends
_ST_RDONLY, _ST_NOSUID = 1, 2
#: copy-data moves this much per read, as sftp-server's buffer
_COPY_CHUNK = 64 * 1024


def _posix_rename(sftp, n: int, m: Message) -> None:
    old, new = m.get_text(), m.get_text()
    log.info("posix-rename old \"%s\" new \"%s\"", old, new)
    sftp._send_status(n, sftp.server.posix_rename(old, new))


def _hardlink(sftp, n: int, m: Message) -> None:
    old, new = m.get_text(), m.get_text()
    log.info("hardlink old \"%s\" new \"%s\"", old, new)
    sftp._send_status(n, sftp.server.hardlink(old, new))


def _statvfs_reply(sftp, n: int, st: os.statvfs_result) -> None:
    reply = Message()
    for value in (st.f_bsize, st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail, st.f_files,
                  st.f_ffree, st.f_favail, st.f_fsid,
                  (_ST_RDONLY if st.f_flag & os.ST_RDONLY else 0)
                  | (_ST_NOSUID if st.f_flag & os.ST_NOSUID else 0), st.f_namemax):
        reply.add_int64(value)
    sftp.extended_reply(n, reply)


def _statvfs(sftp, n: int, m: Message) -> None:
    path = m.get_text()
    log.info("statvfs \"%s\"", path)
    try:
        _statvfs_reply(sftp, n, os.statvfs(path))
    except OSError as exc:
        sftp._send_status(n, portable(exc))


def _file(sftp, n: int, m: Message):
    """The open file a request names, or None (FAILURE sent)."""
    handle = sftp.file_table.get(m.get_binary())
    if handle is None:
        sftp._send_status(n, SFTP_FAILURE)
    return handle


def _fstatvfs(sftp, n: int, m: Message) -> None:
    handle = _file(sftp, n, m)
    if handle is not None:
        try:
            _statvfs_reply(sftp, n, os.fstatvfs(handle.fd))
        except OSError as exc:
            sftp._send_status(n, portable(exc))


def _fsync(sftp, n: int, m: Message) -> None:
    handle = _file(sftp, n, m)
    if handle is not None:
        log.log(VERBOSE, "fsync \"%s\"", handle.name)
        try:
            os.fsync(handle.fd)
        except OSError as exc:
            sftp._send_status(n, portable(exc))
            return
        sftp._send_status(n, SFTP_OK)


def _lsetstat(sftp, n: int, m: Message) -> None:
    path = m.get_text()
    attr = SFTPAttributes._from_msg(m)
    # times and modes of the link itself: chmod of a link is refused by
    # Linux, as sshd's fchmodat(AT_SYMLINK_NOFOLLOW) is
    try:
        if attr._flags & attr.FLAG_PERMISSIONS:
            log.info("set \"%s\" mode %04o", path, attr.st_mode & 0o7777)
            os.chmod(path, attr.st_mode & 0o7777, follow_symlinks=False)
        if attr._flags & attr.FLAG_AMTIME:
            os.utime(path, (attr.st_atime, attr.st_mtime), follow_symlinks=False)
        if attr._flags & attr.FLAG_UIDGID:
            log.info("set \"%s\" owner %d group %d", path, attr.st_uid, attr.st_gid)
            os.chown(path, attr.st_uid, attr.st_gid, follow_symlinks=False)
    except (OSError, NotImplementedError) as exc:
        sftp._send_status(n, portable(exc) if isinstance(exc, OSError) else SFTP_FAILURE)
        return
    sftp._send_status(n, SFTP_OK)


def _limits(sftp, n: int, m: Message) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    reply = Message()
    for value in (MAX_MSG_LENGTH, MAX_MSG_LENGTH - 1024, MAX_MSG_LENGTH - 1024,
                  soft - 5 if soft > 5 else 0):
        reply.add_int64(value)
    sftp.extended_reply(n, reply)


def _expand_path(sftp, n: int, m: Message) -> None:
    path = m.get_text()
    cwd = os.getcwd()
    if not path:
        path = "."
    elif path == "~":
        path = cwd
    elif path.startswith("~/"):
        path = f"{cwd}/{path[2:]}"
    elif path.startswith("~"):
        name, _, rest = path[1:].partition("/")
        try:
            home = pwd.getpwnam(name).pw_dir
        except KeyError:
            sftp._send_status(n, SFTP_NO_SUCH_FILE, "no such user")
            return
        path = f"{home}/{rest}" if rest else home
    elif not path.startswith("/"):
        path = f"{cwd}/{path}"
    log.log(VERBOSE, "expand \"%s\"", path)
    try:
        sftp._send_path(n, sftp_realpath(path))
    except OSError as exc:
        sftp._send_status(n, portable(exc))


def _home_directory(sftp, n: int, m: Message) -> None:
    name = m.get_text()
    try:
        pwd.getpwnam(name)
    except KeyError:
        sftp._send_status(n, SFTP_FAILURE)
        return
    # sftp-server answers with the session user's home, whoever was asked
    log.log(VERBOSE, "home-directory \"%s\"", sftp.pw.pw_dir)
    sftp._send_path(n, sftp.pw.pw_dir)


def _users_groups_by_id(sftp, n: int, m: Message) -> None:
    uids, gids = Message(m.get_binary()), Message(m.get_binary())
    users, groups = Message(), Message()
    count = 0
    for ids, names, lookup in ((uids, users, lambda i: pwd.getpwuid(i).pw_name),
                               (gids, groups, lambda i: grp.getgrgid(i).gr_name)):
        while len(ids.get_remainder()) >= 4:
            number = ids.get_int()
            try:
                names.add_string(lookup(number))
            except KeyError:
                names.add_string("")
            count += 1
    # sftp-server 9.2 counts the groups with the users (and logs 0 groups)
    log.log(VERBOSE, "users-groups-by-id: %u users, %u groups", count, 0)
    reply = Message()
    reply.add_string(users.asbytes())
    reply.add_string(groups.asbytes())
    sftp.extended_reply(n, reply)


def _copy_data(sftp, n: int, m: Message) -> None:
    source = sftp.file_table.get(m.get_binary())
    offset, length = m.get_int64(), m.get_int64()
    target = sftp.file_table.get(m.get_binary())
    target_offset = m.get_int64()
    if source is None or target is None or source is target:
        sftp._send_status(n, SFTP_FAILURE)
        return
    remaining = length  # 0: to the end of the source
    try:
        while not length or remaining > 0:
            size = min(_COPY_CHUNK, remaining) if length else _COPY_CHUNK
            chunk = os.pread(source.fd, size, offset)
            if not chunk:
                break
            os.pwrite(target.fd, chunk, target_offset)
            offset += len(chunk)
            target_offset += len(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        sftp._send_status(n, portable(exc))
        return
    sftp._send_status(n, SFTP_OK)


HANDLERS: dict[str, Callable] = {
    "posix-rename@openssh.com": _posix_rename, "statvfs@openssh.com": _statvfs,
    "fstatvfs@openssh.com": _fstatvfs, "hardlink@openssh.com": _hardlink,
    "fsync@openssh.com": _fsync, "lsetstat@openssh.com": _lsetstat, "limits@openssh.com": _limits,
    "expand-path@openssh.com": _expand_path, "copy-data": _copy_data,
    "home-directory": _home_directory, "users-groups-by-id@openssh.com": _users_groups_by_id,
}
