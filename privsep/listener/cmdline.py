"""sshd(8)'s command line, read as sshd 9.2 reads it (sshd.c, main's getopt
loop): its flags, its refusals in its words, and its exit statuses.

The flags are read left to right and each is acted on as it comes, so the
first bad one decides what is said: a flag sshd refuses with ``exit(1)``
(an unknown flag, a missing argument, ``-p 0``, ``-g 5x``, ``-u 99``) ends
the reading, and the ``-o`` lines before it are still handed to the
configuration parser first, whose own refusal (255 for a bad value, 1 for an
unknown keyword) then comes first, as it would in sshd.  Pure: no files.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field

from privsep import __version__
from privsep.config.match import ConnectionInfo, parse_port
from privsep.config.values import parse_time

#: the flags sshd 9.2's getopt knows, less -R (its re-exec'd self, which
#: this daemon never is); a colon after a flag means it takes an argument
OPTSTRING = "C:E:b:c:f:g:h:k:o:p:u:46DQTdeiqrtV"
#: sshd's largest -u: HOST_NAME_MAX + 1
_UTMP_LEN_MAX = 65

USAGE = """\
usage: privsep-sshd [-46DdeiqTtV] [-C connection_spec] [-c host_cert_file]
                    [-E log_file] [-f config_file] [-g login_grace_time]
                    [-h host_key_file] [-o option] [-p port] [-u len]
"""


@dataclass(frozen=True)
class Refusal:
    """What sshd writes to stderr for a refused command line, and its exit status."""
    text: str
    status: int = 1


@dataclass
class CommandLine:
    foreground: bool = False  # -D
    debug: int = 0  # -d, counted
    stderr: bool = False  # -e (and -E)
    logfile: str | None = None  # -E
    config: str | None = None  # -f
    test: bool = False  # -t
    dump: bool = False  # -T
    inetd: bool = False  # -i
    quiet: bool = False  # -q
    version: bool = False  # -V
    conn_spec: list[str] = field(default_factory=list)  # -C
    #: -p was given: from then on sshd reads no Port line, -o's nor the file's
    ports_from_cmdline: bool = False
    #: sshd_config lines the flags stand for, in their order (-o, -p, -h, -c, -g, -4, -6)
    overrides: list[str] = field(default_factory=list)
    #: what is left after the flags: sshd refuses the first, once its
    #: configuration is read ("Extra argument X.")
    operands: list[str] = field(default_factory=list)
    #: the flag that ended the reading, refused; the overrides before it stand
    refusal: Refusal | None = None

    def log_level_override(self) -> str | None:
        """-q, or -d (DEBUG1, -dd DEBUG2, -ddd and more DEBUG3): set before
        any file or -o is read, so they win, as in sshd."""
        if self.debug:
            return f"LogLevel DEBUG{min(self.debug, 3)}"
        return "LogLevel QUIET" if self.quiet else None


def version_line() -> str:
    """Ours in the place of sshd's "OpenSSH_9.2p1 …, OpenSSL 3.0.x …": the
    system's OpenSSL, as sshd's is."""
    return f"privsep-sshd {__version__}, {ssl.OPENSSL_VERSION}"


def usage_text() -> str:
    return f"{version_line()}\n{USAGE}"


def _flags(argv: list[str]):
    """(flag, argument) pairs as POSIX getopt gives them, then ("", rest)
    with the operands; a bad flag as (None, Refusal)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        j = 1
        while j < len(word):
            letter = word[j]
            spot = OPTSTRING.find(letter)
            if letter == ":" or spot < 0:
                yield None, Refusal(f"unknown option -- {letter}\n{usage_text()}")
                return
            if spot + 1 < len(OPTSTRING) and OPTSTRING[spot + 1] == ":":
                if j + 1 < len(word):
                    value = word[j + 1:]
                elif i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                else:
                    yield None, Refusal(f"option requires an argument -- {letter}\n"
                                        f"{usage_text()}")
                    return
                yield letter, value
                break
            yield letter, None
            j += 1
        i += 1
    yield "", argv[i:]


_SWITCHES = {"D": "foreground", "e": "stderr", "i": "inetd", "q": "quiet", "t": "test",
             "T": "dump", "V": "version"}
#: an -o line setting Port ("Port=22", "port 22")
_PORT_LINE = re.compile(r"\s*port\s*(=|\s|$)", re.IGNORECASE)
#: flags that stand for a configuration line
_LINES = {"o": "{}", "h": "HostKey {}", "c": "HostCertificate {}"}


def parse(argv: list[str]) -> CommandLine:
    line = CommandLine()
    for letter, value in _flags(argv):
        if letter is None:
            line.refusal = value
            return line
        if letter == "":
            line.operands = value
            break
        refusal = _take(line, letter, value)
        if refusal is not None:
            line.refusal = refusal
            return line
        if letter == "V":  # sshd prints and exits at once
            return line
    return line


def _take(line: CommandLine, letter: str, value: str | None) -> Refusal | None:
    if letter in _SWITCHES:
        setattr(line, _SWITCHES[letter], True)
    elif letter == "o" and line.ports_from_cmdline and _PORT_LINE.match(value or ""):
        pass  # sshd's Port handler returns before it reads the value
    elif letter in _LINES:
        line.overrides.append(_LINES[letter].format(value))
    elif letter in "46":
        line.overrides.append("AddressFamily " + ("inet" if letter == "4" else "inet6"))
    elif letter == "d":
        line.debug += 1
    elif letter == "E":
        line.logfile, line.stderr = value, True
    elif letter == "f":
        line.config = value
    elif letter == "p":
        if not parse_port(value or ""):  # a2port's 0 is refused too
            return Refusal("Bad port number.\n")
        line.overrides.append(f"Port {value}")
        line.ports_from_cmdline = True
    elif letter == "g":
        try:
            parse_time(value or "")
        except ValueError:
            return Refusal("Invalid login grace time.\n")
        line.overrides.append(f"LoginGraceTime {value}")
    elif letter == "u":
        # sshd's strtonum(0, HOST_NAME_MAX + 2) makes anything out of its
        # range 0, which it takes: only HOST_NAME_MAX + 2 itself is refused
        if (value or "").strip().lstrip("+").isdigit() and int(value) == _UTMP_LEN_MAX + 1:
            return Refusal("Invalid utmp length.\n")
    elif letter == "C":
        try:  # read here, as sshd reads it in its flag loop
            ConnectionInfo.from_spec(value or "")
        except ValueError as exc:
            return Refusal(f"{exc}\n")
        line.conn_spec.append(value or "")
    # -b, -k (protocol 1), -Q and -r: accepted and ignored, as by sshd
    return None
