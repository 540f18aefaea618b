"""internal-sftp's command line, read as sftp-server 9.2 reads it:
``[-ehR] [-d start_directory] [-f log_facility] [-l log_level]
[-P denied_requests] [-p allowed_requests] [-u umask]``, ``-Q requests``,
and the request names -P and -p take (those ``-Q requests`` prints)."""

from __future__ import annotations

import getopt
import pwd
from dataclasses import dataclass

from privsep.common.log import LEVELS
from privsep.session.chroot import ChrootRefused, percent_expand, tilde_expand

#: sftp-server's request names, in the order ``-Q requests`` prints them:
#: (name, packet type or extension name, whether it writes).
REQUESTS: tuple[tuple[str, int | str, bool], ...] = (
    ("open", 3, False), ("close", 4, False), ("read", 5, False), ("write", 6, True),
    ("lstat", 7, False), ("fstat", 8, False), ("setstat", 9, True), ("fsetstat", 10, True),
    ("opendir", 11, False), ("readdir", 12, False), ("remove", 13, True), ("mkdir", 14, True),
    ("rmdir", 15, True), ("realpath", 16, False), ("stat", 17, False), ("rename", 18, True),
    ("readlink", 19, False), ("symlink", 20, True),
    ("posix-rename", "posix-rename@openssh.com", True),
    ("statvfs", "statvfs@openssh.com", False), ("fstatvfs", "fstatvfs@openssh.com", False),
    ("hardlink", "hardlink@openssh.com", True), ("fsync", "fsync@openssh.com", True),
    ("lsetstat", "lsetstat@openssh.com", True), ("limits", "limits@openssh.com", False),
    ("expand-path", "expand-path@openssh.com", False), ("copy-data", "copy-data", True),
    ("home-directory", "home-directory", False),
    ("users-groups-by-id", "users-groups-by-id@openssh.com", False),
)
BY_TYPE = {key: (name, writes) for name, key, writes in REQUESTS if isinstance(key, int)}
BY_EXTENSION = {key: (name, writes) for name, key, writes in REQUESTS if isinstance(key, str)}

#: syslog facilities sftp-server accepts for -f
FACILITIES = ("DAEMON", "USER", "AUTH", "AUTHPRIV", "LOCAL0", "LOCAL1", "LOCAL2", "LOCAL3",
              "LOCAL4", "LOCAL5", "LOCAL6", "LOCAL7")

USAGE = ("usage: {0} [-ehR] [-d start_directory] [-f log_facility] [-l log_level]\n"
         "\t[-P denied_requests] [-p allowed_requests] [-u umask]\n"
         "       {0} -Q protocol_feature\n")


class UsageError(Exception):
    """sftp-server would exit: ``text`` goes to stderr, then exit ``status``."""

    def __init__(self, text: str, status: int = 1) -> None:
        super().__init__(text)
        self.text, self.status = text, status


@dataclass
class SftpFlags:
    read_only: bool = False
    #: a Python logging level; sftp-server's default is ERROR
    log_level: int = LEVELS["ERROR"]
    facility: str = "AUTH"
    start_dir: str | None = None
    umask: int | None = None
    denied: tuple[str, ...] | None = None
    allowed: tuple[str, ...] | None = None
    #: -Q requests: print the names and exit
    query: bool = False
    #: errors sftp-server logs and carries on after (bad -l, -f)
    warnings: tuple[str, ...] = ()


def parse(argv: list[str], pw: pwd.struct_passwd) -> SftpFlags:
    """The flags of ``argv`` (argv[0] is the program's name), or UsageError."""
    program = argv[0] if argv else "sftp-server"
    try:
        opts, _ = getopt.getopt(argv[1:], "d:f:l:P:p:Q:u:cehR")
    except getopt.GetoptError as exc:
        raise UsageError(f"{program}: {exc.msg}\n" + USAGE.format(program)) from None
    flags = SftpFlags()
    warnings = []
    for opt, arg in opts:
        if opt == "-c":
            break  # "sftp-server -c command" as a shell: the rest is ignored
        if opt == "-Q":
            if arg.lower() != "requests":
                raise UsageError("Invalid query type\n")
            flags.query = True
        elif opt == "-R":
            flags.read_only = True
        elif opt == "-l":
            if arg.upper() in LEVELS:
                flags.log_level = LEVELS[arg.upper()]
            else:
                warnings.append(f"Invalid log level \"{arg}\"")
        elif opt == "-f":
            if arg.upper() in FACILITIES:
                flags.facility = arg.upper()
            else:
                warnings.append(f"Invalid log facility \"{arg}\"")
        elif opt == "-d":
            try:
                flags.start_dir = percent_expand(tilde_expand(arg, pw), {
                    "d": pw.pw_dir, "u": pw.pw_name, "U": str(pw.pw_uid)})
            except ChrootRefused as exc:
                raise UsageError(f"{exc}\n", 255) from None
        elif opt == "-p":
            if flags.allowed is not None:
                raise UsageError("Permitted requests already set\n", 255)
            flags.allowed = tuple(arg.split(","))
        elif opt == "-P":
            if flags.denied is not None:
                raise UsageError("Refused requests already set\n", 255)
            flags.denied = tuple(arg.split(","))
        elif opt == "-u":
            try:
                mask = int(arg, 8)
            except ValueError:
                mask = -1
            if not 0 <= mask <= 0o777:
                raise UsageError(f"Invalid umask \"{arg}\"\n", 255)
            flags.umask = mask
        elif opt == "-h":
            raise UsageError(USAGE.format(program))
    flags.warnings = tuple(warnings)
    return flags


def requests_text() -> str:
    """What ``sftp-server -Q requests`` prints."""
    return "".join(f"{name}\n" for name, _, _ in REQUESTS)
