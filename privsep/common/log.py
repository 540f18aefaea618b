"""Logging in OpenSSH's words and places: syslog (facility AUTH, tag
privsep-sshd), stderr with -e, a file with -E.  LogLevel VERBOSE sits
between INFO and DEBUG, as sshd's does.

Every line is escaped before it is written, wherever it goes: user names,
version strings, subsystem names and disconnect messages come from the
network, and a newline in one must not become a forged log line of its own
(fail2ban would believe it).  The escaping is OpenSSH's strnvis for syslog
(VIS_CSTYLE | VIS_NL | VIS_TAB | VIS_OCTAL); unlike sshd, stderr and -E get
it too."""

from __future__ import annotations

import logging
import logging.handlers
import os
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


#: Control characters in C style, as vis(3) writes them with VIS_CSTYLE.
_CSTYLE = {0x07: "\\a", 0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0B: "\\v", 0x0C: "\\f",
           0x0D: "\\r", 0x5C: "\\\\"}


def vis(text: str) -> str:
    """``text`` with every byte that is not printable ASCII escaped: C-style
    for the common controls, octal (``\\303``) for the rest, backslash doubled."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the usual case, unchanged
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        if byte in _CSTYLE:
            out.append(_CSTYLE[byte])
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    return "".join(out)


class VisFormatter(logging.Formatter):
    """A formatter whose every line is escaped by ``vis``."""

    def format(self, record: logging.LogRecord) -> str:
        return vis(super().format(record))


#: The arguments of the last ``setup``: an exec'd program of the daemon
#: (process generation 10) is given them to log where its parent logs.
current: tuple[str, str, bool, str | None] = ("INFO", "AUTH", False, None)


def setup(level: str, facility: str = "AUTH", stderr: bool = False, logfile: str | None = None) -> None:
    global current
    current = (level, facility, stderr, logfile)
    # No line shows where it was logged from, nor a thread's name: spare every
    # record the walk up the stack and the look-ups (the logging HOWTO's
    # "Optimization"; a login makes some twenty records across its processes).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(LEVELS.get(level, logging.INFO))
    if logfile:
        # sshd's -E is its -e into a file: the bare lines, no time or pid
        handler: logging.Handler = PrivateFileHandler(logfile)
        handler.setFormatter(VisFormatter("%(message)s"))
    elif stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(VisFormatter("%(message)s"))
    else:
        code = logging.handlers.SysLogHandler.facility_names.get(facility.lower(), 4 << 3)
        # PAM modules log through glibc's syslog(): give them our tag too.
        syslog.openlog(TAG, syslog.LOG_PID, code << 3)
        handler = _QuietSysLogHandler("/dev/log", facility=code)
        handler.setFormatter(VisFormatter(f"{TAG}[%(process)d]: %(message)s"))
    root.addHandler(handler)
    # paramiko's own chatter is for -d only.
    logging.getLogger("paramiko").setLevel(
        logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL)


def verbose(logger: logging.Logger, msg: str, *args) -> None:
    logger.log(VERBOSE, msg, *args)


class PrivateFileHandler(logging.FileHandler):
    """-E's file, appended to and made 0600 when missing, as sshd's
    log_redirect_stderr_to opens it (the log names users and addresses)."""

    def _open(self):
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
                    opener=lambda path, flags: os.open(path, flags, 0o600))


class _QuietSysLogHandler(logging.handlers.SysLogHandler):
    """No syslog daemon (no /dev/log) means no log, as with sshd: never a
    traceback on stderr for it."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass
