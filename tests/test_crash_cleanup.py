"""kill -9 of any process of a connection, at any phase, leaves nothing behind
(issue 12.1), with the real daemon and the stock client.

Each case starts a daemon, a bystander (another user, logged in on a pty),
brings a connection of a second user to a phase, and kills one of its
processes with SIGKILL:

| phase                | state when the kill comes                                   | victims |
|----------------------|-------------------------------------------------------------|---------|
| before-kex           | TCP connected, the net-child up, not a byte sent            | listener, monitor, net-child |
| password-prompt      | ssh at its password prompt (SSH_ASKPASS waits)               | listener, monitor, net-child |
| mid-pam-conversation | keyboard-interactive: PAM asked "Password:", no answer yet  | listener, monitor, net-child |
| mid-handoff          | the net-child handed the transport over and exited; the monitor is inside pam_open_session (pam_env reads ~/.pam_environment, a FIFO: held open until the test lets it go); for the session process: killed the moment it exists | listener, monitor, session |
| authenticated        | paramiko authenticated, no channel open                     | listener, monitor, session |
| pty-shell            | a login shell on a pty, a job in the background             | listener, monitor, session, shell |
| mid-transfer         | `cat /dev/zero` streaming to the client (pipes, no pty)      | listener, monitor, session, shell |
| at-logout            | `exit` typed: the login shell runs ~/.bash_logout           | listener, monitor, session, shell |

(The net-child exists only before authentication; after it the session
process carries the connection, so the later phases have no net-child.)

After the kill of a process other than the listener, each case checks:

- none of the connection's daemon processes (monitor, net-child, session
  process) is left, not even as a zombie;
- no process of the user is left at all, also not the one started with
  ``setsid -f`` that no hangup reaches;
- utmp (``utmpdump /run/utmp``) has no USER_PROCESS entry of the user or of
  the monitor, and wtmp has the DEAD_PROCESS record of every login record
  the monitor wrote (the pty phases must have written one);
- the pts is gone or root's again, 0666 (never still the user's);
- the listener still serves a new login; the bystander's session still
  answers, with its utmp entry and its pts as they were;
- PAM sessions: where systemd-logind runs, it has no session of the user
  left; on a machine without it (PID 1 not systemd, as in this container)
  an open PAM session leaves nothing anyone can read, and the check says so
  by skipping ``test_logind_sessions_closed``.

When the listener is the one killed, every session carries on as with sshd:
the connection completes its login (or its transfer, or its logout) and
runs a command, the bystander answers, and their monitors are alive.

A killed shell ends its own channel only (the user's program died, as when
the user kills it): the connection then ends as at a logout.  Programs the
user detached on purpose are left alone at a logout (sshd leaves them too),
so the shell cases run no detached program.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field

import paramiko
import pytest

from tests.daemon import Server, processes, ssh, ssh_argv, wait_until
from tests.userutil import TestUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

UTMP = "/run/utmp"
WTMP = "/var/log/wtmp"
USER_PROCESS, DEAD_PROCESS = "7", "8"
#: no bare sleeps: every wait polls a state, and none is longer than this
WAIT = 15

PHASES = {
    "before-kex": ("listener", "monitor", "net-child"),
    "password-prompt": ("listener", "monitor", "net-child"),
    "mid-pam-conversation": ("listener", "monitor", "net-child"),
    "mid-handoff": ("listener", "monitor", "session"),
    "authenticated": ("listener", "monitor", "session"),
    "pty-shell": ("listener", "monitor", "session", "shell"),
    "mid-transfer": ("listener", "monitor", "session", "shell"),
    "at-logout": ("listener", "monitor", "session", "shell"),
}
CASES = [(phase, victim) for phase, victims in PHASES.items() for victim in victims]

#: a program no hangup reaches: its own session, no terminal, no pipes
DETACHED = "setsid -f sleep 1001 </dev/null >/dev/null 2>&1"


# --- processes ------------------------------------------------------------------

def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return int(raw[raw.rfind(b")") + 2:].split()[19])


@dataclass(frozen=True)
class Pid:
    """A process, by pid and start time (a reused pid is another process)."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> "Pid":
        start = _start_time(pid)
        assert start is not None, f"process {pid} is gone already"
        return cls(pid, start)

    def alive(self) -> bool:
        """Still there, a zombie too."""
        return _start_time(self.pid) == self.start


def _children(pid: int) -> list[int]:
    """The children of ``pid``, forked by any of its threads."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(p) for p in handle.read().split()]
        except OSError:
            pass
    return found


def _uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _user_processes(uid: int) -> list[str]:
    return [f"{p.pid} {p.stat} {p.args}" for p in processes().values() if p.uid == uid]


# --- login records ---------------------------------------------------------------

def _utmpdump(path: str) -> list[list[str]]:
    out = subprocess.run(["utmpdump", path], capture_output=True, text=True, check=True).stdout
    return [[f.strip() for f in re.findall(r"\[(.*?)\]", line)] for line in out.splitlines()]


def _pid_of(record: list[str]) -> int:
    return int(record[1]) if record[1].isdigit() else -1


# --- clients ----------------------------------------------------------------------

class Client:
    """The stock ssh client, left running; its output read by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.text = bytearray()  # the first MB only (a transfer is counted, not kept)
        self.received = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 1 << 20)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)
            if len(self.text) < 1 << 20:
                self.text += data

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, marker: str, timeout: float = WAIT) -> None:
        try:
            wait_until(lambda: marker.encode() in self.text, timeout)
        except AssertionError:
            raise AssertionError(f"{marker!r} not in the output: {bytes(self.text)[-2000:]!r}; "
                                 f"stderr {self.stderr()!r}") from None

    def stderr(self) -> bytes:
        os.set_blocking(self.proc.stderr.fileno(), False)
        try:
            return os.read(self.proc.stderr.fileno(), 65536)
        except OSError:
            return b""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass


def _client(server: Server, user: TestUser, *command: str, **kwargs) -> Client:
    argv, env = ssh_argv(server, user, *command, **kwargs)
    return Client(argv, env)


class Askpass:
    """An SSH_ASKPASS that says it was asked, then answers only when let go:
    the client waits at its prompt for as long as the test wants."""

    def __init__(self, workdir, name: str, answer: str) -> None:
        self.asked = workdir / f"{name}.asked"
        self.go = workdir / f"{name}.go"
        self.path = workdir / f"{name}.askpass"
        self.path.write_text(
            "#!/bin/sh\n"
            f": > '{self.asked}'\n"
            f"while [ ! -e '{self.go}' ]; do sleep 0.02; done\n"
            f"printf '%s\\n' '{answer}'\n")
        self.path.chmod(0o700)

    def release(self) -> None:
        self.go.touch()


def _paramiko(server: Server, user: TestUser, sock: socket.socket | None = None) -> paramiko.Transport:
    sock = sock or socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=WAIT)
    transport.auth_publickey(user.name, paramiko.Ed25519Key.from_private_key_file(str(user.key_path)))
    return transport


def _run_over(transport: paramiko.Transport, command: str) -> bytes:
    chan = transport.open_session(timeout=WAIT)
    chan.settimeout(WAIT)
    chan.exec_command(command)
    out = b""
    while True:
        data = chan.recv(4096)
        if not data:
            break
        out += data
    chan.close()
    return out


# --- the daemon's processes for one connection --------------------------------------

def _monitors(server: Server) -> set[int]:
    return {pid for pid in _children(server.pid) if _uid(pid) == 0}


def _new_monitor(server: Server, known: set[int]) -> int:
    return wait_until(lambda: sorted(_monitors(server) - known))[0]


def _net_child(monitor: int) -> int:
    return wait_until(lambda: [p for p in _children(monitor) if re.search(r"\[(net|session-auth)\]", _cmdline(p))])[0]


def _session_process(monitor: int, user: TestUser) -> int:
    return wait_until(lambda: [p for p in _children(monitor) if _uid(p) == user.uid])[0]


def _shell(session: int) -> int:
    return wait_until(lambda: [p for p in _children(session) if os.getsid(p) == p])[0]


class Bystander:
    """Another user, logged in on a pty before the kill; must not notice it."""

    def __init__(self, server: Server, user: TestUser) -> None:
        self.server, self.user = server, user
        known = _monitors(server)
        self.client = _client(server, user, tty=True)
        self.monitor = Pid.of(_new_monitor(server, known))
        self.ask("READY")
        self.line = wait_until(lambda: [r[4] for r in _utmpdump(UTMP) if r[0] == USER_PROCESS
                                        and _pid_of(r) == self.monitor.pid])[0]

    def ask(self, word: str) -> None:
        # The shell computes the marker: the echoed command line does not hold it.
        self.client.send(f"echo {word}-$((20+22))")
        self.client.expect(f"{word}-42")

    def check(self) -> None:
        assert self.monitor.alive()
        self.ask("STILL-HERE")
        assert [r for r in _utmpdump(UTMP) if r[0] == USER_PROCESS and r[4] == self.line
                and _pid_of(r) == self.monitor.pid and r[3] == self.user.name]
        st = os.stat("/dev/" + self.line)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (self.user.uid, 0o620)


