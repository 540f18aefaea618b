"""The root listener: binds, accepts, forks one monitor per connection.

It never parses a byte of SSH.  It counts connections that have not yet
authenticated (each monitor holds the write end of a pipe and closes it once
the user is in) for MaxStartups' random early drop, reaps its children, and
keeps its title showing the count.

Under systemd it tells the service manager how it is doing (privsep/sdnotify):
READY=1 once it listens, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1
on SIGTERM.  SIGHUP re-executes the daemon with the same command line, as
sshd does, once a ``-t`` run of that command line has accepted the
configuration; with a bad configuration it logs why and keeps serving.
Sessions are separate processes and are untouched by either signal.

It is the child subreaper of everything it forked: a process whose parent
died is reparented to it, not to init, and reaped by it.  When a monitor
dies other than by its own exit (kill -9, a crash), nobody else will clean
up after its connection, so the listener does (privsep/monitor/leftovers.py):
its processes are killed, its ptys given back to root and its utmp entries
closed.  The listener only logs what failed there; it keeps serving.
"""

from __future__ import annotations

import errno
import gc
import ipaddress
import logging
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import prctl

from privsep.child import ciphers, transport_setup
from privsep.monitor import accounts, auth_pam, hostkeys, leftovers
from privsep.monitor import main as monitor_main
from privsep.common import proctitle, roles
from privsep.listener import exec_session, sdnotify, srclimit
from privsep.monitor import exits
from privsep.netchild import sandbox
from privsep.signer import signer
from privsep.config.servconf import ServerConfig, ServerOptions
from privsep.config.values import split_listen_address
from privsep.common.trace import trace
from privsep.wire.hostkey_blobs import HostKey

log = logging.getLogger("privsep.listener")

#: set in the environment of a SIGHUP re-exec: the new image must not detach
#: again (it keeps the pid the pid file and systemd know).
REEXEC_ENV = "PRIVSEP_SSHD_REEXEC"
#: the monitors' pids, carried over a SIGHUP re-exec (they stay its children)
MONITORS_ENV = "PRIVSEP_SSHD_MONITORS"

#: Exit statuses of a monitor that ended by itself, having cleaned up (the
#: last four only in generation 10, before authentication).
_MONITOR_EXITS = (0, 1, exits.EXIT_LOGIN_GRACE, exits.EXIT_CHILD_CRASH,
                  exits.EXIT_AUTH_ATTEMPTED, exits.EXIT_NOAUTH)


def _monotime() -> int:
    """sshd's monotime(): whole seconds of the monotonic clock."""
    return int(time.monotonic())


def bind_all(options: ServerOptions) -> list[socket.socket]:
    sockets = []
    wanted = {"inet": (socket.AF_INET,), "inet6": (socket.AF_INET6,)}.get(
        options.address_family, (socket.AF_INET, socket.AF_INET6))
    for entry in options.listen_address:
        addr, own = split_listen_address(entry)  # "host:port" has its own port
        for port in [own] if own else options.port:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            if family not in wanted:
                continue  # AddressFamily leaves it out, as sshd does
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((addr, port))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6:
                    sock.close()  # no IPv6 here: like sshd, serve what we can
                    continue
                raise
            sock.listen(128)
            sock.set_inheritable(False)
            log.info("Server listening on %s port %d.", addr, port)
            sockets.append(sock)
    if not sockets:
        raise OSError("Cannot bind any address.")
    return sockets


