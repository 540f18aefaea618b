"""Match blocks and the access rules, pure: OpenSSH's patterns, pattern lists
(with CIDR blocks for addresses) tested against what is known of a connection.
The caller looks up the user's groups; nothing here reads a file.

This is the one pattern matcher of the project: like OpenSSH's match.c and
addrmatch.c it knows only ``*`` and ``?`` (fnmatch's ``[...]`` classes are not
OpenSSH), so every other module calls the functions here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from privsep.config.servconf import ServerOptions

#: match.c copies each list entry into a 1024-byte buffer; a longer entry
#: makes the whole list a non-match.
_MAX_SUBPATTERN = 1023
#: addr_pton_cidr() copies the entry into a 64-byte buffer first.
_MAX_CIDR_TEXT = 63

_PORT = re.compile(r"[0-9]+\Z")


def parse_port(text: str) -> int | None:
    """a2port() for numbers: 0..65535, else None.  (Service names would need
    /etc/services, which a pure parser does not read.)"""
    if not _PORT.match(text) or int(text) > 65535:
        return None
    return int(text)


@dataclass(frozen=True)
class ConnectionInfo:
    """What a Match block can test: known once the user is named."""

    user: str | None = None
    host: str | None = None
    address: str | None = None
    local_address: str | None = None
    local_port: int | None = None
    #: the routing domain (a device name on Linux, "" for none): sshd -C's
    #: rdomain=, or the connection's (common/peer.bound_device)
    rdomain: str | None = None
    #: the user's group names, looked up by the caller (monitor/accounts.py)
    groups: frozenset[str] = frozenset()

    @classmethod
    def from_spec(cls, spec: str) -> "ConnectionInfo":
        """sshd -C's ``user=alice,host=h,addr=1.2.3.4,laddr=...,lport=22,rdomain=r``."""
        fields: dict[str, str | int] = {}
        names = {"user": "user", "host": "host", "addr": "address", "laddr": "local_address",
                 "lport": "local_port", "rdomain": "rdomain"}
        for part in spec.split(","):
            if not part:
                break  # sshd stops at an empty entry
            key, equals, value = part.partition("=")
            if key not in names or not equals:  # an empty value is sshd's ""
                raise ValueError(f"Invalid test mode specification {part}")
            if key == "lport":
                port = parse_port(value)
                if port is None:
                    raise ValueError(
                        f"Invalid port '{value}' in test mode specification {part}")
                fields[names[key]] = port
            else:
                fields[names[key]] = value
        return cls(**fields)  # type: ignore[arg-type]


# --- match.c -----------------------------------------------------------------------


def match_pattern(value: str, pattern: str) -> bool:
    """One OpenSSH pattern against the whole of ``value``: ``*`` is any run of
    characters, ``?`` any one; every other character (``[`` too) is itself.
    Greedy with one backtrack point, so no pattern can make it exponential."""
    vi = pi = 0
    star = -1       # index in pattern just after the last '*'
    resume = 0      # where in value that '*' would swallow one more character
    while vi < len(value):
        if pi < len(pattern) and pattern[pi] == "*":
            pi += 1
            star, resume = pi, vi
        elif pi < len(pattern) and pattern[pi] in ("?", value[vi]):
            vi += 1
            pi += 1
        elif star >= 0:
            resume += 1
            vi, pi = resume, star
        else:
            return False
    return pattern[pi:].strip("*") == ""


def _list_entries(patterns: str) -> list[str]:
    """The entries of a pattern list as match.c walks it: a trailing comma
    ends the list, an empty list has no entries."""
    entries = patterns.split(",") if patterns else []
    if patterns.endswith(","):
        entries.pop()
    return entries


def pattern_list_result(value: str, patterns: str, dolower: bool = False) -> int:
    """match.c match_pattern_list(): -1 if a ``!`` entry matches (it wins
    wherever it stands), 1 if a plain entry matches, else 0.  ``dolower``
    lower-cases the patterns (host names)."""
    positive = 0
    for entry in _list_entries(patterns):
        negated = entry.startswith("!")
        body = entry[1:] if negated else entry
        if len(body) >= _MAX_SUBPATTERN:
            return 0
        if match_pattern(value, body.lower() if dolower else body):
            if negated:
                return -1
            positive = 1
    return positive


def match_pattern_list(value: str, patterns: str) -> bool:
    """OpenSSH pattern lists, case-sensitive: comma-separated wildcards, a
    matching ``!`` entry wins, a list of only negations matches nothing."""
    return pattern_list_result(value, patterns) == 1


def match_hostname(host: str, patterns: str) -> int:
    """match_hostname(): a pattern list with host and patterns lower-cased."""
    return pattern_list_result(host.lower(), patterns, dolower=True)


# --- addrmatch.c --------------------------------------------------------------------

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class _BadNetwork(ValueError):
    """An entry that is an address but a wrong network (addr_pton_cidr's -2)."""


def _parse_address(text: str) -> _Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _parse_cidr(text: str) -> _Network | None:
    """addr_pton_cidr(): a network, or None when ``text`` is no address (the
    caller then tries it as a wildcard).  Raises _BadNetwork for a mask too
    long for the family or host bits set below the mask."""
    if len(text) > _MAX_CIDR_TEXT:
        return None
    addr_text, slash, mask_text = text.partition("/")
    if slash and (not _PORT.match(mask_text) or int(mask_text) > 128):
        return None
    addr = _parse_address(addr_text)
    if addr is None:
        return None
    masklen = int(mask_text) if slash else addr.max_prefixlen
    if masklen > addr.max_prefixlen:
        raise _BadNetwork(text)
    kind = ipaddress.IPv4Network if addr.version == 4 else ipaddress.IPv6Network
    try:
        # int() drops an IPv6 scope; strict refuses host bits below the mask.
        return kind((int(addr), masklen))
    except ValueError:
        raise _BadNetwork(text) from None


def _in_network(addr: _Address, network: _Network) -> bool:
    """addr_netmatch(): same family and same bits under the mask."""
    return addr.version == network.version and \
        int(addr) & int(network.netmask) == int(network.network_address)


def addr_match_list(addr: str | None, patterns: str) -> int:
    """addr_match_list(): 1 match, 0 none, -1 a ``!`` entry matched, -2 a
    malformed entry (empty, or a bad network).  Entries are CIDR blocks or,
    failing that, wildcards.  An ``addr`` that is no address matches nothing;
    with ``addr`` None only the list's form is checked (0 or -2)."""
    try_addr = None
    if addr is not None:
        try_addr = _parse_address(addr)
        if try_addr is None:
            return 0
    result = 0
    for entry in patterns.split(","):
        negated = entry.startswith("!")
        body = entry[1:] if negated else entry
        if not body:
            return -2
        try:
            network = _parse_cidr(body)
        except _BadNetwork:
            return -2
        if addr is None or try_addr is None:
            continue
        if network is not None:
            hit = _in_network(try_addr, network)
        else:
            hit = match_pattern(addr, body)
        if hit:
            if negated:
                return -1
            result = 1
    return result


def match_address(addr: str, patterns: str) -> bool:
    """Like match_pattern_list, with CIDR blocks as well as wildcards; a
    malformed list matches nothing."""
    return addr_match_list(addr, patterns) == 1


def match_host_and_ip(host: str | None, addr: str | None, patterns: str) -> int:
    """match_host_and_ip() (from= and user@host): 1 if the address or the
    host name matches and neither is negated, 0 if not, -1 if the list is
    malformed.  With host and addr None only the list's form is checked."""
    by_addr = addr_match_list(addr, patterns)
    if by_addr == -2:
        return -1
    if host is None or addr is None or by_addr == -1:
        return 0
    by_host = match_hostname(host, patterns)
    if by_host == -1 or (by_host == 0 and by_addr == 0):
        return 0
    return 1


def match_user(user: str | None, host: str | None, addr: str | None, pattern: str) -> int:
    """match_user(): ``user`` or ``user@hosts`` (split at the first '@', as
    OpenSSH 9.2 does), 1/0, or -1 for a malformed host list.  With all three
    None only the pattern's form is checked (0 or -1)."""
    user_pattern, at, hosts = pattern.partition("@")
    if user is None and host is None and addr is None:
        return -1 if at and match_host_and_ip(None, None, hosts) < 0 else 0
    if not match_pattern(user or "", user_pattern):
        return 0
    return match_host_and_ip(host, addr, hosts) if at else 1


# --- groupaccess.c ----------------------------------------------------------------


def group_list_matches(groups: Iterable[str], patterns: str) -> bool:
    """ga_match_pattern_list() (Match Group): some group matches the list and
    no group matches a ``!`` entry."""
    found = False
    for group in groups:
        result = pattern_list_result(group, patterns)
        if result == -1:
            return False
        found = found or result == 1
    return found


def any_group_matches(groups: Iterable[str], entries: Iterable[str]) -> bool:
    """ga_match() (AllowGroups, DenyGroups): each entry is one pattern, not a
    list, so ``!`` and ``,`` are plain characters there."""
    entries = list(entries)
    return any(match_pattern(g, e) for g in groups for e in entries)


# --- Match lines ---------------------------------------------------------------------


def criteria_match(criteria: tuple[tuple[str, str], ...], conn: ConnectionInfo) -> bool:
    """Whether every criterion of a Match line holds for ``conn``."""
    for criterion, patterns in criteria:
        if criterion == "all":
            continue
        if criterion == "user":
            ok = conn.user is not None and match_pattern_list(conn.user, patterns)
        elif criterion == "group":
            ok = conn.user is not None and group_list_matches(conn.groups, patterns)
        elif criterion == "host":
            ok = conn.host is not None and match_hostname(conn.host, patterns) == 1
        elif criterion == "address":
            ok = conn.address is not None and match_address(conn.address, patterns)
        elif criterion == "localaddress":
            ok = conn.local_address is not None and match_address(conn.local_address, patterns)
        elif criterion == "rdomain":
            # sshd -C without rdomain= matches nothing; a connection's is
            # "" without a VRF, so only a pattern such as "*" matches it
            ok = conn.rdomain is not None and match_pattern_list(conn.rdomain, patterns)
        else:  # localport: one port, checked by the parser (no lists in sshd 9.2)
            ok = conn.local_port is not None and parse_port(patterns) == conn.local_port
        if not ok:
            return False
    return True


# --- access rules: AllowUsers, DenyUsers, AllowGroups, DenyGroups ------------------


def access_refusal(options: ServerOptions, user: str, groups: frozenset[str], addr: str,
                   host: str | None = None) -> str | None:
    """Why AllowUsers/DenyUsers/AllowGroups/DenyGroups refuse ``user``, in
    sshd's words, or None.  Checked in OpenSSH's order; a malformed entry
    (rejected by the parser already) refuses rather than allows."""
    host = host or addr
    if any(match_user(user, host, addr, p) != 0 for p in options.deny_users):
        return f"User {user} from {addr} not allowed because listed in DenyUsers"
    if options.allow_users and not any(
            match_user(user, host, addr, p) == 1 for p in options.allow_users):
        return f"User {user} from {addr} not allowed because not listed in AllowUsers"
    if options.deny_groups and any_group_matches(groups, options.deny_groups):
        return f"User {user} from {addr} not allowed because a group is listed in DenyGroups"
    if options.allow_groups and not any_group_matches(groups, options.allow_groups):
        return (f"User {user} from {addr} not allowed because none of user's groups are "
                "listed in AllowGroups")
    return None
