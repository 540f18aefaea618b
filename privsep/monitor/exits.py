"""How a monitor tells the listener the way its connection ended, as
OpenSSH 10's sshd-session tells its listener (srclimit.h): by its exit
status before authentication, and by a byte on the startup pipe once
authentication succeeded.  The listener turns them into PerSourcePenalties
(listener/srclimit.py).  Pure.

In generation 9 the monitor keeps 9.2's statuses (0 or 1; sshd 9.2 has no
penalties); only LoginGraceTime's end and the byte are shared.
"""

from __future__ import annotations

import os
import signal

#: LoginGraceTime ran out (generation 10)
EXIT_LOGIN_GRACE = 3
#: the pre-auth child crashed
EXIT_CHILD_CRASH = 4
#: the connection ended after at least one authentication attempt
EXIT_AUTH_ATTEMPTED = 5
#: RefuseConnection (a keyword of OpenSSH 10 this daemon does not have)
EXIT_CONFIG_REFUSED = 6
#: any other end before authentication (sshd-session's cleanup_exit(255))
EXIT_NOAUTH = 255

#: written on the startup pipe when the user is in: the listener then
#: counts the connection neither in MaxStartups nor for a penalty
AUTH_DONE = b"\x01"

#: signals that mean a crash (misc.c, signal_is_crash)
CRASH_SIGNALS = frozenset((signal.SIGSEGV, signal.SIGBUS, signal.SIGTRAP, signal.SIGSYS,
                           signal.SIGFPE, signal.SIGILL, signal.SIGABRT))


def preauth_exit(generation: int, net_status: int | None, auth_attempted: bool) -> int:
    """The monitor's exit status for a connection that did not
    authenticate; ``net_status`` is the net-child's wait status when it
    ended by itself (None: the monitor ended it).

    Generation 9: 0 when the net-child exited, else 1.  Generation 10, as
    sshd-session: EXIT_CHILD_CRASH when the net-child was killed by a crash
    signal (monitor_wrap.c, mm_reap), else EXIT_AUTH_ATTEMPTED once an
    authentication request reached the monitor, else EXIT_NOAUTH."""
    if generation != 10:
        return 0 if net_status is not None and os.WIFEXITED(net_status) else 1
    if (net_status is not None and os.WIFSIGNALED(net_status)
            and os.WTERMSIG(net_status) in CRASH_SIGNALS):
        return EXIT_CHILD_CRASH
    return EXIT_AUTH_ATTEMPTED if auth_attempted else EXIT_NOAUTH
