"""internal-sftp's protocol side: paramiko's SFTPServer, run over the two
pipe ends of the child the session process forked for the channel, and
made to answer as sftp-server 9.2 does: its extensions, its -R, -P and -p
refusals (with its status codes), and its log lines in its words."""

from __future__ import annotations

import logging
import os
import pwd
import struct
import time

from paramiko import SFTPAttributes, SFTPServer
from paramiko.message import Message
from paramiko.sftp import (CMD_ATTRS, CMD_CLOSE, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_FSETSTAT,
                           CMD_INIT, CMD_LSTAT, CMD_MKDIR, CMD_NAME, CMD_OPEN, CMD_OPENDIR,
                           CMD_READ, CMD_READDIR, CMD_READLINK, CMD_REALPATH, CMD_REMOVE,
                           CMD_RENAME, CMD_RMDIR, CMD_SETSTAT, CMD_STAT, CMD_SYMLINK,
                           CMD_VERSION, SFTP_DESC, SFTP_EOF, SFTP_FAILURE,
                           SFTP_FLAG_APPEND, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_READ,
                           SFTP_FLAG_TRUNC, SFTP_FLAG_WRITE, SFTP_OK, SFTP_OP_UNSUPPORTED,
                           SFTP_PERMISSION_DENIED, SFTPError)

from privsep.common.log import VERBOSE
from privsep.session.sftp import extensions
from privsep.session.sftp import flags as sftpflags
from privsep.session.sftp.files import (DirHandle, FileHandle, LocalFiles, portable,
                                        sftp_realpath)

log = logging.getLogger("privsep.sftp")

#: sftp-server's limits (sftp-common.h)
MAX_MSG_LENGTH = 256 * 1024
MAX_READ_LENGTH = MAX_MSG_LENGTH - 1024
#: extensions sftp-server 9.2 announces, with their versions, in its order
EXTENSIONS = (
    ("posix-rename@openssh.com", "1"), ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"), ("hardlink@openssh.com", "1"), ("fsync@openssh.com", "1"),
    ("lsetstat@openssh.com", "1"), ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"), ("copy-data", "1"), ("home-directory", "1"),
    ("users-groups-by-id@openssh.com", "1"),
)
_OPEN_FLAG_NAMES = ((SFTP_FLAG_READ, "READ"), (SFTP_FLAG_WRITE, "WRITE"),
                    (SFTP_FLAG_APPEND, "APPEND"), (SFTP_FLAG_CREATE, "CREATE"),
                    (SFTP_FLAG_TRUNC, "TRUNCATE"), (SFTP_FLAG_EXCL, "EXCL"))


