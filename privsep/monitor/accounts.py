"""Account lookups for the monitor: the user's group names, for Match Group
and AllowGroups/DenyGroups."""

from __future__ import annotations

import grp
import pwd


def user_groups(user: str) -> frozenset[str]:
    """The names of ``user``'s primary and supplementary groups (none if unknown)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return frozenset()
    groups = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    try:
        groups.add(grp.getgrgid(pw.pw_gid).gr_name)
    except KeyError:
        pass
    return frozenset(groups)
