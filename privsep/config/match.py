"""Match blocks and the access rules, pure: OpenSSH's pattern lists (with
CIDR blocks for addresses) tested against what is known of a connection.
The caller looks up the user's groups; nothing here reads a file."""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privsep.config.servconf import ServerOptions



@dataclass(frozen=True)
class ConnectionInfo:
    """What a Match block can test: known once the user is named."""

    user: str | None = None
    host: str | None = None
    address: str | None = None
    local_address: str | None = None
    local_port: int | None = None
    #: the user's group names, looked up by the caller (monitor/accounts.py)
    groups: frozenset[str] = frozenset()

    @classmethod
    def from_spec(cls, spec: str) -> "ConnectionInfo":
        """sshd -C's ``user=alice,host=h,addr=1.2.3.4,laddr=...,lport=22``."""
        fields = {}
        names = {"user": "user", "host": "host", "addr": "address", "laddr": "local_address",
                 "lport": "local_port"}
        for part in spec.split(","):
            key, _, value = part.partition("=")
            if key not in names or not value:
                raise ValueError(f"Invalid test mode specification {part}")
            fields[names[key]] = int(value) if key == "lport" else value
        return cls(**fields)


def match_pattern_list(value: str, patterns: str) -> bool:
    """OpenSSH pattern lists: comma-separated wildcards, ``!`` negates and wins."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(value, pattern[1:] if negated else pattern):
            if negated:
                return False
            matched = True
    return matched


def match_address(addr: str, patterns: str) -> bool:
    """Like match_pattern_list, with CIDR blocks as well as wildcards."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        try:
            hit = ipaddress.ip_address(addr) in ipaddress.ip_network(body, strict=False) \
                if "/" in body else fnmatch.fnmatchcase(addr, body)
        except ValueError:
            hit = False
        if hit:
            if negated:
                return False
            matched = True
    return matched




def criteria_match(criteria: tuple[tuple[str, str], ...], conn: ConnectionInfo) -> bool:
    """Whether every criterion of a Match line holds for ``conn``."""
    for criterion, patterns in criteria:
        if criterion == "all":
            continue
        if criterion == "user":
            ok = conn.user is not None and match_pattern_list(conn.user, patterns)
        elif criterion == "group":
            ok = conn.user is not None and any(
                match_pattern_list(g, patterns) for g in conn.groups)
        elif criterion == "host":
            ok = conn.host is not None and match_pattern_list(conn.host, patterns)
        elif criterion == "address":
            ok = conn.address is not None and match_address(conn.address, patterns)
        elif criterion == "localaddress":
            ok = conn.local_address is not None and match_address(conn.local_address, patterns)
        else:  # localport
            ok = conn.local_port is not None and match_pattern_list(str(conn.local_port),
                                                                    patterns)
        if not ok:
            return False
    return True


# --- access rules: AllowUsers, DenyUsers, AllowGroups, DenyGroups ------------------


def _user_pattern_hits(pattern: str, user: str, host: str, addr: str) -> bool:
    if "@" in pattern:
        user_part, host_part = pattern.split("@", 1)
        return fnmatch.fnmatchcase(user, user_part) and (
            match_address(addr, host_part) or fnmatch.fnmatchcase(host, host_part))
    return fnmatch.fnmatchcase(user, pattern)


def access_refusal(options: ServerOptions, user: str, groups: frozenset[str], addr: str,
                   host: str | None = None) -> str | None:
    """Why AllowUsers/DenyUsers/AllowGroups/DenyGroups refuse ``user``, in
    sshd's words, or None.  Checked in OpenSSH's order."""
    host = host or addr
    if any(_user_pattern_hits(p, user, host, addr) for p in options.deny_users):
        return f"User {user} from {addr} not allowed because listed in DenyUsers"
    if options.allow_users and not any(
            _user_pattern_hits(p, user, host, addr) for p in options.allow_users):
        return f"User {user} from {addr} not allowed because not listed in AllowUsers"
    if options.deny_groups or options.allow_groups:
        if any(match_pattern_list(g, ",".join(options.deny_groups)) for g in groups):
            return f"User {user} from {addr} not allowed because a group is listed in DenyGroups"
        if options.allow_groups and not any(
                match_pattern_list(g, ",".join(options.allow_groups)) for g in groups):
            return (f"User {user} from {addr} not allowed because none of user's groups are "
                    "listed in AllowGroups")
    return None
