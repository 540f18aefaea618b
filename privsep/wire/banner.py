"""The client's identification line, judged as sshd 9.2's
kex_exchange_identification judges a server's first line from a client:
what the client is told and which lines the log gets.

The net-child reads the line and judges it; it sends the monitor only the
reason and the client's text (``wire.BannerRefused``), and the monitor
writes the lines from the templates here, unmarked as sshd's [priv]
writes them (it does the banner exchange itself).  A net-child can thus
pick among these lines and fill in the quoted text, nothing more.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

#: a first line that is no identification ("GET / HTTP/1.0")
INVALID = "invalid"
#: "SSH-" but not SSH-MAJOR.MINOR-SOFTWARE
BAD_VERSION = "bad-version"
#: a protocol major version other than 2 (1.99 being 2)
MAJOR = "major"

#: how much of the client's text each line quotes (sshd's %.256s, %.100s)
_QUOTED = {INVALID: 256, BAD_VERSION: 100, MAJOR: 10}
#: sscanf("SSH-%d.%d-%[^\n]") as sshd parses the line
_VERSION = re.compile(r"SSH-\s*([+-]?\d+)\.\s*[+-]?\d+-.+", re.S)


@dataclass(frozen=True)
class Refusal:
    """Why the identification was refused, and the client's text to quote."""

    reason: str
    detail: str

    def __post_init__(self) -> None:
        limit = _QUOTED.get(self.reason)
        if limit is None:
            raise ValueError(f"unknown banner refusal {self.reason!r}")
        if len(self.detail) > limit:
            raise ValueError(f"banner refusal text of {len(self.detail)} characters")
        if self.reason == MAJOR and not re.fullmatch(r"[+-]?\d+", self.detail):
            raise ValueError("banner refusal: the major version is not a number")

    def reply(self) -> bytes:
        """What the client is told before the connection closes."""
        if self.reason == MAJOR:
            return b"Protocol major versions differ.\r\n"
        return b"Invalid SSH identification string.\r\n"

    def log_lines(self, peer: str) -> list[tuple[int, str]]:
        """(level, line) of sshd's log, in its order, for the client at ``peer``
        ("127.0.0.1 port 40000")."""
        if self.reason == INVALID:
            first = ("kex_exchange_identification: client sent invalid protocol "
                     f'identifier "{self.detail}"')
            why = "invalid format"
        elif self.reason == BAD_VERSION:
            first = f"Bad remote protocol version identification: '{self.detail}'"
            why = "invalid format"
        else:
            first = f"Protocol major versions differ: 2 vs. {int(self.detail)}"
            why = "could not read protocol version"
        # the second is sshd's sshpkt_fatal, a logdie: INFO whatever the level
        return [(logging.ERROR, first),
                (logging.INFO, f"banner exchange: Connection from {peer}: {why}")]


def judge(line: str) -> Refusal | None:
    """None for an identification sshd accepts (major 2, or 1.99); else why not."""
    if not (len(line) > 4 and line.startswith("SSH-")):
        return Refusal(INVALID, line[:_QUOTED[INVALID]])
    version = _VERSION.fullmatch(line)
    if version is None:
        return Refusal(BAD_VERSION, line[:_QUOTED[BAD_VERSION]])
    major = int(version.group(1))
    minor = int(line[4:].split(".", 1)[1].split("-", 1)[0])
    if major == 2 or (major == 1 and minor == 99):
        return None
    return Refusal(MAJOR, str(major)[:_QUOTED[MAJOR]])
