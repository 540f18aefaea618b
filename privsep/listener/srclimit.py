"""PerSourcePenalties' table, as OpenSSH 10's listener keeps it (srclimit.c).
Pure: no sockets, no processes, no clock of its own (the caller passes
``now``, whole seconds of the monotonic clock, as sshd's monotime()).

A connection that ended badly before authentication (its sshd-session's
exit status says how: ``kind_of_exit``) earns its source network (the
address masked to PerSourceNetBlockSize) a penalty of that kind's seconds.
Penalties of one network add up, to ``max`` at most; a network is refused
once its penalty exceeds ``min`` (until then it is "deferred") and until it
expires.  IPv4 and IPv6 networks are counted apart, at most max-sources4/6
each: past that, "permissive" forgets the penalties closest to expiry, and
"deny-all" refuses everyone but the exempt while the table is full.

Every method returns the log lines sshd writes, as (level, text); the
listener logs them.
"""

from __future__ import annotations

import enum
import heapq
import ipaddress
import logging
from dataclasses import dataclass, field

from privsep.common.log import VERBOSE
from privsep.config.match import addr_match_list
from privsep.config.penalties import PenaltyConfig
from privsep.monitor import exits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LogLine = tuple[int, str]


class Kind(enum.Enum):
    """A penalty's kind: its PenaltyConfig field and sshd's reason."""

    CRASH = ("crash", "penalty: caused crash")
    AUTHFAIL = ("authfail", "penalty: failed authentication")
    NOAUTH = ("noauth", "penalty: connections without attempting authentication")
    REFUSECONNECTION = ("refuseconnection", "penalty: connection prohibited by RefuseConnection")
    GRACE_EXCEEDED = ("grace_exceeded", "penalty: exceeded LoginGraceTime")

    @property
    def reason(self) -> str:
        return self.value[1]

    def seconds(self, config: PenaltyConfig) -> int:
        return getattr(config, self.value[0])


def kind_of_exit(exited: bool, status: int) -> Kind | None:
    """The penalty for an unauthenticated connection whose sshd-session
    ended so (sshd.c, child_reap): ``exited`` with exit ``status``, or
    killed by signal ``status``.  None: no penalty."""
    if not exited:
        return Kind.CRASH if status in exits.CRASH_SIGNALS else None
    return {0: None, exits.EXIT_LOGIN_GRACE: Kind.GRACE_EXCEEDED,
            exits.EXIT_CHILD_CRASH: Kind.CRASH, exits.EXIT_AUTH_ATTEMPTED: Kind.AUTHFAIL,
            exits.EXIT_CONFIG_REFUSED: Kind.REFUSECONNECTION}.get(status, Kind.NOAUTH)


@dataclass
class Penalty:
    network: Network
    expiry: int
    active: bool
    reason: str


def _order(network: Network) -> tuple[int, int]:
    """sshd's tie-break between equal expiries: the address (addr_cmp)."""
    return (network.version, int(network.network_address))


@dataclass
class _Family:
    """One address family's penalties: by network, and a heap by expiry
    (entries whose penalty has since changed or gone are skipped)."""

    name: str
    by_network: dict[Network, Penalty] = field(default_factory=dict)
    heap: list[tuple[int, tuple[int, int], Network]] = field(default_factory=list)

    def push(self, penalty: Penalty) -> None:
        heapq.heappush(self.heap, (penalty.expiry, _order(penalty.network), penalty.network))

    def soonest(self) -> Penalty | None:
        """The penalty that expires first (ties: the lowest address)."""
        while self.heap:
            expiry, _, network = self.heap[0]
            penalty = self.by_network.get(network)
            if penalty is not None and penalty.expiry == expiry:
                return penalty
            heapq.heappop(self.heap)  # stale
        return None

    def drop(self, penalty: Penalty) -> None:
        del self.by_network[penalty.network]

    def expire(self, now: int) -> None:
        """Forget the penalties that expired before ``now``."""
        while (penalty := self.soonest()) is not None and penalty.expiry < now:
            self.drop(penalty)