class PipeEnds:
    """The child's stdin and stdout, shaped as the channel (and transport)
    paramiko's SubsystemHandler is given: recv, send, a name, a logger."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd

    def recv(self, n: int) -> bytes:
        return os.read(self.rfd, n)

    def send(self, data: bytes) -> int:
        return os.write(self.wfd, data)

    def get_name(self) -> str:
        return "internal-sftp"

    def get_transport(self) -> "PipeEnds":
        return self

    def get_log_channel(self) -> str:
        return "paramiko.sftp"

    def get_hexdump(self) -> bool:
        return False


def open_flags_text(pflags: int) -> str:
    return ",".join(name for bit, name in _OPEN_FLAG_NAMES if pflags & bit)


class InternalSFTP(SFTPServer):
    """One sftp session, with sftp-server's flags."""

    def __init__(self, ends: PipeEnds, options: sftpflags.SftpFlags,
                 pw: pwd.struct_passwd) -> None:
        super().__init__(ends, "sftp", None, sftp_si=LocalFiles)
        self.options, self.pw = options, pw

    # --- sftp-server's request_permitted ----------------------------------------

    def permitted(self, name: str, writes: bool) -> bool:
        opts = self.options
        if opts.read_only and writes:
            log.log(VERBOSE, "Refusing %s request in read-only mode", name)
            return False
        if opts.denied is not None and name in opts.denied:
            log.log(VERBOSE, "Refusing denylisted %s request", name)
            return False
        if opts.allowed is not None and name not in opts.allowed:
            log.log(VERBOSE, "Refusing non-allowlisted %s request", name)
            return False
        return True

    # --- the packets ---------------------------------------------------------------

    def _read_packet(self):
        header = self._read_all(4)
        size = struct.unpack(">I", header)[0]
        if size > MAX_MSG_LENGTH:
            log.error("bad message from %s local user %s", client_addr(), self.pw.pw_name)
            raise SFTPError("message too long")
        data = self._read_all(size)
        return (data[0], data[1:]) if data else (0, b"")

    def _send_server_version(self) -> None:
        t, data = self._read_packet()
        if t != CMD_INIT or len(data) < 4:
            raise SFTPError("Received request before init")
        log.log(VERBOSE, "received client version %u", struct.unpack(">I", data[:4])[0])
        msg = Message()
        msg.add_int(3)
        for name, version in EXTENSIONS:
            short, writes = sftpflags.BY_EXTENSION[name]
            if self._quietly_permitted(short, writes):
                msg.add_string(name)
                msg.add_string(version)
        self._send_packet(CMD_VERSION, msg)

    def _quietly_permitted(self, name: str, writes: bool) -> bool:
        saved = log.level
        log.setLevel(logging.CRITICAL + 20)
        try:
            return self.permitted(name, writes)
        finally:
            log.setLevel(saved)

    def _send_status(self, request_number: int, code: int, desc: str | None = None) -> None:
        if code not in (SFTP_OK, SFTP_EOF) or log.isEnabledFor(logging.DEBUG):
            log.info("sent status %s", SFTP_DESC[code] if code < len(SFTP_DESC) else "Unknown error")
        super()._send_status(request_number, code, desc)

    def _process(self, t: int, request_number: int, msg: Message) -> None:
        if t == CMD_EXTENDED:
            self._extended(request_number, msg)
            return
        known = sftpflags.BY_TYPE.get(t)
        if known is None:
            log.error("Unknown message %u", t)
            return
        name, writes = known
        if not self.permitted(name, writes):
            self._send_status(request_number, SFTP_PERMISSION_DENIED)
            return
        handler = self._HANDLERS.get(t)
        if handler is not None:
            handler(self, request_number, msg)
        else:
            super()._process(t, request_number, msg)

    # --- requests answered here rather than by paramiko ----------------------------------

    def _open(self, request_number: int, msg: Message) -> None:
        path, pflags = msg.get_text(), msg.get_int()
        attr = SFTPAttributes._from_msg(msg)
        mode = attr.st_mode & 0o7777 if attr._flags & attr.FLAG_PERMISSIONS else 0o666
        log.info("open \"%s\" flags %s mode 0%o", path, open_flags_text(pflags), mode)
        if self.options.read_only and pflags & (SFTP_FLAG_WRITE | SFTP_FLAG_CREATE
                                                | SFTP_FLAG_TRUNC | SFTP_FLAG_APPEND):
            log.log(VERBOSE, "Refusing open request in read-only mode")
            self._send_status(request_number, SFTP_PERMISSION_DENIED)
            return
        self._send_handle_response(request_number,
                                   self.server.open(path, self._convert_pflags(pflags), attr))

    def _close(self, request_number: int, msg: Message) -> None:
        key = msg.get_binary()
        handle = self.file_table.pop(key, None) or self.folder_table.pop(key, None)
        if handle is None:
            self._send_status(request_number, SFTP_FAILURE)
            return
        log_close(handle)
        handle.close()
        self._send_status(request_number, SFTP_OK)

    def _read(self, request_number: int, msg: Message) -> None:
        key, offset, length = msg.get_binary(), msg.get_int64(), msg.get_int()
        handle = self.file_table.get(key)
        if handle is None:
            self._send_status(request_number, SFTP_FAILURE)
            return
        data = handle.read(offset, min(length, MAX_READ_LENGTH))
        if isinstance(data, int):
            self._send_status(request_number, data)
        elif not data:
            self._send_status(request_number, SFTP_EOF)
        else:
            self._response(request_number, CMD_DATA_REPLY, data)

    def _stat(self, request_number: int, msg: Message, lstat: bool) -> None:
        path = msg.get_text()
        log.log(VERBOSE, "%sstat name \"%s\"", "l" if lstat else "", path)
        answer = (self.server.lstat if lstat else self.server.stat)(path)
        if isinstance(answer, int):
            self._send_status(request_number, answer)
        else:
            self._response(request_number, CMD_ATTRS, answer)

    def _setstat(self, request_number: int, msg: Message) -> None:
        path = msg.get_text()
        attr = SFTPAttributes._from_msg(msg)
        log_set(path, attr)
        self._send_status(request_number, self.server.chattr(path, attr))

    def _fsetstat(self, request_number: int, msg: Message) -> None:
        handle = self.file_table.get(msg.get_binary())
        attr = SFTPAttributes._from_msg(msg)
        if handle is None:
            self._send_status(request_number, SFTP_FAILURE)
            return
        log_set(handle.name, attr)
        self._send_status(request_number, handle.chattr(attr))

    def _opendir(self, request_number: int, msg: Message) -> None:
        path = msg.get_text()
        log.info("opendir \"%s\"", path)
        self._send_handle_response(request_number, self.server.list_folder(path), folder=True)

    def _readdir(self, request_number: int, msg: Message) -> None:
        handle = self.folder_table.get(msg.get_binary())
        if handle is None:
            self._send_status(request_number, SFTP_FAILURE)
            return
        self._send_names(request_number, handle.next_batch())

    def _send_names(self, request_number: int, names: list[SFTPAttributes]) -> None:
        if not names:
            self._send_status(request_number, SFTP_EOF)
            return
        msg = Message()
        msg.add_int(request_number)
        msg.add_int(len(names))
        for attr in names:
            msg.add_string(attr.filename)
            msg.add_string(attr.longname)
            attr._pack(msg)
        self._send_packet(CMD_NAME, msg)

    def _send_path(self, request_number: int, path: str) -> None:
        """One name, its long name the same, no attributes (sftp-server's realpath)."""
        attr = SFTPAttributes()
        attr.filename = attr.longname = path
        self._send_names(request_number, [attr])

    def _path_request(self, request_number: int, msg: Message, what: str, call) -> None:
        path = msg.get_text()
        log.info("%s name \"%s\"", what, path)
        self._send_status(request_number, call(path))

    def _remove(self, request_number: int, msg: Message) -> None:
        self._path_request(request_number, msg, "remove", self.server.remove)

    def _rmdir(self, request_number: int, msg: Message) -> None:
        self._path_request(request_number, msg, "rmdir", self.server.rmdir)

    def _mkdir(self, request_number: int, msg: Message) -> None:
        path = msg.get_text()
        attr = SFTPAttributes._from_msg(msg)
        mode = attr.st_mode & 0o7777 if attr._flags & attr.FLAG_PERMISSIONS else 0o777
        log.info("mkdir name \"%s\" mode 0%o", path, mode)
        self._send_status(request_number, self.server.mkdir(path, attr))

    def _realpath(self, request_number: int, msg: Message) -> None:
        path = msg.get_text() or "."
        log.log(VERBOSE, "realpath \"%s\"", path)
        try:
            self._send_path(request_number, sftp_realpath(path))
        except OSError as exc:
            self._send_status(request_number, portable(exc))

    def _two_paths(self, request_number: int, msg: Message, what: str, call) -> None:
        old, new = msg.get_text(), msg.get_text()
        log.info("%s old \"%s\" new \"%s\"", what, old, new)
        self._send_status(request_number, call(old, new))

    def _rename(self, request_number: int, msg: Message) -> None:
        self._two_paths(request_number, msg, "rename", self.server.rename)

    def _symlink(self, request_number: int, msg: Message) -> None:
        self._two_paths(request_number, msg, "symlink", self.server.symlink)

    def _readlink(self, request_number: int, msg: Message) -> None:
        path = msg.get_text()
        log.log(VERBOSE, "readlink \"%s\"", path)
        answer = self.server.readlink(path)
        if isinstance(answer, int):
            self._send_status(request_number, answer)
        else:
            self._send_path(request_number, answer)

    # --- extensions ----------------------------------------------------------------

    def _extended(self, request_number: int, msg: Message) -> None:
        tag = msg.get_text()
        known = sftpflags.BY_EXTENSION.get(tag)
        if known is None:
            log.error("Unknown extended request \"%.100s\"", tag)
            self._send_status(request_number, SFTP_OP_UNSUPPORTED)
            return
        if not self.permitted(*known):
            self._send_status(request_number, SFTP_PERMISSION_DENIED)
            return
        extensions.HANDLERS[tag](self, request_number, msg)

    def extended_reply(self, request_number: int, msg: Message) -> None:
        reply = Message()
        reply.add_int(request_number)
        reply.add_bytes(msg.asbytes())
        self._send_packet(CMD_EXTENDED_REPLY, reply)

    # --- the end ---------------------------------------------------------------------

    def close_all(self) -> None:
        """The session ends: what is still open is logged as sftp-server's
        "forced" close, then closed."""
        for handle in [*self.file_table.values(), *self.folder_table.values()]:
            log_close(handle, "forced ")
            handle.close()
        self.file_table.clear()
        self.folder_table.clear()

    _HANDLERS = {
        CMD_OPEN: _open, CMD_CLOSE: _close, CMD_READ: _read,
        CMD_STAT: lambda self, n, m: self._stat(n, m, False),
        CMD_LSTAT: lambda self, n, m: self._stat(n, m, True),
        CMD_SETSTAT: _setstat, CMD_FSETSTAT: _fsetstat, CMD_OPENDIR: _opendir,
        CMD_READDIR: _readdir, CMD_REMOVE: _remove, CMD_MKDIR: _mkdir, CMD_RMDIR: _rmdir,
        CMD_REALPATH: _realpath, CMD_RENAME: _rename, CMD_READLINK: _readlink,
        CMD_SYMLINK: _symlink,
    }


