"""The roles of the daemon's processes and the titles that name them.

One table for both sides: the daemon builds its titles here
(common/proctitle.py sets them) and privsep-tree reads a process's role back
from its title with ``role_of``.  The words are OpenSSH's, so the same
classifier serves a real sshd's tree.  Pure: nothing here touches a process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LISTENER = "listener"
MONITOR = "monitor"
NET_CHILD = "net-child"
SESSION = "session"
#: a user's shell or command: recognised by its parent, not its title
SHELL = "shell"
OTHER = "other"

#: The order in which privsep-tree lists roles.
ROLE_ORDER = (LISTENER, MONITOR, NET_CHILD, SESSION, SHELL, OTHER)


@dataclass(frozen=True)
class Role:
    name: str
    #: what the title (as ps shows it) contains, for privsep-sshd and sshd alike
    pattern: re.Pattern[str]


ROLES = (
    Role(LISTENER, re.compile(r"\[listener\]")),
    Role(MONITOR, re.compile(r"\[(priv|accepted)\]$")),
    Role(NET_CHILD, re.compile(r"\[(net|preauth|session-auth|session-auth early)\]$")),
    Role(SESSION, re.compile(r"[^\s:]+@(pts/\d+|notty)$")),
)


def role_of(title: str, parent_role: str | None) -> str:
    """The role a process's title (or, for a shell, its parent) gives it."""
    for role in ROLES:
        if role.pattern.search(title):
            return role.name
    return SHELL if parent_role == SESSION else OTHER


# --- the titles, as the daemon sets them ---------------------------------------------

def listener_title(argv_text: str, startups: int, start: int, full: int) -> str:
    return f"{argv_text} [listener] {startups} of {start}-{full} startups"


#: A monitor before the client named a user.
ACCEPTED_TITLE = "[accepted]"
#: A net-child before the client named a user.
NET_TITLE = "[net]"
#: The inetd-mode relay between stdin/stdout and the connection's socket.
INETD_RELAY_TITLE = "[inetd relay]"


# --- process generation 10: OpenSSH 10's exec'd programs ----------------------------

#: The exec'd per-connection program (the monitor and the session process),
#: as ps shows its titles, and its comm name (OpenSSH 10's binary).
SESSION_PROGRAM_PREFIX = "privsep-sshd-session: "
SESSION_PROGRAM_COMM = "sshd-session"
#: The exec'd pre-auth program.
AUTH_PROGRAM_PREFIX = "privsep-sshd-auth: "
AUTH_PROGRAM_COMM = "sshd-auth"
#: sshd-auth's titles before it reaches the network, and until a user is named.
AUTH_EARLY_TITLE = "[session-auth early]"
AUTH_TITLE = "[session-auth]"
#: A per-connection program before it has read what the listener passed on.
REEXECED_TITLE = "[rexeced]"

#: What each program's titles start with, OpenSSH's and this daemon's, and
#: the OpenSSH program it corresponds to (for privsep-tree's comparison).
PROGRAMS = (
    ("privsep-sshd-session: ", "sshd-session"),
    ("privsep-sshd-auth: ", "sshd-auth"),
    ("privsep-sshd: ", "sshd"),
    ("sshd-session: ", "sshd-session"),
    ("sshd-auth: ", "sshd-auth"),
    ("sshd: ", "sshd"),
)


def program_of(title: str) -> tuple[str, str]:
    """The OpenSSH program a title belongs to and the title without its
    prefix: ``("sshd-session", "alice [priv]")``; ``("", title)`` for a title
    of neither daemon (a shell)."""
    for prefix, program in PROGRAMS:
        if title.startswith(prefix):
            return program, title[len(prefix):]
    return "", title


def monitor_title(user: str | None) -> str:
    """``alice [priv]``; ``unknown [priv]`` for a user that does not exist."""
    return f"{user or 'unknown'} [priv]"


def net_title(user: str | None) -> str:
    return f"{user or 'unknown'} [net]"


def session_title(user: str, ttys: list[str]) -> str:
    """``alice@pts/1,pts/2`` or ``alice@notty``, as sshd's session_proctitle."""
    return f"{user}@{','.join(ttys) or 'notty'}"
