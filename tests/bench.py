"""Benchmarks: privsep-sshd against Debian's OpenSSH sshd, in the same run.

    python -m tests.bench [--quick] [--json FILE] [--only NAME,...]

Run from the repository root, as root. Both daemons are started with the
test helpers (tests/daemon.py) on loopback ports with the same extra config,
one throwaway user (tests/userutil.py) logs in to both with the stock client
and its defaults, and every benchmark measures the two daemons round by
round, alternating which goes first, so that whatever else the machine is
doing hits both alike. What is reported is each daemon's figure and the ratio
privsep/openssh against the team's target ("Speed it will be held
to"). Nothing here passes or fails on speed: the exit status is 0 whenever
the measurements could be made.

The benchmarks:

login        ``ssh host true``, wall time of the client, ms; and the CPU time
             per login of the daemon (its processes, reaped ones included,
             so the user's ``true`` too) and of the client.
download     ``head -c SIZE /dev/zero`` read by the client, MB/s (10^6 bytes)
             from the first byte received to the last, so that the login
             itself is not counted.
upload       SIZE bytes written to ``cat > /dev/null``, MB/s from the first
             byte written (once the command runs) until the command has read
             them all.
echo         one byte written to ``ssh -tt host 'stty raw -echo; cat'`` and
             read back, ms; the two daemons' sessions are open side by side
             and take keystrokes in turn.
concurrency  K clients started at once, each running ``echo ready`` then
             holding the session open; the time until all have printed
             ``ready``, the failures, and the memory of the daemon's processes
             (found by walking /proc from the listener) while all are open:
             RSS, which counts pages shared after fork in every process, and
             PSS, which divides them among their sharers; PSS also by role
             (monitor, session process).
rate         N clients each running ``ssh host true`` in a loop for S seconds:
             logins per second and failures.
login-SET, download-SET, upload-SET
             login, download and upload with an algorithm set forced on the
             client, so that both daemons run the same algorithms (with the
             client's defaults they may not): SET sntrup-chacha
             (sntrup761x25519-sha512 and chacha20-poly1305) and curve-gcm
             (curve25519-sha256 and aes128-gcm).  Targets: transfers >= 0.9x
             sshd, login <= 0.5x.

Each download and upload row is followed by the session process's CPU
time per MB moved (``/proc/PID/stat`` of the ``user@notty`` process, from
the first byte to the last, so the login is left out): what the packet
layer and the cipher cost, which a loaded machine's wall time hides.

Each login, download and upload row (client defaults and forced) is followed
by a line naming the key exchange, cipher and MAC each daemon negotiated
(``ssh -v`` with the same options).

Opt-in (``--only NAME``), long:

soak         10,000 logins one after the other; the listener's descriptors
             and RSS at the start, the middle and the end. Both daemons are
             soaked at once, with curve25519 (the listener is watched, not the
             speed; sntrup761's key generation on the client would make it
             hours).
sessions1000 the concurrency benchmark with 1000 sessions.
rekey        1 GiB each way with ``RekeyLimit 1M`` on both daemons and
             ``-o RekeyLimit=1M`` on the client, checked by SHA-256; then an
             upload with only the server rekeying (a key exchange the server
             starts while data flows in).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Iterator

import paramiko

from tests.daemon import (REPO, Server, descendants, install_pam_service, privsep_command,
                          remove_server, ssh_argv, start_server, wait_until)
from privsep.common import roles
from tests.session_util import SESSION_CONFIG
from tests.userutil import TestUser, create_user, remove_user

DAEMONS = ("privsep", "openssh")

#: The same for both daemons: a thousand unauthenticated connections at once
#: must not be dropped by MaxStartups' early drop (default 10:30:100).
BENCH_CONFIG = [*SESSION_CONFIG, "MaxStartups 10000"]
#: The rekey soak's daemons: a key exchange after every MiB either way.
REKEY_LIMIT = "1M"


@dataclass
class Settings:
    login_rounds: int = 30
    size: int = 256 << 20
    bulk_rounds: int = 5
    keystrokes: int = 300
    keystroke_pause: float = 0.01
    sessions: int = 200
    concurrency_rounds: int = 1
    #: login rate: this many clients, each logging in again and again, for so long
    rate_clients: int = 50
    rate_seconds: float = 30.0
    #: soak: this many logins one after the other, the listener watched throughout
    soak_logins: int = 10000
    #: sessions1000: the concurrency benchmark at full scale (opt-in)
    many_sessions: int = 1000
    #: rekey: bytes each way, with RekeyLimit 1M on both sides (opt-in)
    rekey_size: int = 1 << 30

    @classmethod
    def quick(cls) -> "Settings":
        return cls(login_rounds=5, size=16 << 20, bulk_rounds=2, keystrokes=30, sessions=20,
                   rate_clients=4, rate_seconds=3.0, soak_logins=20, many_sessions=30,
                   rekey_size=8 << 20)


# --- numbers -------------------------------------------------------------------

def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.9 for p90)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(values: list[float]) -> dict:
    return {"median": median(values), "p90": percentile(values, 0.9),
            "p99": percentile(values, 0.99), "min": min(values), "max": max(values),
            "samples": values}


def round_order(index: int) -> tuple[str, str]:
    """privsep first in even rounds, openssh first in odd ones."""
    return DAEMONS if index % 2 == 0 else DAEMONS[::-1]


@contextlib.contextmanager
def both_daemons() -> Iterator[tuple[dict[str, Server], TestUser]]:
    """Both daemons with the benchmark's configuration and one throwaway
    user, all removed afterwards, even after a Ctrl-C (a second one must
    not leave a user or a server behind)."""
    install_pam_service()
    servers: dict[str, Server] = {}
    user: TestUser | None = None
    try:
        user = create_user("pst", password=False)
        for kind in DAEMONS:
            servers[kind] = start_server(kind, BENCH_CONFIG)
        yield servers, user
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for server in servers.values():
            remove_server(server)
        if user is not None:
            remove_user(user)


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --- clients ---------------------------------------------------------------------

class Watchdog:
    """Kill a client that takes longer than ``timeout``: a hung daemon must
    not hang the benchmark."""

    def __init__(self, proc: subprocess.Popen, timeout: float) -> None:
        self.timer = threading.Timer(timeout, proc.kill)
        self.timer.daemon = True

    def __enter__(self) -> "Watchdog":
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()


def client(server: Server, user: TestUser, command: str, *, stdin=subprocess.DEVNULL,
           tty: bool | None = None, options: tuple[str, ...] = ()) -> subprocess.Popen:
    """The stock ssh client with its defaults (ssh_argv adds only host-key,
    key-file and batch options) and ``options`` (-o, the forced algorithms),
    unbuffered pipes, stderr kept for errors."""
    argv, env = ssh_argv(server, user, command, tty=tty, options=list(options))
    return spawn(argv, env, stdin)


def spawn(argv: list[str], env: dict[str, str], stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """A client with stdout a pipe and stderr a temporary file, kept as
    ``proc.stderr`` for client_error (Popen sets it only for a pipe)."""
    errors = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(argv, env=env, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=errors, bufsize=0)
    except BaseException:
        errors.close()
        raise
    proc.stderr = errors
    return proc


def stop_client(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def client_error(proc: subprocess.Popen) -> str:
    stderr = proc.stderr
    if stderr is None or not hasattr(stderr, "seek"):
        return ""
    stderr.seek(0)
    return stderr.read().decode(errors="replace").strip()[-500:]


def read_until(proc: subprocess.Popen, marker: bytes, timeout: float) -> float:
    """Read the client's stdout until ``marker``; the time it arrived."""
    buffered = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while marker not in buffered:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(f"no {marker!r} within {timeout} s: {client_error(proc)}")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                proc.wait()
                raise RuntimeError(f"client ended (status {proc.returncode}) before "
                                   f"{marker!r}: {client_error(proc)}")
            buffered += chunk
    return time.perf_counter()


# --- the benchmarks -----------------------------------------------------------------

def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def login_once(server: Server, user: TestUser,
               options: tuple[str, ...] = ()) -> tuple[float, float]:
    """Wall time and the client's CPU time of one ``ssh host true``."""
    argv, env = ssh_argv(server, user, "true", options=list(options))
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=60)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"ssh true on {server.kind} failed ({done.returncode}): "
                           f"{done.stderr.decode(errors='replace')}")
    return elapsed, children_cpu_seconds() - cpu


def bench_login(servers: dict[str, Server], user: TestUser, settings: Settings,
                options: tuple[str, ...] = ()) -> dict:
    times: dict[str, list[float]] = {kind: [] for kind in DAEMONS}
    client_cpu: dict[str, float] = {kind: 0.0 for kind in DAEMONS}
    cpu_before = {}
    for kind in DAEMONS:
        wait_until(lambda: sessions_gone(servers[kind]), timeout=60)
        cpu_before[kind] = daemon_cpu_seconds(servers[kind])
    for index in range(settings.login_rounds):
        for kind in round_order(index):
            elapsed, cpu = login_once(servers[kind], user, options)
            times[kind].append(elapsed * 1000)
            client_cpu[kind] += cpu
    result = {}
    for kind in DAEMONS:
        wait_until(lambda: sessions_gone(servers[kind]), timeout=60)
        cpu = daemon_cpu_seconds(servers[kind]) - cpu_before[kind]
        result[kind] = {**summary(times[kind]), "value": median(times[kind]),
                        "server_cpu_ms_per_login": cpu * 1000 / settings.login_rounds,
                        "client_cpu_ms_per_login": client_cpu[kind] * 1000
                        / settings.login_rounds}
    return {"unit": "ms", "measure": "median wall time of `ssh host true`", **result}


def session_process(server: Server) -> int | None:
    """The pid of the daemon's session process (``user@notty``) of the one
    session open, None if there is none."""
    for proc in descendants(server.pid):
        if roles.role_of(proc.args, None) == roles.SESSION:
            return proc.pid
    return None


def process_cpu_seconds(pid: int | None) -> float:
    """User and system CPU time of ``pid`` so far (0 when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, TypeError):
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SessionCpu:
    """The session process's CPU time between ``start()`` (once the bytes
    flow) and ``stop()`` (once the last has passed), per MB moved: the
    packet layer's and cipher's cost, login left out."""

    def __init__(self, server: Server) -> None:
        self.server, self.pid, self.begin, self.used = server, None, 0.0, float("nan")

    def start(self) -> None:
        self.pid = session_process(self.server)
        self.begin = process_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.pid is not None:
            self.used = process_cpu_seconds(self.pid) - self.begin

    def ms_per_mb(self, size: int) -> float:
        return self.used * 1000 / (size / 1e6)


def download_once(server: Server, user: TestUser, size: int,
                  options: tuple[str, ...] = ()) -> tuple[float, float]:
    """MB/s from the first byte received to the last, and the session
    process's CPU ms per MB."""
    proc = client(server, user, f"head -c {size} /dev/zero", options=options)
    buffer = memoryview(bytearray(1 << 20))
    got = 0
    first_at = first_bytes = None
    cpu = SessionCpu(server)
    try:
        with Watchdog(proc, 120 + size / 5e6):
            while got < size:
                n = proc.stdout.readinto(buffer)
                if not n:
                    break
                got += n
                if first_at is None:
                    first_at, first_bytes = time.perf_counter(), n
                    cpu.start()
            last_at = time.perf_counter()
            cpu.stop()
            proc.wait()
        if got != size or proc.returncode != 0:
            raise RuntimeError(f"download from {server.kind}: {got} of {size} bytes, status "
                               f"{proc.returncode}: {client_error(proc)}")
    finally:
        stop_client(proc)
    if last_at <= first_at:
        raise RuntimeError("download size too small to time; raise --size")
    return (size - first_bytes) / (last_at - first_at) / 1e6, cpu.ms_per_mb(size - first_bytes)