@dataclass
class PenaltyTable:
    config: PenaltyConfig
    #: PerSourceNetBlockSize: the IPv4 and IPv6 prefix lengths
    netblock: tuple[int, int] = (32, 128)
    #: PerSourcePenaltyExemptList, or None
    exempt: str | None = None
    families: dict[int, _Family] = field(default_factory=lambda: {
        4: _Family("ipv4"), 6: _Family("ipv6")})

    def network_of(self, address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address,
                                                 Network]:
        ip = ipaddress.ip_address(address.split("%")[0])
        bits = self.netblock[0] if ip.version == 4 else self.netblock[1]
        return ip, ipaddress.ip_network(f"{ip}/{bits}", strict=False)

    def is_exempt(self, address: str) -> bool:
        return self.exempt is not None and addr_match_list(address, self.exempt) == 1

    def _expire(self, now: int) -> None:
        for family in self.families.values():
            family.expire(now)

    def refusal(self, address: str, now: int) -> str | None:
        """Why a connection from ``address`` is refused now (sshd's
        subreason for its "drop connection" line), or None
        (srclimit_penalty_check_allow)."""
        if not self.config.enabled or self.is_exempt(address):
            return None
        self._expire(now)
        ip, network = self.network_of(address)
        family = self.families[ip.version]
        if (len(family.by_network) >= self.config.max_sources(ip.version)
                and self.config.overflow_for(ip.version) == "deny-all"):
            return "too many penalised addresses"
        penalty = family.by_network.get(network)
        if penalty is None or penalty.expiry < now or not penalty.active:
            return None
        return penalty.reason

    def penalise(self, address: str, kind: Kind | None, now: int) -> list[LogLine]:
        """A connection from ``address`` earned ``kind`` (srclimit_penalise):
        a new penalty, or more of an existing one (to ``max`` at most)."""
        if not self.config.enabled:
            return []
        if self.is_exempt(address):
            return [(logging.DEBUG, f"srclimit_penalise: address {address} is exempt")]
        if kind is None:
            return []
        seconds = kind.seconds(self.config)
        ip, network = self.network_of(address)
        # sshd names the source by the unmasked address and the prefix length
        named = f"{ip}/{network.prefixlen}"
        self._expire(now)
        family = self.families[ip.version]
        limit = self.config.max_sources(ip.version)
        if (len(family.by_network) >= limit
                and self.config.overflow_for(ip.version) == "deny-all"):
            return [(VERBOSE, f"srclimit_penalise: {family.name} penalty table full, "
                              f"cannot penalise {named} for {kind.reason}")]
        existing = family.by_network.get(network)
        if existing is None:
            penalty = Penalty(network, now + seconds, seconds > self.config.min, kind.reason)
            family.by_network[network] = penalty
            family.push(penalty)
            lines = [(VERBOSE, f"srclimit_penalise: {family.name}: new {named} "
                               f"{'active' if penalty.active else 'deferred'} penalty of "
                               f"{seconds} seconds for {kind.reason}")]
            return lines + self._overflow(family, limit)
        lines = [(logging.DEBUG, f"srclimit_penalise: {'active' if existing.active else 'inactive'} "
                                 f"penalty for {family.name} {named} already exists, "
                                 f"{existing.expiry - now} seconds remaining")]
        existing.expiry = min(existing.expiry + seconds, now + self.config.max)
        if existing.expiry - now > self.config.min and not existing.active:
            lines.append((VERBOSE, f"srclimit_penalise: {named}: activating {family.name} "
                                   f"penalty of {existing.expiry - now} seconds for "
                                   f"{kind.reason}"))
            existing.active = True
        existing.reason = kind.reason
        family.push(existing)
        return lines

    def _overflow(self, family: _Family, limit: int) -> list[LogLine]:
        """Permissive overflow: forget the penalties closest to expiry
        until the family is within its limit (the new one may go too)."""
        lines = []
        while len(family.by_network) > limit:
            penalty = family.soonest()
            if penalty is None:
                break
            lines.append((logging.DEBUG, f"srclimit_early_expire_penalties_from_tree: "
                                         f"{family.name} overflow, remove {penalty.network}"))
            family.drop(penalty)
        return lines


@dataclass
class LogRateLimit:
    """sshd's log_ratelimit (log.c): past ``threshold`` events (decaying
    by one a second, counted up to ``max_accum``) the lines are dropped,
    one let through every ``log_every`` seconds with the count dropped
    since; below the threshold again for ``hysteresis`` seconds, all
    lines are written again."""

    threshold: int
    max_accum: int
    hysteresis: int
    log_every: int
    accumulated: int = 0
    last_event: int = 0
    active: bool = False
    last_log: int = 0
    hysteresis_start: int = 0
    dropped: int = 0

    def check(self, now: int) -> tuple[bool, int]:
        """(drop this line?, lines dropped before it to report)."""
        if self.last_event <= 0:
            self.last_event = now
        if now > self.last_event:
            self.accumulated = max(0, self.accumulated - (now - self.last_event))
        self.accumulated = min(self.accumulated + 1, self.max_accum)
        previous, self.last_event = self.last_event, now
        if self.accumulated < self.threshold:
            if not self.active:
                return False, 0
            if self.hysteresis_start == 0:
                if previous + self.hysteresis < now:
                    return self._inactive()
                self.hysteresis_start = now
            elif self.hysteresis_start + self.hysteresis < now:
                return self._inactive()
        elif not self.active:
            self.active, self.last_log, self.hysteresis_start, self.dropped = True, now, 0, 1
            return True, 0
        else:
            self.hysteresis_start = 0
        if self.log_every > 0 and now >= self.last_log + self.log_every:
            self.last_log, dropped, self.dropped = now, self.dropped, 0
            return False, dropped
        self.dropped += 1
        return True, 0

    def _inactive(self) -> tuple[bool, int]:
        dropped = self.dropped
        self.active, self.last_log, self.hysteresis_start, self.dropped = False, 0, 0, 0
        return False, dropped


def penalty_log_limit() -> LogRateLimit:
    """sshd 10's limit on its PerSourcePenalties drop lines."""
    return LogRateLimit(threshold=8, max_accum=60, hysteresis=30, log_every=2 * 60)


def maxstartups_log_limit() -> LogRateLimit:
    """sshd 10's limit on its MaxStartups drop lines."""
    return LogRateLimit(threshold=4, max_accum=60, hysteresis=20, log_every=5 * 60)