# --- the phases -------------------------------------------------------------------

@dataclass
class Scene:
    """One connection of ``user`` brought to a phase."""

    server: Server
    user: TestUser
    phase: str
    detached: bool
    monitor: Pid | None = None
    procs: dict[str, Pid] = field(default_factory=dict)
    client: Client | None = None
    transport: paramiko.Transport | None = None
    sock: socket.socket | None = None
    askpass: Askpass | None = None
    fifo: str | None = None
    expect_login_record: bool = False

    # -- set-up --

    def bring_up(self) -> None:
        known = _monitors(self.server)
        getattr(self, "_" + self.phase.replace("-", "_"))(known)
        assert self.monitor is not None

    def _found_monitor(self, known: set[int]) -> int:
        pid = _new_monitor(self.server, known)
        self.monitor = Pid.of(pid)
        self.procs["monitor"] = self.monitor
        return pid

    def _before_kex(self, known: set[int]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=WAIT)
        monitor = self._found_monitor(known)
        self.procs["net-child"] = Pid.of(_net_child(monitor))

    def _prompted(self, known: set[int], name: str, options: list[str]) -> None:
        self.askpass = Askpass(self.server.workdir, name, self.user.password)
        argv, env = ssh_argv(self.server, self.user, "echo", "carried-on-$((6*7))",
                             password=self.user.password, options=options)
        env["SSH_ASKPASS"] = str(self.askpass.path)
        self.client = Client(argv, env)
        monitor = self._found_monitor(known)
        wait_until(self.askpass.asked.exists)
        self.procs["net-child"] = Pid.of(_net_child(monitor))

    def _password_prompt(self, known: set[int]) -> None:
        self._prompted(known, "password", ["PreferredAuthentications=password"])

    def _mid_pam_conversation(self, known: set[int]) -> None:
        self._prompted(known, "kbdint", ["PreferredAuthentications=keyboard-interactive"])
        # The monitor's PAM conversation is open, waiting for the answer.
        self.server.wait_for_log(f"trace: pid {self.monitor.pid} uid 0 monitor: PAM pam_start")

    def _mid_handoff(self, known: set[int]) -> None:
        # pam_env (session, user_readenv=1) reads ~/.pam_environment as the
        # monitor opens the PAM session: a FIFO holds it there.
        self.fifo = str(self.user.home / ".pam_environment")
        os.mkfifo(self.fifo, 0o600)
        os.chown(self.fifo, self.user.uid, self.user.gid)
        self.client = _client(self.server, self.user, "echo", "carried-on-$((6*7))")
        monitor = self._found_monitor(known)
        self.server.wait_for_log(f"trace: pid {monitor} uid 0 monitor: PAM pam_setcred")
        self.server.wait_for_log(f"trace: pid {monitor} uid 0 monitor: net-child")
        assert "hand-off received" in self.server.log_text()
        # Inside pam_open_session: blocked opening the FIFO.
        wait_until(lambda: self._wchan(monitor) in ("wait_for_partner", "fifo_open"))
        assert not _children(monitor), "the session process came before PAM was done"

    @staticmethod
    def _wchan(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/wchan") as handle:
                return handle.read().strip()
        except OSError:
            return ""

    def let_pam_go(self) -> None:
        """Open the FIFO's other end and close it: pam_env reads nothing, and
        the PAM session opens."""
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    def _authenticated(self, known: set[int]) -> None:
        self.transport = _paramiko(self.server, self.user)
        assert self.transport.is_authenticated()
        monitor = self._found_monitor(known)
        self.procs["session"] = Pid.of(_session_process(monitor, self.user))

    def _pty_shell(self, known: set[int]) -> None:
        self.client = _client(self.server, self.user, tty=True)
        monitor = self._found_monitor(known)
        if self.detached:
            self.client.send(f"sleep 1000 & {DETACHED}; echo READY-$((1+1))")
        else:
            self.client.send("echo READY-$((1+1)); sleep 1000")
        self.client.expect("READY-2")
        self._session_and_shell(monitor)
        wait_until(lambda: sum("sleep 100" in p for p in _user_processes(self.user.uid))
                   == (2 if self.detached else 1))
        self.expect_login_record = True

    def _mid_transfer(self, known: set[int]) -> None:
        command = f"{DETACHED}; exec cat /dev/zero" if self.detached else "exec cat /dev/zero"
        self.client = _client(self.server, self.user, command, tty=False)
        monitor = self._found_monitor(known)
        wait_until(lambda: self.client.received > 4 << 20)
        self._session_and_shell(monitor)

    def _at_logout(self, known: set[int]) -> None:
        logout = self.user.home / ".bash_logout"
        logout.write_text("echo LOGGING-OUT-$((3+4)); sleep 1000\n")
        os.chown(logout, self.user.uid, self.user.gid)
        self.client = _client(self.server, self.user, tty=True)
        monitor = self._found_monitor(known)
        if self.detached:
            self.client.send(f"{DETACHED}; echo READY-$((1+1))")
            self.client.expect("READY-2")
        self.client.send("exit")
        self.client.expect("LOGGING-OUT-7")
        self._session_and_shell(monitor)
        self.procs["logout-sleep"] = Pid.of(wait_until(
            lambda: [p for p in _children(self.procs["shell"].pid) if "sleep" in _cmdline(p)])[0])
        self.expect_login_record = True

    def _session_and_shell(self, monitor: int) -> None:
        session = _session_process(monitor, self.user)
        self.procs["session"] = Pid.of(session)
        self.procs["shell"] = Pid.of(_shell(session))

    # -- the kill --

    def victim(self, name: str) -> int:
        if name == "listener":
            return self.server.pid
        if self.phase == "mid-handoff" and name == "session":
            # The moment the session process exists: before it has resumed
            # the transport.
            monitor = self.monitor.pid
            self.let_pam_go()
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                found = [p for p in _children(monitor) if _uid(p) == self.user.uid]
                if found:
                    self.procs["session"] = Pid.of(found[0])
                    return found[0]
            raise AssertionError("no session process")
        return self.procs[name].pid

    # -- after the listener's death: the connection carries on --

    def carry_on(self) -> None:
        if self.phase == "before-kex":
            self.transport = _paramiko(self.server, self.user, self.sock)
            assert b"carried-on-42" in _run_over(self.transport, "echo carried-on-$((6*7))")
        elif self.phase in ("password-prompt", "mid-pam-conversation"):
            self.askpass.release()
            self._finishes("carried-on-42")
        elif self.phase == "mid-handoff":
            self.let_pam_go()
            self._finishes("carried-on-42")
        elif self.phase == "authenticated":
            assert b"carried-on-42" in _run_over(self.transport, "echo carried-on-$((6*7))")
        elif self.phase == "pty-shell":
            self.client.send("echo STILL-$((2+3))")
            self.client.expect("STILL-5")
            self.client.send("kill %1; exit")
            self._finishes()
        elif self.phase == "mid-transfer":
            before = self.client.received
            wait_until(lambda: self.client.received > before + (4 << 20))
        elif self.phase == "at-logout":
            os.kill(self.procs["logout-sleep"].pid, signal.SIGKILL)
            self._finishes()

    def _finishes(self, marker: str | None = None) -> None:
        if marker is not None:
            self.client.expect(marker)
        assert self.client.proc.wait(WAIT) == 0

    def logout_recorded(self) -> None:
        """The monitor, orphaned, still wrote the logout records."""
        if not self.expect_login_record:
            return
        wait_until(lambda: not [r for r in _utmpdump(UTMP) if r[0] == USER_PROCESS
                                and _pid_of(r) == self.monitor.pid])
        self._wtmp_closed(required=True)

    def _wtmp_closed(self, required: bool) -> list[str]:
        records = [r for r in _utmpdump(WTMP) if _pid_of(r) == self.monitor.pid]
        lines = []
        for i, record in enumerate(records):
            if record[0] == USER_PROCESS:
                lines.append(record[4])
                assert [r for r in records[i + 1:] if r[0] == DEAD_PROCESS and r[4] == record[4]], \
                    f"wtmp: no logout record for {record}"
        if required:
            assert lines, "no login record in wtmp"
        return lines

    def close(self) -> None:
        if self.askpass is not None:
            self.askpass.release()
        if self.fifo is not None:
            try:
                self.let_pam_go()
            except OSError:
                pass  # nobody reads it (any more)
        if self.client is not None:
            self.client.close()
        if self.transport is not None:
            self.transport.close()
        if self.sock is not None:
            self.sock.close()


# --- the checks --------------------------------------------------------------------

def _logind_running() -> bool:
    """systemd is PID 1 (sd_booted) and loginctl can talk to logind."""
    if not os.path.isdir("/run/systemd/system") or shutil.which("loginctl") is None:
        return False
    return subprocess.run(["loginctl", "list-sessions", "--no-legend"], capture_output=True,
                          timeout=WAIT).returncode == 0


def _logind_sessions(user: TestUser) -> list[str]:
    out = subprocess.run(["loginctl", "list-sessions", "--no-legend"], capture_output=True,
                         text=True, timeout=WAIT, check=True).stdout
    return [line for line in out.splitlines() if user.name in line.split()]


def _settled(predicate, timeout: float = WAIT) -> bool:
    try:
        wait_until(predicate, timeout)
        return True
    except AssertionError:
        return False


def _nothing_left(scene: Scene) -> None:
    """Every check, each problem reported (not only the first)."""
    user = scene.user
    problems = []
    daemon = [p for name, p in scene.procs.items() if name in ("monitor", "net-child", "session")]
    if not _settled(lambda: not [p for p in daemon if p.alive()]):
        problems.append(f"daemon processes left: {[p for p in daemon if p.alive()]}")
    # The records first: a freed pts number is soon another login's, whose
    # record then takes the stale entry's slot.
    stale = [r for r in _utmpdump(UTMP) if r[0] == USER_PROCESS
             and (r[3] == user.name or _pid_of(r) == scene.monitor.pid)]
    if stale:
        problems.append(f"utmp entries without a session: {stale}")
    try:
        lines = scene._wtmp_closed(required=scene.expect_login_record)
    except AssertionError as exc:
        problems.append(str(exc))
        lines = [r[4] for r in _utmpdump(WTMP) if _pid_of(r) == scene.monitor.pid]
    for line in set(lines):
        try:
            st = os.stat("/dev/" + line)
        except FileNotFoundError:
            continue  # gone, with its last holder
        if st.st_uid == user.uid:
            problems.append(f"/dev/{line} still {user.name}'s, mode {stat.S_IMODE(st.st_mode):o}")
    if not _settled(lambda: not _user_processes(user.uid)):
        problems.append(f"processes of the user left: {_user_processes(user.uid)}")
    if _logind_running() and _logind_sessions(user):
        problems.append(f"logind sessions left: {_logind_sessions(user)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("phase,victim", CASES, ids=[f"{p}-{v}" for p, v in CASES])
def test_kill(phase: str, victim: str, server_with, make_user) -> None:
    # LogLevel DEBUG: the scenes wait for lines of the phase trace
    server = server_with("KbdInteractiveAuthentication yes", "LogLevel DEBUG")
    bystander = Bystander(server, make_user("psb"))
    scene = Scene(server, make_user("pst"), phase, detached=victim != "shell")
    try:
        scene.bring_up()
        os.kill(scene.victim(victim), signal.SIGKILL)
        if victim == "listener":
            wait_until(lambda: server.process.poll() is not None)
            # Every live session carries on, as with sshd.
            bystander.check()
            scene.carry_on()
            scene.logout_recorded()
            bystander.check()
        else:
            _nothing_left(scene)
            assert server.process.poll() is None, "the listener died"
            result = ssh(server, bystander.user, "echo", "serving-$((6*7))", timeout=WAIT)
            assert b"serving-42" in result.stdout, result.stderr
            bystander.check()
    finally:
        scene.close()
        bystander.client.close()


def test_kill_monitor_of_a_stopped_session(server_with, make_user) -> None:
    """The monitor killed while its session process is stopped (SIGSTOP):
    the parent-death signal waits, the session process holds the pty's
    master, so the pts, its utmp entry and every process stay until the
    listener takes them away itself."""
    server = server_with()
    bystander = Bystander(server, make_user("psb"))
    scene = Scene(server, make_user("pst"), "pty-shell", detached=True)
    try:
        scene.bring_up()
        os.kill(scene.procs["session"].pid, signal.SIGSTOP)
        os.kill(scene.monitor.pid, signal.SIGKILL)
        _nothing_left(scene)
        assert server.process.poll() is None, "the listener died"
        bystander.check()
    finally:
        scene.close()
        bystander.client.close()


def test_logind_sessions_closed() -> None:
    """pam_systemd's session must be gone with the connection; there is
    something to read only where logind runs."""
    if not _logind_running():
        pytest.skip("systemd-logind is not running here (PID 1 is not systemd): "
                    "a PAM session left open leaves nothing to read, so it is not checked")
    # Where logind runs, test_kill checks after every kill that the user has
    # no logind session left.
