"""Account lookups for the monitor: the user's group names, for Match Group
and AllowGroups/DenyGroups."""

from __future__ import annotations

import grp
import os
import pwd


def user_groups(user: str) -> frozenset[str]:
    """The names of ``user``'s primary and supplementary groups (none if unknown).

    As sshd's ga_init: getgrouplist(), then each group's name by its id (a
    group without a name is left out), rather than reading every group of
    the system, which cost about 0.3 ms per call here and more with a
    large or remote group database."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return frozenset()
    groups = set()
    for gid in os.getgrouplist(user, pw.pw_gid):
        try:
            groups.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            pass
    return frozenset(groups)


def warm_up() -> None:
    """One group-list look-up in the listener, before it forks: glibc loads
    the NSS modules of nsswitch.conf's group line (libnss_systemd on Debian)
    at the first one, which each monitor's user_groups would otherwise do
    again, 0.3-0.5 ms of every login's user look-up."""
    try:
        os.getgrouplist("root", 0)
    except OSError:
        pass