def upload_once(server: Server, user: TestUser, size: int,
                options: tuple[str, ...] = ()) -> tuple[float, float]:
    """MB/s from the first byte written (once the remote command runs)
    until the remote command has read them all, and the session process's
    CPU ms per MB."""
    proc = client(server, user, "echo ready; cat > /dev/null; echo done",
                  stdin=subprocess.PIPE, options=options)
    chunk = memoryview(bytes(1 << 20))
    cpu = SessionCpu(server)
    try:
        with Watchdog(proc, 120 + size / 5e6):
            read_until(proc, b"ready", 60)
            cpu.start()
            start = time.perf_counter()
            left = size
            while left:
                left -= proc.stdin.write(chunk[:min(left, len(chunk))])
            proc.stdin.close()
            end = read_until(proc, b"done", 120 + size / 5e6)
            cpu.stop()
            proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"upload to {server.kind}: status {proc.returncode}: "
                               f"{client_error(proc)}")
    finally:
        stop_client(proc)
    return size / (end - start) / 1e6, cpu.ms_per_mb(size)


def bench_bulk(which: str, servers: dict[str, Server], user: TestUser,
               settings: Settings, options: tuple[str, ...] = ()) -> dict:
    once = download_once if which == "download" else upload_once
    rates: dict[str, list[float]] = {kind: [] for kind in DAEMONS}
    cpu: dict[str, list[float]] = {kind: [] for kind in DAEMONS}
    for index in range(settings.bulk_rounds):
        for kind in round_order(index):
            rate, ms_per_mb = once(servers[kind], user, settings.size, options)
            rates[kind].append(rate)
            cpu[kind].append(ms_per_mb)
        progress(f"{which}{' ' + ' '.join(options) if options else ''} round "
                 f"{index + 1}/{settings.bulk_rounds}: "
                 + ", ".join(f"{kind} {rates[kind][-1]:.0f} MB/s, session CPU "
                             f"{cpu[kind][-1]:.2f} ms/MB" for kind in DAEMONS))
    result = {kind: {**summary(rates[kind]), "value": median(rates[kind]),
                     "session_cpu_ms_per_mb": median(cpu[kind]),
                     "session_cpu_samples": cpu[kind]} for kind in DAEMONS}
    return {"unit": "MB/s", "bytes": settings.size,
            "measure": f"median throughput of {settings.size >> 20} MiB, "
                       f"{'server to client' if which == 'download' else 'client to server'}",
            **result}


def open_echo_session(server: Server, user: TestUser) -> subprocess.Popen:
    proc = client(server, user, "stty raw -echo; echo ready; exec cat",
                  stdin=subprocess.PIPE, tty=True)
    read_until(proc, b"ready", 60)
    # Whatever followed "ready" (its line end) is read before timing.
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while sel.select(0.2):
            if not os.read(proc.stdout.fileno(), 65536):
                raise RuntimeError(f"echo session on {server.kind} ended: {client_error(proc)}")
    return proc


def keystroke(proc: subprocess.Popen, key: bytes, sel: selectors.BaseSelector) -> float:
    start = time.perf_counter()
    os.write(proc.stdin.fileno(), key)
    if not sel.select(10):
        raise RuntimeError(f"no echo within 10 s: {client_error(proc)}")
    echoed = os.read(proc.stdout.fileno(), 16)
    elapsed = time.perf_counter() - start
    if echoed != key:
        raise RuntimeError(f"sent {key!r}, got {echoed!r}")
    return elapsed


def bench_echo(servers: dict[str, Server], user: TestUser, settings: Settings) -> dict:
    sessions: dict[str, subprocess.Popen] = {}
    selectors_: dict[str, selectors.BaseSelector] = {}
    times: dict[str, list[float]] = {kind: [] for kind in DAEMONS}
    try:
        for kind in DAEMONS:
            sessions[kind] = open_echo_session(servers[kind], user)
            selectors_[kind] = selectors.DefaultSelector()
            selectors_[kind].register(sessions[kind].stdout, selectors.EVENT_READ)
        keys = b"abcdefghijklmnopqrstuvwxyz"
        for index in range(settings.keystrokes):
            key = keys[index % len(keys):][:1]
            for kind in round_order(index):
                times[kind].append(keystroke(sessions[kind], key, selectors_[kind]) * 1000)
                time.sleep(settings.keystroke_pause)
    finally:
        for sel in selectors_.values():
            sel.close()
        for proc in sessions.values():
            stop_client(proc)
    result = {kind: {**summary(times[kind]), "value": median(times[kind])} for kind in DAEMONS}
    return {"unit": "ms", "measure": "median time for one byte to come back through "
                                     "`stty raw -echo; cat` on a pty", **result}


# --- memory of a daemon's process tree -----------------------------------------

def memory_kib(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) in KiB, or None when the process is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    rss = re.search(r"^Rss:\s+(\d+) kB", rollup, re.M)
    pss = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
    if not rss or not pss:
        return None
    return int(rss.group(1)), int(pss.group(1))


def daemon_memory(server: Server) -> dict:
    """The memory of the daemon's own processes: the listener and every
    descendant running the same executable (so not the users' programs),
    in all and by role (listener, monitor, session process; the title tells,
    with the same words for both daemons)."""
    exe = os.readlink(f"/proc/{server.pid}/exe")
    total = {"processes": 0, "rss_kib": 0, "pss_kib": 0}
    by_role: dict[str, dict[str, int]] = {}
    for pid in [server.pid, *(proc.pid for proc in descendants(server.pid))]:
        try:
            if os.readlink(f"/proc/{pid}/exe") != exe:
                continue
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        measured = memory_kib(pid)
        if measured is None:
            continue
        role = roles.role_of(title.decode(errors="replace").strip(), None)
        for counts in (total, by_role.setdefault(role, {"processes": 0, "rss_kib": 0,
                                                        "pss_kib": 0})):
            counts["processes"] += 1
            counts["rss_kib"] += measured[0]
            counts["pss_kib"] += measured[1]
    return {**total, "by_role": by_role}