# repr=False: a monitor's first signal.signal() hands back the listener's
# old handler, the bound method self._stop, and the signal module turns it
# into a Handlers enum the only way it can, by failing, with a message that
# holds repr(handler), so repr(self).  A dataclass repr of the listener walks
# its options, configuration, keys and sockets: 1.4 MB of pages copied in
# every monitor before it did anything (docs/DESIGN.md, "Memory per session").
@dataclass(repr=False)
class Listener:
    options: ServerOptions
    host_keys: list[HostKey]
    sockets: list[socket.socket]
    argv_text: str
    config: ServerConfig | None = None
    #: read end of each unauthenticated monitor's startup pipe -> monitor pid
    startups: dict[int, int] = field(default_factory=dict)
    one_shot: bool = False
    stopping: bool = False
    #: the signal wake-up pipe: the listener's alone, never a monitor's
    wake_fds: tuple[int, ...] = ()
    #: what serve() waits on: the listening sockets, the wake-up pipe, the
    #: startup pipes
    poller: select.poll | None = None
    hup: bool = False
    #: every monitor forked (and not reaped yet), by this image or the one
    #: before a re-exec
    monitors: set[int] = field(default_factory=set)
    #: the listener's audit session id (that of every monitor until PAM
    #: gives its login one of its own)
    audit_session: int | None = None
    #: startup pipe -> the source network (PerSourceNetBlockSize) of its
    #: unauthenticated connection, for PerSourceMaxStartups
    sources: dict[int, str] = field(default_factory=dict)
    #: the host keys' public halves as paramiko keys, made once here rather
    #: than in every monitor
    host_publics: list = field(default_factory=list)
    #: monitor pid -> "connection from ADDR to ADDR", OpenSSH 10's name for
    #: a connection in its listener's lines (generation 10 only)
    connection_ids: dict[int, str] = field(default_factory=dict)
    #: PerSourcePenalties (generation 10 only; else None)
    penalties: srclimit.PenaltyTable | None = None
    #: monitor pid -> its client's address, while a penalty may follow
    #: (generation 10)
    peers: dict[int, str] = field(default_factory=dict)
    #: monitors whose startup pipe said their user is in: no penalty
    authenticated: set[int] = field(default_factory=set)
    #: sshd 10's rate limits on its "drop connection" lines, by reason
    drop_logs: dict[str, srclimit.LogRateLimit] = field(default_factory=lambda: {
        "PerSourcePenalties": srclimit.penalty_log_limit(),
        "Maxstartups": srclimit.maxstartups_log_limit()})

    def __post_init__(self) -> None:
        self.host_publics = hostkeys.public_keys(self.host_keys)
        if self.options.process_generation == 10:
            self.penalties = srclimit.PenaltyTable(
                self.options.per_source_penalties.resolve(),
                self.options.per_source_netblock_size,
                self.options.per_source_penalty_exempt_list)

    def title(self) -> None:
        start, _, full = self.options.max_startups
        proctitle.set(roles.listener_title(self.argv_text, len(self.startups), start, full))

    def should_drop(self) -> bool:
        """MaxStartups start:rate:full random early drop."""
        start, rate, full = self.options.max_startups
        n = len(self.startups)
        if n >= full:
            return True
        if n < start:
            return False
        chance = rate + (100 - rate) * (n - start) / max(1, full - start)
        return random.uniform(0, 100) < chance

    def source_network(self, addr: str) -> str:
        """The client's address masked to PerSourceNetBlockSize."""
        ip = ipaddress.ip_address(addr.split("%")[0])
        v4, v6 = self.options.per_source_netblock_size
        bits = v4 if ip.version == 4 else v6
        return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))

    def source_allows(self, addr: str) -> bool:
        """PerSourceMaxStartups: fewer unauthenticated connections from the
        client's network than the limit (sshd's srclimit_check_allow)."""
        limit = self.options.per_source_max_startups
        if limit is None:
            return True
        network = self.source_network(addr)
        return sum(1 for n in self.sources.values() if n == network) < limit

    def refusal(self, addr: str) -> tuple[str, str] | None:
        """Why a new connection from ``addr`` is dropped, or None:
        (reason, what the log line ends with).  Generation 10 looks at
        PerSourcePenalties first, as sshd 10's drop_connection."""
        if self.penalties is not None:
            why = self.penalties.refusal(addr, _monotime())
            if why is not None:
                return "PerSourcePenalties", why
        if self.should_drop() or not self.source_allows(addr):
            # sshd 10 spells it so in this line; 9.2 wrote "past MaxStartups"
            return ("Maxstartups", "Maxstartups" if self.penalties is not None
                    else "past MaxStartups")
        return None

    def drop(self, conn: socket.socket, addr: tuple, reason: str, why: str) -> None:
        """Log the drop in sshd's words, tell the client, close."""
        level, dropped = logging.INFO, 0
        if self.penalties is not None:  # sshd 10 rate-limits these lines
            limited, dropped = self.drop_logs[reason].check(_monotime())
            level = logging.DEBUG if limited else logging.INFO
        try:
            local = conn.getsockname()[:2]
        except OSError:
            local = ("UNKNOWN", 0)
        log.log(level, "drop connection #%d from [%s]:%d on [%s]:%d %s",
                len(self.startups), addr[0], addr[1], *local, why)
        if dropped:
            log.info("%s logging rate-limited: additional %d connections dropped",
                     reason, dropped)
        message = (b"Not allowed at this time\r\n" if self.penalties is not None
                   else b"Exceeded MaxStartups\r\n")
        try:
            conn.send(message)  # best effort, as sshd
        except OSError:
            pass
        conn.close()

    def accept(self, sock: socket.socket) -> None:
        try:
            conn, addr = sock.accept()
        except OSError:
            return
        refused = self.refusal(addr[0])
        if refused is not None:
            self.drop(conn, addr, *refused)
            return
        connection_id = (f"connection from {addr[0]} to {conn.getsockname()[0]}"
                         if self.options.process_generation == 10 else None)
        startup_r, startup_w = os.pipe()
        os.set_blocking(startup_r, False)  # read only when poll says so, or the monitor is gone
        if self.options.per_source_max_startups is not None:
            self.sources[startup_r] = self.source_network(addr[0])
        # Everything alive now goes to the collector's permanent generation:
        # the monitor's collections then never walk (and so never write to,
        # and copy) the pages it shares with us.  It costs no time: a list move.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            listener_fds = (startup_r, *self.startups, *self.wake_fds,
                            *(s.fileno() for s in self.sockets))
            # Generation 10 execs OpenSSH 10's sshd-session instead.
            run = exec_session.run if self.options.process_generation == 10 else monitor_main.run
            try:
                run(conn, self.options, self.host_keys, startup_w, self.config,
                    close_fds=listener_fds, host_publics=self.host_publics)
            finally:
                os._exit(255)  # never back into the accept loop
        trace(log, "listener", "accepted %s port %d, forked monitor %d", addr[0], addr[1], pid)
        os.close(startup_w)
        conn.close()
        self.startups[startup_r] = pid
        self.poller.register(startup_r, select.POLLIN)
        self.monitors.add(pid)
        if connection_id is not None:
            self.connection_ids[pid] = connection_id
        if self.penalties is not None:
            self.peers[pid] = addr[0]
        self.title()

    def startup_over(self, fd: int) -> None:
        """The monitor at the other end of startup pipe ``fd`` authenticated
        (it wrote AUTH_DONE first) or ended: it no longer counts against
        MaxStartups.  Nothing to read and no end yet: a stale wake-up."""
        try:
            said = os.read(fd, 1)
        except BlockingIOError:
            return
        except OSError:
            said = b""
        if said == exits.AUTH_DONE:
            self.authenticated.add(self.startups[fd])
        self.poller.unregister(fd)
        os.close(fd)
        del self.startups[fd]
        self.sources.pop(fd, None)
        self.title()

    def reap(self) -> None:
        """Reap every child that has ended: monitors, and the orphans it
        adopted as subreaper.  A monitor is looked at before it is reaped:
        until then its pid is nobody else's, so the utmp entries that name
        it are its own."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            if pid in self.monitors:
                # its startup pipe first: did it authenticate before it ended?
                for fd in [fd for fd, owner in self.startups.items() if owner == pid]:
                    self.startup_over(fd)
                self.after_monitor(pid, info)
                self.penalise(pid, info)
                self.monitors.discard(pid)
                self.connection_ids.pop(pid, None)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def after_monitor(self, pid: int, info: os.waitid_result) -> None:
        self.log_grace_timeout(pid, info)
        crashed = not (info.si_code == os.CLD_EXITED and info.si_status in _MONITOR_EXITS)
        try:
            report = leftovers.after_monitor(pid, crashed, self.audit_session)
        except Exception:
            log.exception("error: cleaning up after monitor %d", pid)
            return
        how = (f"exit status {info.si_status}" if info.si_code == os.CLD_EXITED
               else f"signal {info.si_status}")
        if crashed:
            log.error("monitor %d ended by %s: %s", pid, how, report.text())
        elif report:
            log.info("monitor %d left %s", pid, report.text())

    def log_grace_timeout(self, pid: int, info: os.waitid_result) -> None:
        """OpenSSH 10's listener lines for a connection whose LoginGraceTime
        ran out, or whose pre-auth child crashed (sshd.c, child_reap), its
        sshd-session having exited EXIT_LOGIN_GRACE or EXIT_CHILD_CRASH.
        In generation 9 no monitor exits so, and no connection has an id:
        Debian 12's sshd writes nothing."""
        connection = self.connection_ids.get(pid)
        if connection is None or info.si_code != os.CLD_EXITED:
            return
        if info.si_status == exits.EXIT_LOGIN_GRACE:
            log.info("Timeout before authentication for %s, pid = %d", connection, pid)
        elif info.si_status == exits.EXIT_CHILD_CRASH:
            log.info("Session process %d unpriv child crash for %s", pid, connection)

    def penalise(self, pid: int, info: os.waitid_result) -> None:
        """PerSourcePenalties (generation 10): an unauthenticated connection
        that ended badly earns its source a penalty (sshd.c, child_reap)."""
        address = self.peers.pop(pid, None)
        if pid in self.authenticated:
            self.authenticated.discard(pid)
            return
        if self.penalties is None or address is None:
            return
        kind = srclimit.kind_of_exit(info.si_code == os.CLD_EXITED, info.si_status)
        for level, text in self.penalties.penalise(address, kind, _monotime()):
            log.log(level, "%s", text)

    def serve(self) -> None:
        wake_r, wake_w = os.pipe()
        self.wake_fds = (wake_r, wake_w)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGHUP, self._hup)
        self.adopt()
        self.title()
        sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}")
        handled = 0
        # poll, not select: with a thousand connections starting at once the
        # startup pipes' numbers pass select's limit of 1024.
        self.poller = select.poll()
        listening = {sock.fileno(): sock for sock in self.sockets}
        for fd in (*listening, wake_r, *self.startups):
            self.poller.register(fd, select.POLLIN)
        while not self.stopping:
            try:
                ready = self.poller.poll()
            except InterruptedError:
                continue
            for fd, _ in ready:
                if fd == wake_r:
                    os.read(wake_r, 512)
                    self.reap()
                elif fd in self.startups:
                    self.startup_over(fd)
                elif fd in listening:
                    self.accept(listening[fd])
                    handled += 1
            if self.one_shot and handled and not self.startups:
                break
            if self.hup and not self.stopping:
                self.hup = False
                self.restart()
        if self.stopping:
            sdnotify.notify("STOPPING=1")
        for sock in self.sockets:
            sock.close()

    def adopt(self) -> None:
        """Become the subreaper of what we fork; take over the monitors of
        the image before a re-exec."""
        try:
            prctl.set_child_subreaper(True)
        except Exception as exc:  # nothing is lost but the cleanup after crashes
            log.error("error: cannot become a child subreaper: %s", exc)
        self.audit_session = leftovers.audit_session(os.getpid())
        for text in os.environ.pop(MONITORS_ENV, "").split(","):
            if text.isdigit():
                self.monitors.add(int(text))

    def restart(self) -> None:
        """SIGHUP: check the configuration with the same command line, then
        re-execute it in this process (same pid; monitors stay its children)."""
        log.info("Received SIGHUP; restarting.")
        sdnotify.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        # sys.executable, not orig_argv[0]: a venv's python must find itself.
        argv = [sys.executable, *sys.orig_argv[1:]]
        check = subprocess.run([*argv, "-t"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
        if check.returncode != 0:
            error = (check.stderr or check.stdout).strip() or f"exit status {check.returncode}"
            log.error("Not restarting: the configuration check failed: %s", error)
            sdnotify.notify("READY=1\nSTATUS=reload failed: bad configuration; still serving")
            return
        for sock in self.sockets:
            sock.close()
        os.environ[REEXEC_ENV] = "1"
        os.environ[MONITORS_ENV] = ",".join(map(str, sorted(self.monitors)))
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execv(argv[0], argv)
        except OSError as exc:
            log.critical("fatal: re-exec of %s failed: %s", argv[0], exc)
            os._exit(255)

    def _stop(self, signum, frame) -> None:
        log.info("Received signal %d; terminating.", signum)
        self.stopping = True

    def _hup(self, signum, frame) -> None:
        self.hup = True


def run(options: ServerOptions, host_keys: list[HostKey], argv_text: str,
        one_shot: bool = False, config: ServerConfig | None = None) -> None:
    sockets = bind_all(options)
    ciphers.warm_up()  # OpenSSL's look-ups once here, shared by every child
    transport_setup.name_every_message_type()  # once here, not in each child
    sandbox.prepare()  # the seccomp filter compiled once, loaded by each net-child
    if options.use_pam:
        auth_pam.preload_modules(options.pam_service)  # loaded once, not per login
    accounts.warm_up()  # the NSS group modules, loaded once here
    signer.warm_up()  # OpenSSL's and libsodium's Ed25519, looked up once here
    Listener(options, host_keys, sockets, argv_text, config=config, one_shot=one_shot).serve()
    sys.stdout.flush()
