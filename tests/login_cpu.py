"""Where a login's server CPU goes, process by process, for both daemons.

    python -m tests.login_cpu [--logins N]

Run from the repository root, as root, like tests/bench.py (and with
PRIVSEP_SSHD to run the checkout).  Both daemons are started with the
benchmark's configuration, one throwaway user logs in N times to each with
``ssh host true``, alternating, and the kernel reports every process that
exits on the machine (taskstats over generic netlink, the interface of
getdelays(8)): its CPU time (the scheduler's, in nanoseconds), its minor
page faults, its uid and its parent.  The processes of each daemon are those
descended from its listener; each is given a role by its depth and uid.

The kernel sends a process's record at the start of its exit, before its
address space is torn down, so the rows leave out the exits themselves: the
``exits and the rest`` row is the daemon's whole CPU per login (the
listener's own and its children's, as the login benchmark counts it) less
the rows above it.  Nothing passes or fails: this is a measuring tool
(docs/DESIGN.md, "CPU per login: where it goes").
"""

from __future__ import annotations

import argparse
import collections
import os
import pwd
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass

from tests.bench import DAEMONS, both_daemons, daemon_cpu_seconds, round_order, sessions_gone
from tests.daemon import Server, ssh_argv, wait_until
from tests.userutil import TestUser

# <linux/genetlink.h>, <linux/taskstats.h>
_GENL_ID_CTRL, _CTRL_CMD_GETFAMILY, _CTRL_ATTR_FAMILY_ID, _CTRL_ATTR_FAMILY_NAME = 0x10, 3, 1, 2
_TASKSTATS_CMD_GET, _TASKSTATS_CMD_ATTR_REGISTER_CPUMASK = 1, 3
_TASKSTATS_TYPE_STATS, _TASKSTATS_TYPE_AGGR_PID = 3, 4
_NLM_F_REQUEST = 1


@dataclass(frozen=True)
class TaskExit:
    """One exiting task, from struct taskstats (version 8 and later)."""

    pid: int
    ppid: int
    uid: int
    comm: str
    #: sum_exec_runtime (cpu_run_virtual_total): the scheduler's count, not ticks
    cpu_ns: int
    minflt: int

    @classmethod
    def from_stats(cls, raw: bytes) -> "TaskExit":
        uid, _gid, pid, ppid = struct.unpack_from("IIII", raw, 120)
        (cpu_ns,) = struct.unpack_from("Q", raw, 72)
        (minflt,) = struct.unpack_from("Q", raw, 168)
        return cls(pid, ppid, uid, raw[80:112].split(b"\0", 1)[0].decode(errors="replace"),
                   cpu_ns, minflt)


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * (-length % 4)


def _attrs(data: bytes):
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, off)
        if length < 4:
            return
        yield kind & 0x3FFF, data[off + 4:off + length]
        off += (length + 3) & ~3


