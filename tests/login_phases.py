"""Where a login's wall time goes, phase by phase, for both daemons.

    python -m tests.login_phases [--logins N] [-o OPTION ...]

Run from the repository root, as root, like tests/bench.py (and with
PRIVSEP_SSHD to run the checkout).  Both daemons are started with the
benchmark's configuration and one throwaway user logs in N times to each
with ``ssh -vvv host true``, alternating.  Each line the client writes is
stamped as it arrives, and the login is cut at the packets the client sends
and receives into phases, each done by one side while the other waits:
the client generating its key-exchange key pair, the server answering the
key exchange, and so on.  The table gives each phase's median for both
daemons.

This tells what a server can change: the client's phases cost the same
against both daemons, so a login cannot be quicker than their sum, however
fast the server (docs/DESIGN.md, "Login time: the client's share").
``-vvv`` costs the client a little time of its own, the same for both.
Nothing passes or fails: this is a measuring tool.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from tests.bench import DAEMONS, both_daemons, round_order, sessions_gone
from tests.daemon import Server, ssh_argv, wait_until
from tests.userutil import TestUser


@dataclass(frozen=True)
class Phase:
    """A phase ends at the first client line containing ``ends_at``."""

    name: str
    #: "client" or "server": whose work the phase waits for
    side: str
    ends_at: str


#: In the order they happen.  "both" phases hold round trips in which each
#: side does a little.
PHASES = (
    Phase("client start, TCP connect", "client", "Connection established"),
    Phase("server's identification", "server", "Remote protocol version"),
    Phase("server's KEXINIT", "server", "receive packet: type 20"),
    Phase("client: key pair (KEX_ECDH_INIT)", "client", "send packet: type 30"),
    Phase("server: key exchange reply", "server", "receive packet: type 31"),
    Phase("client: shared secret, host key check", "client", "send packet: type 21"),
    Phase("authentication", "both", "receive packet: type 52"),
    Phase("session: channel open confirmed", "server", "receive packet: type 91"),
    Phase("command, exit status, close", "both", "Exit status"),
)


def phase_times(lines: list[tuple[float, str]], total: float) -> dict[str, float] | None:
    """Each phase's length in seconds, from the client's stamped lines; None
    when a phase's line is missing (a login that went another way)."""
    times: dict[str, float] = {}
    start, index = 0.0, 0
    for phase in PHASES:
        while index < len(lines) and phase.ends_at not in lines[index][1]:
            index += 1
        if index == len(lines):
            return None
        times[phase.name] = lines[index][0] - start
        start = lines[index][0]
    times["rest (until the client exits)"] = total - start
    return times


def timed_login(server: Server, user: TestUser, options: list[str]) -> dict[str, float]:
    """One ``ssh -vvv host true``, its lines stamped as they arrive."""
    argv, env = ssh_argv(server, user, "true", options=options, flags=["-vvv"])
    began = time.monotonic()
    client = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, errors="replace")
    assert client.stderr is not None
    lines = [(time.monotonic() - began, line) for line in client.stderr]
    status = client.wait()
    total = time.monotonic() - began
    times = phase_times(lines, total)
    if status != 0 or times is None:
        raise RuntimeError(f"{server.kind}: ssh true failed or went another way "
                           f"(status {status}):\n{''.join(line for _, line in lines[-20:])}")
    times["total"] = total
    return times


def measure(servers: dict[str, Server], user: TestUser, logins: int,
            options: list[str]) -> dict[str, dict[str, float]]:
    """Median seconds of each phase, by daemon."""
    for server in servers.values():  # a first login each, not counted
        timed_login(server, user, options)
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in servers}
    for index in range(logins):
        for kind in round_order(index):
            samples[kind].append(timed_login(servers[kind], user, options))
            wait_until(lambda: sessions_gone(servers[kind]), timeout=60)
    return {kind: {name: statistics.median(s[name] for s in runs) for name in runs[0]}
            for kind, runs in samples.items()}


def print_table(result: dict[str, dict[str, float]], logins: int) -> None:
    print(f"wall time of `ssh -vvv host true` by phase, medians of {logins} (ms)")
    print(f"{'phase':40s} {'waits for':9s} {'privsep':>8s} {'openssh':>8s}")
    sides = {phase.name: phase.side for phase in PHASES}
    for name in result[DAEMONS[0]]:
        side = sides.get(name, "")
        cells = " ".join(f"{result[kind][name] * 1000:8.1f}" for kind in DAEMONS)
        print(f"{name:40s} {side:9s} {cells}")
    client_share = {kind: sum(result[kind][p.name] for p in PHASES if p.side == "client")
                    for kind in DAEMONS}
    cells = " ".join(f"{client_share[kind] * 1000:8.1f}" for kind in DAEMONS)
    print(f"{'the client phases together':40s} {'':9s} {cells}")
    half = result["openssh"]["total"] / 2
    print(f"half of openssh's total: {half * 1000:.1f} ms; left for everything else at that "
          f"ratio: {(half - client_share['privsep']) * 1000:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.login_phases",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=20, help="logins to each daemon (20)")
    parser.add_argument("-o", dest="options", action="append", default=[],
                        help="a client option for both daemons, e.g. KexAlgorithms=curve25519-sha256")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("tests.login_phases: must run as root", file=sys.stderr)
        return 2
    with both_daemons() as (servers, user):
        print_table(measure(servers, user, args.logins, args.options), args.logins)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