def daemon_cpu_seconds(server: Server) -> float:
    """CPU time (user and system) of the listener and of every descendant it
    has reaped so far, which once the sessions are gone is all the daemon's
    work, down to the users' programs."""
    stat = Path(f"/proc/{server.pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    # utime, stime, cutime, cstime: fields 14 to 17 of proc(5), counted from 3 here.
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def sessions_gone(server: Server) -> bool:
    return not descendants(server.pid)


def concurrency_once(server: Server, user: TestUser, sessions: int) -> dict:
    wait_until(lambda: sessions_gone(server), timeout=60)
    idle = daemon_memory(server)
    argv, env = ssh_argv(server, user, "echo ready; exec cat > /dev/null")
    deadline = time.monotonic() + 60 + sessions * 0.5
    procs: list[subprocess.Popen] = []
    ready: dict[int, float] = {}
    failed: dict[int, str] = {}
    try:
        with selectors.DefaultSelector() as sel:
            start = time.perf_counter()
            for index in range(sessions):
                proc = spawn(argv, env, stdin=subprocess.PIPE)
                procs.append(proc)
                sel.register(proc.stdout, selectors.EVENT_READ, index)
            seen = [b""] * sessions
            while len(ready) + len(failed) < sessions:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(left):
                    index = key.data
                    chunk = os.read(key.fd, 4096)
                    if chunk:
                        seen[index] += chunk
                        if b"ready" in seen[index]:
                            ready[index] = time.perf_counter() - start
                            sel.unregister(key.fileobj)
                    else:
                        sel.unregister(key.fileobj)
                        procs[index].wait()
                        failed[index] = (f"status {procs[index].returncode}: "
                                         f"{client_error(procs[index])}")
            wall = time.perf_counter() - start
            for index in range(sessions):
                if index not in ready and index not in failed:
                    failed[index] = "not ready in time"
            loaded = daemon_memory(server)
    finally:
        for proc in procs:
            try:
                proc.stdin.close()  # the session ends as cat sees EOF
            except OSError:
                pass
        end_by = time.monotonic() + 30
        for proc in procs:
            try:
                proc.wait(max(0.1, end_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            stop_client(proc)
    ok = len(ready)
    rss_each = (loaded["rss_kib"] - idle["rss_kib"]) / 1024 / max(ok, 1)
    pss_each = (loaded["pss_kib"] - idle["pss_kib"]) / 1024 / max(ok, 1)
    # The share of each kind of process: its PSS while loaded over the
    # sessions (the listener's, a negative share, is what its pages now
    # shared with the sessions took off its own PSS).
    pss_by_role = {role: (counts["pss_kib"] - idle["by_role"].get(role, {}).get("pss_kib", 0))
                   / 1024 / max(ok, 1) for role, counts in loaded["by_role"].items()}
    errors = sorted(set(failed.values()))[:3]
    return {"sessions": sessions, "ready": ok, "failures": len(failed),
            "errors": errors, "wall_s": wall,
            "ready_median_s": median(list(ready.values())) if ready else None,
            "idle": idle, "loaded": loaded,
            "rss_per_session_mb": rss_each, "pss_per_session_mb": pss_each,
            "pss_per_session_by_role_mb": pss_by_role}


def rate_once(server: Server, user: TestUser, clients: int, seconds: float) -> dict:
    """``clients`` loops of ``ssh host true`` side by side for ``seconds``."""
    wait_until(lambda: sessions_gone(server), timeout=60)
    argv, env = ssh_argv(server, user, "true")
    done, failures, errors = [0], [0], set()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < stop_at:
            result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                                    capture_output=True, timeout=60)
            with lock:
                if result.returncode == 0:
                    done[0] += 1
                else:
                    failures[0] += 1
                    errors.add(result.stderr.decode(errors="replace").strip()[-200:])

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"logins": done[0], "failures": failures[0], "errors": sorted(errors)[:3],
            "wall_s": wall, "per_second": done[0] / wall}


def bench_rate(servers: dict[str, Server], user: TestUser, settings: Settings) -> dict:
    result = {}
    for kind in DAEMONS:
        run = rate_once(servers[kind], user, settings.rate_clients, settings.rate_seconds)
        progress(f"rate {kind}: {run['logins']} logins, {run['failures']} failures in "
                 f"{run['wall_s']:.0f} s")
        result[kind] = {**run, "value": run["per_second"]}
    return {"unit": "/s", "measure": f"logins per second, {settings.rate_clients} clients "
                                     f"looping `ssh host true` for {settings.rate_seconds:.0f} s",
            **result}


def listener_state(server: Server) -> dict:
    """The listener's own descriptors and memory (a leak shows here first)."""
    rss_pss = memory_kib(server.pid) or (0, 0)
    return {"fds": len(os.listdir(f"/proc/{server.pid}/fd")), "rss_kib": rss_pss[0]}


#: The soak's client options: the cheapest key exchange both daemons offer.
SOAK_OPTIONS = ("KexAlgorithms=curve25519-sha256",)


def soak_once(server: Server, user: TestUser, logins: int) -> dict:
    wait_until(lambda: sessions_gone(server), timeout=60)
    samples = {"start": listener_state(server)}
    failures = 0
    for index in range(1, logins + 1):
        try:
            login_once(server, user, SOAK_OPTIONS)
        except (RuntimeError, subprocess.TimeoutExpired):
            failures += 1
        if index == logins // 2:
            wait_until(lambda: sessions_gone(server), timeout=60)
            samples["middle"] = listener_state(server)
    wait_until(lambda: sessions_gone(server), timeout=60)
    samples["end"] = listener_state(server)
    return {"logins": logins, "failures": failures, **samples}


def bench_soak(servers: dict[str, Server], user: TestUser, settings: Settings) -> dict:
    result = {}
    runs: dict[str, dict] = {}
    # Side by side, in threads: each thread only waits for its clients.
    threads = [threading.Thread(target=lambda kind=kind: runs.__setitem__(
        kind, soak_once(servers[kind], user, settings.soak_logins))) for kind in DAEMONS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for kind in DAEMONS:
        run = runs[kind]
        progress(f"soak {kind}: listener fds {run['start']['fds']} -> {run['middle']['fds']} "
                 f"-> {run['end']['fds']}, RSS {run['start']['rss_kib']} -> "
                 f"{run['end']['rss_kib']} KiB, {run['failures']} failures")
        growth = run["end"]["rss_kib"] - run["start"]["rss_kib"]
        result[kind] = {**run, "value": growth, "fd_growth": run["end"]["fds"] - run["start"]["fds"]}
    return {"unit": "KiB", "measure": f"growth of the listener's RSS over {settings.soak_logins} "
                                      "sequential logins", **result}


def bench_concurrency(servers: dict[str, Server], user: TestUser, settings: Settings,
                      sessions: int | None = None) -> dict:
    sessions = sessions or settings.sessions
    runs: dict[str, list[dict]] = {kind: [] for kind in DAEMONS}
    for index in range(settings.concurrency_rounds):
        for kind in round_order(index):
            run = concurrency_once(servers[kind], user, sessions)
            runs[kind].append(run)
            progress(f"concurrency {kind}: {run['ready']}/{run['sessions']} ready in "
                     f"{run['wall_s']:.1f} s, {run['loaded']['processes']} daemon processes")
    result = {}
    for kind in DAEMONS:
        walls = [run["wall_s"] for run in runs[kind]]
        result[kind] = {
            "value": median(walls),
            "wall_s": median(walls),
            "sessions": sessions,
            "ready": min(run["ready"] for run in runs[kind]),
            "failures": sum(run["failures"] for run in runs[kind]),
            "rss_per_session_mb": median([run["rss_per_session_mb"] for run in runs[kind]]),
            "pss_per_session_mb": median([run["pss_per_session_mb"] for run in runs[kind]]),
            "pss_per_session_by_role_mb": {
                role: median([run["pss_per_session_by_role_mb"].get(role, 0.0)
                              for run in runs[kind]])
                for role in (roles.MONITOR, roles.SESSION, roles.LISTENER)},
            "runs": runs[kind],
        }
    return {"unit": "s", "measure": f"wall time until {sessions} sessions opened at "
                                    "once have all printed `ready`", **result}


# --- rekey soak ---------------------------------------------------------------------

#: The rekey soak's transfers: each way with RekeyLimit on both sides, and an
#: upload with RekeyLimit on the server alone, so that every key exchange
#: after the first one is started by the server while data flows in.
REKEY_LEGS = ("download", "upload", "upload, server rekeys")


def random_file(directory: Path, size: int) -> tuple[Path, str]:
    """A file of ``size`` random bytes that anyone may read; its SHA-256."""
    path = directory / "payload"
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    path.chmod(0o644)
    directory.chmod(0o755)
    return path, digest.hexdigest()


def key_exchanges(stderr: str) -> int:
    """How many key exchanges ``ssh -v`` completed (the first one included)."""
    return stderr.count("SSH2_MSG_NEWKEYS received")


def rekey_leg(server: Server, user: TestUser, leg: str, path: Path, digest: str,
              size: int) -> dict:
    """One transfer of the file; whether what arrived has the file's SHA-256."""
    options = [] if leg == "upload, server rekeys" else [f"RekeyLimit={REKEY_LIMIT}"]
    command = f"cat {path}" if leg == "download" else "sha256sum"
    argv, env = ssh_argv(server, user, command, options=options, flags=["-v"])
    with open(path, "rb") as payload, tempfile.TemporaryFile() as stderr:
        stdin = subprocess.DEVNULL if leg == "download" else payload
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=stderr, bufsize=0)
        got, received = 0, hashlib.sha256()
        with Watchdog(proc, 120 + size / 3e6):
            if leg == "download":
                while chunk := proc.stdout.read(1 << 20):
                    received.update(chunk)
                    got += len(chunk)
                arrived = received.hexdigest()
            else:
                arrived = proc.stdout.read().decode(errors="replace").split(" ")[0].strip()
                got = size
            proc.wait()
        elapsed = time.perf_counter() - start
        proc.stdout.close()
        stderr.seek(0)
        log = stderr.read().decode(errors="replace")
    return {"ok": arrived == digest and got == size, "status": proc.returncode,
            "bytes": got, "seconds": elapsed, "mb_s": got / elapsed / 1e6,
            "key_exchanges": key_exchanges(log),
            "error": "" if proc.returncode == 0 else log.strip()[-300:]}


def bench_rekey(servers: dict[str, Server], user: TestUser, settings: Settings) -> dict:
    """``rekey_size`` bytes each way through daemons with ``RekeyLimit 1M``
    and a client with ``-o RekeyLimit=1M``, compared by SHA-256; then an
    upload with only the server rekeying.  Its own pair of daemons (the
    others keep the default RekeyLimit)."""
    rekeying: dict[str, Server] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-rekey-"))
    result: dict[str, dict] = {}
    try:
        path, digest = random_file(workdir, settings.rekey_size)
        for kind in DAEMONS:
            rekeying[kind] = start_server(kind, [*BENCH_CONFIG, f"RekeyLimit {REKEY_LIMIT}"])
        legs: dict[str, dict[str, dict]] = {kind: {} for kind in DAEMONS}
        for index, leg in enumerate(REKEY_LEGS):
            for kind in round_order(index):
                run = rekey_leg(rekeying[kind], user, leg, path, digest, settings.rekey_size)
                legs[kind][leg] = run
                progress(f"rekey {kind} {leg}: {run['mb_s']:.0f} MB/s, "
                         f"{run['key_exchanges']} key exchanges, "
                         f"{'checksum equal' if run['ok'] else 'MISMATCH'}, status {run['status']}")
        for kind in DAEMONS:
            runs = legs[kind].values()
            result[kind] = {
                "value": median([run["mb_s"] for run in runs]),
                "mismatches": sum(1 for run in runs if run["status"] == 0 and not run["ok"]),
                "failures": sum(1 for run in runs if run["status"] != 0),
                "server_initiated_rekeys": legs[kind]["upload, server rekeys"]["key_exchanges"] - 1,
                "legs": legs[kind],
            }
    finally:
        for server in rekeying.values():
            remove_server(server)
        shutil.rmtree(workdir, ignore_errors=True)
    return {"unit": "MB/s", "bytes": settings.rekey_size,
            "measure": f"SHA-256 of {settings.rekey_size >> 20} MiB each way with RekeyLimit "
                       f"{REKEY_LIMIT} on both sides (median MB/s of the transfers)", **result}


# --- targets (the team's notes, "Speed it will be held to") ---------------------------------

def judge(name: str, result: dict, settings: Settings) -> None:
    """Add the ratio privsep/openssh, the target and whether it is met."""
    privsep, openssh = result["privsep"]["value"], result["openssh"]["value"]
    result["ratio"] = privsep / openssh if name != "soak" else float("nan")
    if name in FORCED_BENCHMARKS:  # the same algorithms on both: issue 13's targets
        if name.startswith("login-"):
            result["target"], result["ok"] = "<=0.5", result["ratio"] <= 0.5
        else:
            result["target"], result["ok"] = ">=0.9", result["ratio"] >= 0.9
    elif name == "login":
        result["target"], result["ok"] = "<=0.5", result["ratio"] <= 0.5
        for side in ("server", "client"):
            key = f"{side}_cpu_ms_per_login"
            result[f"{side}_cpu_ratio"] = result["privsep"][key] / result["openssh"][key]
    elif name in ("download", "upload"):
        result["target"], result["ok"] = ">=1.0", result["ratio"] >= 1.0
    elif name == "echo":
        result["target"], result["ok"] = "<=1.5", result["ratio"] <= 1.5
        result["p90_ratio"] = result["privsep"]["p90"] / result["openssh"]["p90"]
    elif name == "rate":
        result["target"], result["ok"] = "no failure", result["privsep"]["failures"] == 0
    elif name == "soak":
        # growth against growth says nothing (ratio nan); both are shown
        result["target"] = "flat"
        result["ok"] = (result["privsep"]["fd_growth"] == 0 and result["privsep"]["failures"] == 0)
    elif name == "rekey":
        result["target"] = "0 mismatches"
        result["ok"] = all(result[kind]["mismatches"] == 0 and result[kind]["failures"] == 0
                           for kind in DAEMONS)
    elif name in CONCURRENCY:
        result["target"] = f"all {result['privsep']['sessions']}"
        result["ok"] = result["privsep"]["failures"] == 0
        result["rss_ratio"] = (result["privsep"]["rss_per_session_mb"]
                               / result["openssh"]["rss_per_session_mb"])
        result["pss_ratio"] = (result["privsep"]["pss_per_session_mb"]
                               / result["openssh"]["pss_per_session_mb"])


BENCHMARKS = {
    "login": bench_login,
    "download": lambda servers, user, settings: bench_bulk("download", servers, user, settings),
    "upload": lambda servers, user, settings: bench_bulk("upload", servers, user, settings),
    "echo": bench_echo,
    "concurrency": bench_concurrency,
    "rate": bench_rate,
    "soak": bench_soak,
    "sessions1000": lambda servers, user, settings: bench_concurrency(
        servers, user, settings, sessions=settings.many_sessions),
    "rekey": bench_rekey,
}
#: Algorithm sets forced on the client (so both daemons run the same ones;
#: the benchmarks above run with the client's defaults, where sshd 9.2 and
#: this daemon may agree on different ones).  Each gets login, download and
#: upload rows, named "login-SET" and so on.
FORCED = {
    "sntrup-chacha": ("KexAlgorithms=sntrup761x25519-sha512@openssh.com",
                      "Ciphers=chacha20-poly1305@openssh.com"),
    "curve-gcm": ("KexAlgorithms=curve25519-sha256", "Ciphers=aes128-gcm@openssh.com"),
}


def forced_benchmark(which: str, options: tuple[str, ...]):
    """login, download or upload with ``options`` on the client; the result
    names what each daemon negotiated with them (``algorithms``)."""
    def run(servers: dict[str, Server], user: TestUser, settings: Settings) -> dict:
        if which == "login":
            result = bench_login(servers, user, settings, options)
        else:
            result = bench_bulk(which, servers, user, settings, options)
        result["options"] = list(options)
        result["algorithms"] = {kind: negotiated(servers[kind], user, options)
                                for kind in DAEMONS}
        return result
    return run


FORCED_BENCHMARKS = {f"{which}-{label}": forced_benchmark(which, options)
                     for label, options in FORCED.items()
                     for which in ("login", "download", "upload")}
BENCHMARKS.update(FORCED_BENCHMARKS)
#: The client-default rows, which get the environment's ``negotiated`` as
#: their ``algorithms``.
DEFAULT_ALGORITHM_ROWS = ("login", "download", "upload")

#: Run only when named with --only: long, and about robustness or scale more
#: than speed.
OPT_IN = ("soak", "sessions1000", "rekey")
#: The benchmarks that hold many sessions open at once.
CONCURRENCY = ("concurrency", "sessions1000")


# --- environment ---------------------------------------------------------------------

def daemon_python() -> str:
    """The interpreter that runs privsep-sshd: the command's first word, or
    the interpreter its #! line names."""
    first = shutil.which(privsep_command()[0]) or privsep_command()[0]
    with open(first, "rb") as f:
        head = f.readline()
    if head.startswith(b"#!"):
        return head[2:].split()[0].decode()
    return first


def negotiated(server: Server, user: TestUser, options: tuple[str, ...] = ()) -> dict:
    """What ``ssh -v host true`` (with ``options``) says the client and the
    daemon agreed on."""
    argv, env = ssh_argv(server, user, "true", flags=["-v"], options=list(options))
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"ssh -v true on {server.kind} failed: {done.stderr}")
    found = {}
    for key, pattern in (("server_version", r"remote software version (.+)"),
                         ("kex", r"kex: algorithm: (\S+)"),
                         ("host_key", r"kex: host key algorithm: (\S+)"),
                         ("cipher", r"kex: server->client cipher: (\S+)"),
                         ("mac", r"kex: server->client cipher: \S+ MAC: (\S+)")):
        match = re.search(pattern, done.stderr)
        found[key] = match.group(1).strip() if match else "?"
    return found