class TaskExits:
    """Every task that exits on the machine while it listens (a thread reads
    the netlink socket)."""

    def __init__(self) -> None:
        self.records: list[TaskExit] = []
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self._send(_GENL_ID_CTRL, _CTRL_CMD_GETFAMILY, _attr(_CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"))
        reply = self.sock.recv(65536)
        family = next(struct.unpack("H", value[:2])[0] for kind, value in _attrs(reply[20:])
                      if kind == _CTRL_ATTR_FAMILY_ID)
        cpus = f"0-{os.cpu_count() - 1}".encode() + b"\0"
        self._send(family, _TASKSTATS_CMD_GET, _attr(_TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, cpus))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _send(self, family: int, cmd: int, payload: bytes) -> None:
        genl = struct.pack("BBH", cmd, 1, 0) + payload
        self.sock.send(struct.pack("IHHII", 16 + len(genl), family, _NLM_F_REQUEST, 0, 0) + genl)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, InterruptedError):
                continue
            off = 0
            while off + 20 <= len(data):
                (length,) = struct.unpack_from("I", data, off)
                for kind, value in _attrs(data[off + 20:off + length]):
                    if kind == _TASKSTATS_TYPE_AGGR_PID:
                        self.records += [TaskExit.from_stats(stats) for sub, stats in _attrs(value)
                                         if sub == _TASKSTATS_TYPE_STATS]
                off += max(20, (length + 3) & ~3)

    def stop(self) -> list[TaskExit]:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return self.records


def listener_self_seconds(pid: int) -> tuple[float, int]:
    """The listener's own CPU time (not its children's) and minor faults."""
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def role(chain: list[TaskExit], user_uid: int, sandbox_uids: set[int], daemon_comm: str) -> str:
    """A descendant's role from its line of ancestors below the listener."""
    task = chain[0]
    if len(chain) == 1:
        return "monitor"
    if task.uid == user_uid:
        return "session process" if len(chain) == 2 else "user's program"
    if task.uid in sandbox_uids:
        return "net-child"
    if len(chain) == 2 and task.comm == daemon_comm:
        return "signer"
    return "PAM's helpers (pam_motd)"


def by_role(records: list[TaskExit], listener: int, user_uid: int, sandbox_uids: set[int],
            daemon_comm: str) -> dict[str, list[float]]:
    """role -> [CPU seconds, minor faults, processes], over every descendant."""
    pids = {r.pid: r for r in records}
    table: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0, 0])
    for task in records:
        chain, pid = [], task.pid
        while pid in pids and pid != listener and len(chain) < 16:
            chain.append(pids[pid])
            pid = pids[pid].ppid
        if pid != listener or not chain:
            continue
        row = table[role(chain, user_uid, sandbox_uids, daemon_comm)]
        row[0] += task.cpu_ns / 1e9
        row[1] += task.minflt
        row[2] += 1
    return table


def measure(servers: dict[str, Server], user: TestUser, logins: int) -> dict[str, dict]:
    for server in servers.values():  # a first login each, not counted
        argv, env = ssh_argv(server, user, "true")
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        wait_until(lambda: sessions_gone(server), timeout=60)
    before = {kind: (daemon_cpu_seconds(s), listener_self_seconds(s.pid)) for kind, s in servers.items()}
    exits = TaskExits()
    try:
        for index in range(logins):
            for kind in round_order(index):
                argv, env = ssh_argv(servers[kind], user, "true")
                done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                                      capture_output=True, timeout=60)
                if done.returncode != 0:
                    raise RuntimeError(f"{kind}: ssh true failed: {done.stderr.decode()}")
        for server in servers.values():
            wait_until(lambda: sessions_gone(server), timeout=60)
    finally:
        records = exits.stop()
    sandbox_uids = set()
    for name in ("privsep-sshd", "sshd"):
        try:
            sandbox_uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            pass
    result = {}
    for kind, server in servers.items():
        total = daemon_cpu_seconds(server) - before[kind][0]
        own, faults = listener_self_seconds(server.pid)
        rows = by_role(records, server.pid, user.uid, sandbox_uids,
                       "sshd" if kind == "openssh" else "privsep-sshd")
        rows["listener (itself)"] = [own - before[kind][1][0], faults - before[kind][1][1], 0]
        rows["exits and the rest"] = [total - sum(r[0] for r in rows.values()), 0, 0]
        rows["total"] = [total, sum(r[1] for r in rows.values()), 0]
        result[kind] = {name: (seconds * 1000 / logins, faults / logins)
                        for name, (seconds, faults, _) in rows.items()}
    return result


ORDER = ("listener (itself)", "monitor", "net-child", "signer", "session process",
         "user's program", "PAM's helpers (pam_motd)", "exits and the rest", "total")


def print_table(result: dict[str, dict], logins: int) -> None:
    print(f"server CPU per `ssh host true` login, mean of {logins}; faults: minor page faults")
    print(f"{'':26s} {'privsep':>10s} {'faults':>7s} {'openssh':>10s} {'faults':>7s}")
    for name in ORDER:
        cells = []
        for kind in DAEMONS:
            ms, faults = result[kind].get(name, (0.0, 0))
            cells.append(f"{ms:7.1f} ms {faults:7.0f}" if faults or name != "exits and the rest"
                         else f"{ms:7.1f} ms {'':7s}")
        print(f"{name:26s} {cells[0]} {cells[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.login_cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=20, help="logins to each daemon (20)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("tests.login_cpu: must run as root", file=sys.stderr)
        return 2
    with both_daemons() as (servers, user):
        print_table(measure(servers, user, args.logins), args.logins)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