#: SSH_FXP_DATA
CMD_DATA_REPLY = 103


def client_addr() -> str:
    """The client's address from SSH_CONNECTION, as sftp-server takes it."""
    return (os.environ.get("SSH_CONNECTION") or "UNKNOWN").split(" ")[0]


def log_close(handle, prefix: str = "") -> None:
    if isinstance(handle, FileHandle):
        log.info("%sclose \"%s\" bytes read %d written %d", prefix, handle.name,
                 handle.bytes_read, handle.bytes_written)
    elif isinstance(handle, DirHandle):
        log.info("%sclosedir \"%s\"", prefix, handle.name)


def log_set(path: str, attr: SFTPAttributes) -> None:
    """sftp-server's lines for a setstat, one per attribute."""
    if attr._flags & attr.FLAG_SIZE:
        log.info("set \"%s\" size %d", path, attr.st_size)
    if attr._flags & attr.FLAG_PERMISSIONS:
        log.info("set \"%s\" mode %04o", path, attr.st_mode & 0o7777)
    if attr._flags & attr.FLAG_AMTIME:
        when = time.strftime("%Y%m%d-%H:%M:%S", time.localtime(attr.st_mtime))
        log.info("set \"%s\" modtime %s", path, when)
    if attr._flags & attr.FLAG_UIDGID:
        log.info("set \"%s\" owner %d group %d", path, attr.st_uid, attr.st_gid)