def environment(servers: dict[str, Server], user: TestUser) -> dict:
    cpu_model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    python = daemon_python()
    daemon_versions = subprocess.run(
        [python, "-c", "import paramiko, privsep; print(paramiko.__version__, privsep.__version__)"],
        capture_output=True, text=True).stdout.split()
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    client = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "load_average": os.getloadavg(),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "paramiko": daemon_versions[0] if daemon_versions else paramiko.__version__,
        "privsep_sshd": daemon_versions[1] if len(daemon_versions) > 1 else "?",
        "privsep_command": " ".join(privsep_command()),
        "checkout": commit or "?",
        "ssh_client": client,
        "openssh_server": openssh_version(),
        "negotiated": {kind: negotiated(servers[kind], user) for kind in DAEMONS},
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def openssh_version() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "openssh-server"],
                          capture_output=True, text=True)
    return f"openssh-server {done.stdout.strip()}" if done.returncode == 0 else "?"


def print_environment(env: dict) -> None:
    print(f"date        {env['date']}  (checkout {env['checkout']})")
    print(f"machine     {env['cpus']} CPUs ({env['cpu_model']}), kernel {env['kernel']}, "
          f"load {' '.join(f'{x:.2f}' for x in env['load_average'])}")
    print(f"privsep     {env['privsep_command']}: privsep-sshd {env['privsep_sshd']}, "
          f"paramiko {env['paramiko']}")
    print(f"openssh     /usr/sbin/sshd, {env['openssh_server']}; client {env['ssh_client']}")
    for kind in DAEMONS:
        n = env["negotiated"][kind]
        print(f"{kind:<12}{n['server_version']}: kex {n['kex']}, host key {n['host_key']}, "
              f"cipher {n['cipher']}, MAC {n['mac']}")
    print()


# --- the table ---------------------------------------------------------------------------

def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"
    if unit == "s":
        return f"{value:.1f} s"
    if unit == "MB/s":
        return f"{value:.0f} MB/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}"


def table_rows(name: str, result: dict) -> list[tuple[str, ...]]:
    p, o, unit = result["privsep"], result["openssh"], result["unit"]
    ok = "yes" if result["ok"] else "NO"
    if name in CONCURRENCY:
        n = result["privsep"]["sessions"]
        by_role = [(f"  {role} PSS", fmt(p["pss_per_session_by_role_mb"][role], "MB"),
                    fmt(o["pss_per_session_by_role_mb"][role], "MB"),
                    f"{p['pss_per_session_by_role_mb'][role] / o['pss_per_session_by_role_mb'][role]:.2f}",
                    "", "")
                   for role in (roles.MONITOR, roles.SESSION)]
        return [
            (name, f"{p['ready']}/{n} ok", f"{o['ready']}/{n} ok", "",
             result["target"], ok),
            ("  wall time", fmt(p["wall_s"], "s"), fmt(o["wall_s"], "s"),
             f"{result['ratio']:.2f}", "", ""),
            ("  RSS/session", fmt(p["rss_per_session_mb"], "MB"),
             fmt(o["rss_per_session_mb"], "MB"), f"{result['rss_ratio']:.2f}", "", ""),
            ("  PSS/session", fmt(p["pss_per_session_mb"], "MB"),
             fmt(o["pss_per_session_mb"], "MB"), f"{result['pss_ratio']:.2f}", "<=2.5",
             "yes" if result["pss_ratio"] <= 2.5 else "NO"),
            *by_role,
        ]
    if name == "rekey":
        rows = [(f"rekey {result['bytes'] >> 20} MiB", f"{p['mismatches']} mismatches",
                 f"{o['mismatches']} mismatches", "", result["target"], ok)]
        for leg in REKEY_LEGS:
            rows.append((f"  {leg}", f"{fmt(p['legs'][leg]['mb_s'], 'MB/s')}, "
                         f"{p['legs'][leg]['key_exchanges']} kex",
                         f"{fmt(o['legs'][leg]['mb_s'], 'MB/s')}, "
                         f"{o['legs'][leg]['key_exchanges']} kex",
                         f"{p['legs'][leg]['mb_s'] / o['legs'][leg]['mb_s']:.2f}", "", ""))
        return rows
    if name == "rate":
        return [("rate", f"{p['per_second']:.1f}/s", f"{o['per_second']:.1f}/s",
                 f"{result['ratio']:.2f}", result["target"], ok),
                ("  failures", str(p["failures"]), str(o["failures"]), "", "", "")]
    if name == "soak":
        return [(f"soak {p['logins']}", "", "", "", result["target"], ok)] + [
            (f"  listener {what}",
             " -> ".join(str(p[when][key]) for when in ("start", "middle", "end")),
             " -> ".join(str(o[when][key]) for when in ("start", "middle", "end")), "", "", "")
            for what, key in (("fds", "fds"), ("RSS KiB", "rss_kib"))]
    rows = [(name, fmt(p["median"], unit), fmt(o["median"], unit), f"{result['ratio']:.2f}",
             result["target"], ok)]
    if unit == "ms":
        for tail in ("p90", "p99"):
            rows.append((f"  {tail}", fmt(p[tail], unit), fmt(o[tail], unit),
                         ratio_text(p[tail], o[tail]), "", ""))
    if name == "login":
        for side in ("server", "client"):
            key = f"{side}_cpu_ms_per_login"
            rows.append((f"  {side} CPU", fmt(p[key], "ms"), fmt(o[key], "ms"),
                         ratio_text(p[key], o[key]), "", ""))
    if "session_cpu_ms_per_mb" in p:
        key = "session_cpu_ms_per_mb"
        rows.append(("  session CPU/MB", f"{p[key]:.2f} ms", f"{o[key]:.2f} ms",
                     ratio_text(p[key], o[key]), "", ""))
    return rows


