"""Logging in OpenSSH's words and places: syslog (facility AUTH, tag
privsep-sshd), stderr with -e, a file with -E.  LogLevel VERBOSE sits
between INFO and DEBUG, as sshd's does."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import syslog

VERBOSE = 15
logging.addLevelName(VERBOSE, "VERBOSE")

TAG = "privsep-sshd"

LEVELS = {
    "QUIET": logging.CRITICAL + 10, "FATAL": logging.CRITICAL, "ERROR": logging.ERROR,
    "INFO": logging.INFO, "VERBOSE": VERBOSE, "DEBUG": logging.DEBUG,
    "DEBUG1": logging.DEBUG, "DEBUG2": logging.DEBUG, "DEBUG3": logging.DEBUG,
}


def setup(level: str, facility: str = "AUTH", stderr: bool = False, logfile: str | None = None) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(LEVELS.get(level, logging.INFO))
    if logfile:
        handler: logging.Handler = logging.FileHandler(logfile)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {TAG}[%(process)d]: %(message)s",
                                               "%b %d %H:%M:%S"))
    elif stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        code = logging.handlers.SysLogHandler.facility_names.get(facility.lower(), 4 << 3)
        # PAM modules log through glibc's syslog(): give them our tag too.
        syslog.openlog(TAG, syslog.LOG_PID, code << 3)
        handler = _QuietSysLogHandler("/dev/log", facility=code)
        handler.setFormatter(logging.Formatter(f"{TAG}[%(process)d]: %(message)s"))
    root.addHandler(handler)
    # paramiko's own chatter is for -d only.
    logging.getLogger("paramiko").setLevel(
        logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL)


def verbose(logger: logging.Logger, msg: str, *args) -> None:
    logger.log(VERBOSE, msg, *args)


class _QuietSysLogHandler(logging.handlers.SysLogHandler):
    """No syslog daemon (no /dev/log) means no log, as with sshd: never a
    traceback on stderr for it."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass
