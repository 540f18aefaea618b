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
    Role(NET_CHILD, re.compile(r"\[(net|preauth)\]$")),
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


def monitor_title(user: str | None) -> str:
    """``alice [priv]``; ``unknown [priv]`` for a user that does not exist."""
    return f"{user or 'unknown'} [priv]"


def net_title(user: str | None) -> str:
    return f"{user or 'unknown'} [net]"


def session_title(user: str, ttys: list[str]) -> str:
    """``alice@pts/1,pts/2`` or ``alice@notty``, as sshd's session_proctitle."""
    return f"{user}@{','.join(ttys) or 'notty'}"