def ratio_text(privsep: float, openssh: float) -> str:
    """privsep/openssh for a detail row; "-" when openssh's figure is 0 (a
    CPU clock of 10 ms steps reads 0 over a quick run's few MB)."""
    return f"{privsep / openssh:.2f}" if openssh else "-"


def algorithms_text(algorithms: dict[str, dict]) -> str:
    """One line: what each daemon negotiated ("the same" when alike)."""
    def one(n: dict) -> str:
        return f"kex {n['kex']}, cipher {n['cipher']}, MAC {n['mac']}"
    mine, theirs = one(algorithms["privsep"]), one(algorithms["openssh"])
    return f"    got: privsep {mine}; openssh {'the same' if theirs == mine else theirs}"


def print_table(results: dict[str, dict]) -> None:
    """The table; a row with algorithms is followed by a line (outside the
    columns) naming what each daemon negotiated for it."""
    header = ("benchmark", "privsep", "openssh", "ratio", "target", "ok")
    rows: list[tuple[str, ...]] = [header]
    for name, result in results.items():
        rows += table_rows(name, result)
        if "algorithms" in result:
            rows.append((algorithms_text(result["algorithms"]),))
    widths = [max(len(row[i]) for row in rows if len(row) > 1) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print("\nprivsep, openssh: medians (p90, p99 rows: percentiles; CPU rows: means per login;"
          "\n  session CPU/MB: the session process's CPU per MB moved, median)."
          "\nratio: privsep/openssh."
          "\nok: the ratio meets the target; reported, never a failure.")


# --- main -----------------------------------------------------------------------------------

def size_arg(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip(), re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256M)")
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]


