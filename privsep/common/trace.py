"""The phase trace: one log line per step of a login, at LogLevel DEBUG
(DEBUG1 to DEBUG3, or -d), where sshd writes its own monitor chatter: at
VERBOSE and below the log holds sshd 9.2's lines and only those.

Each line names the process that took the step and the rights it had then::

    trace: pid 4720 uid 0 monitor: forked net-child 4721 (uid privsep-sshd, root /run/privsep-sshd, caps none)

``trace(log, "monitor", "forked net-child %d", pid)``.  The pid and uid are
read with getpid/getuid/geteuid only, system calls the net-child's seccomp
filter allows: a trace line never opens a file.  Lines from the net-child and
the session process reach the log through the monitor, like their other lines
(with " [preauth]" appended by the monitor to the net-child's).
"""

from __future__ import annotations

import logging
import os


PREFIX = "trace: "


def rights() -> str:
    """'pid 123 uid 0', or 'pid 123 uid 1000/0' when real and effective differ."""
    ruid, euid = os.getuid(), os.geteuid()
    uid = str(ruid) if ruid == euid else f"{ruid}/{euid}"
    return f"pid {os.getpid()} uid {uid}"


def trace(logger: logging.Logger, role: str, step: str, *args) -> None:
    """Log one step taken by this process, in its ``role``
    (listener, monitor, net-child, session)."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(f"{PREFIX}{rights()} {role}: {step}", *args)