def only_arg(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {unknown}; "
                                         f"choose from {', '.join(BENCHMARKS)}")
    return names


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="privsep-sshd against OpenSSH's sshd, measured in the same run.")
    parser.add_argument("--quick", action="store_true",
                        help="few rounds and small sizes (a smoke run, not a measurement)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--only", metavar="NAME,...", type=only_arg,
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--login-rounds", type=int, metavar="N")
    parser.add_argument("--size", type=size_arg, metavar="BYTES",
                        help="bytes per download/upload (K, M, G suffixes)")
    parser.add_argument("--bulk-rounds", type=int, metavar="N")
    parser.add_argument("--keystrokes", type=int, metavar="N")
    parser.add_argument("--sessions", type=int, metavar="K", help="concurrent sessions")
    parser.add_argument("--concurrency-rounds", type=int, metavar="N")
    parser.add_argument("--rate-clients", type=int, metavar="N")
    parser.add_argument("--rate-seconds", type=int, metavar="S")
    parser.add_argument("--soak-logins", type=int, metavar="N",
                        help="logins of the soak (run with --only soak)")
    parser.add_argument("--many-sessions", type=int, metavar="K",
                        help="sessions of sessions1000 (run with --only sessions1000)")
    parser.add_argument("--rekey-size", type=size_arg, metavar="BYTES",
                        help="bytes each way of the rekey soak (run with --only rekey)")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    for field in ("login_rounds", "size", "bulk_rounds", "keystrokes", "sessions",
                  "concurrency_rounds", "rate_clients", "rate_seconds", "soak_logins",
                  "many_sessions", "rekey_size"):
        value = getattr(args, field)
        if value is not None:
            if value < 1:
                parser.error(f"--{field.replace('_', '-')} must be at least 1")
            setattr(settings, field, value)
    return args, settings


def raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(argv)
    if os.geteuid() != 0:
        print("tests.bench: must run as root (it makes a user and starts sshd)", file=sys.stderr)
        return 2
    if not Path("/usr/sbin/sshd").exists():
        print("tests.bench: needs Debian's openssh-server (install.sh --test)", file=sys.stderr)
        return 2
    # The finally blocks run on SIGTERM and SIGHUP too, not only on Ctrl-C.
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    # Hundreds of clients, three pipes each; the daemons inherit the limit too.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, min(hard, 65536))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    most = max(settings.sessions, settings.many_sessions if "sessions1000" in (args.only or ())
               else 0)
    if wanted < most * 4 + 64:
        print(f"tests.bench: warning: open-file limit {wanted} is low for "
              f"{most} sessions", file=sys.stderr)

    names = [name for name in BENCHMARKS
             if (name in args.only if args.only else name not in OPT_IN)]
    try:
        with both_daemons() as (servers, user):
            env = environment(servers, user)  # also one warm-up login on each
            print_environment(env)
            sys.stdout.flush()
            results: dict[str, dict] = {}
            for name in names:
                progress(f"{name}...")
                started = time.monotonic()
                results[name] = BENCHMARKS[name](servers, user, settings)
                if name in DEFAULT_ALGORITHM_ROWS:
                    results[name]["algorithms"] = env["negotiated"]
                judge(name, results[name], settings)
                progress(f"{name} done in {time.monotonic() - started:.0f} s")
            print_table(results)
            if args.json:
                document = {"environment": env, "settings": vars(settings),
                            "config": BENCH_CONFIG, "benchmarks": results}
                Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
            return 0
    except KeyboardInterrupt:
        print("\ntests.bench: interrupted; cleaning up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
