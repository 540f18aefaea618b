"""A compromised session process against the real monitor (issue 11, item 7).

After login the session process runs as the user, so every record it sends
the monitor is the attacker's.  Each test forks a real root ``Monitor`` in
its post-auth phase (a real throwaway user, a real PAM session opened on the
repository's PAM service, real ed25519 and ECDSA host keys read through the
signer) and serves one end of a monitor socketpair with the daemon's own
``serve_phase(monitor, channel, "session")``; the test plays the session
process on the other end.  The harness (``_session_monitor``) logs, besides
the monitor's own lines:

    harness: fds before [...]   the monitor's descriptors when it started serving
    harness: fds after [...]    ... when serve_phase returned (before cleanup)
    harness: ptys held [...]    the ptys it still held then
    harness: fds at exit [...]  ... after Monitor.cleanup()

Every hostile case ends REFUSED with "fatal: monitor: <reason>; dropping
<peer>" naming the reason, and then (``assert_refused_session``):

* no /dev/pts/N is left owned by the user, and no USER_PROCESS record of the
  monitor's pid is left in /run/utmp (read with ``utmpdump``);
* the monitor gained no descriptor but the masters of the ptys it held, and
  holds none once it cleaned up (descriptors sent where none belong were
  closed);
* the victim, another throwaway user whose live pty is held by another
  process (with its own utmp record), still owns it, group tty, mode 0620,
  and its utmp record is still USER_PROCESS.

The positive controls run the same harness through what a legitimate
session process does, and end CLOSED.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import re
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko
import pytest

from privsep.common.channel import MonitorChannel
from privsep.config.servconf import ServerOptions
from privsep.monitor import auth_pam, loginrec
from privsep.monitor.hostkeys import read_host_keys
from privsep.monitor.monitor import Ending, Monitor, serve_phase
from privsep.monitor.policy import Phase
from privsep.wire import hostkey_blobs
from privsep.wire import messages as wire
from privsep.wire.facts import MAX_CHILD_LOG
from privsep.wire.hostkey_blobs import HostKey
from tests.test_hostile_child import (
    CLOSED, EXIT_CODES, MALFORMED, PEER, TIMEOUT, U32, Outcome, _record, _wait,
    assert_dropped, assert_refused, fake_handoff, fork_monitor, log_to_file, signed_verify,
    userauth_blob,
)
from tests.userutil import TestUser, create_user, remove_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

ED25519 = "ssh-ed25519"
ECDSA = "ecdsa-sha2-nistp256"
UTMP = "/run/utmp"
USER_PROCESS, DEAD_PROCESS = 7, 8


def _tty_gid() -> int:
    return grp.getgrnam("tty").gr_gid


# --- host keys --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_key_paths(tmp_path_factory) -> list[str]:
    directory = tmp_path_factory.mktemp("session-hostkeys")
    paths = []
    for kind in ("ed25519", "ecdsa"):
        path = directory / f"ssh_host_{kind}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def host_keys(host_key_paths) -> dict[str, HostKey]:
    """Our host keys (public halves, as the monitor knows them), by algorithm."""
    keys, problems = read_host_keys(host_key_paths)
    assert not problems, problems
    return {k.key_type: k for k in keys}


@pytest.fixture(scope="module")
def foreign_key(tmp_path_factory) -> paramiko.Ed25519Key:
    """An ed25519 key that is not one of our host keys."""
    path = tmp_path_factory.mktemp("foreign") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


# --- what the system says: ptys, utmp ----------------------------------------------------


def ptys_owned_by(uid: int) -> list[str]:
    found = []
    for name in os.listdir("/dev/pts"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/dev/pts/{name}").st_uid == uid:
                found.append(f"/dev/pts/{name}")
        except FileNotFoundError:
            pass
    return found


@dataclass(frozen=True)
class UtmpRow:
    type: int
    pid: int
    id: str
    user: str
    line: str


_UTMPDUMP = re.compile(r"^\[(\d+)\] \[(\d+)\s*\] \[([^\]]*)\] \[([^\]]*)\] \[([^\]]*)\]")


def utmp_rows() -> list[UtmpRow]:
    """/run/utmp as utmpdump reads it."""
    out = subprocess.run(["utmpdump", UTMP], capture_output=True, text=True, check=True).stdout
    rows = []
    for text in out.splitlines():
        m = _UTMPDUMP.match(text)
        if m:
            rows.append(UtmpRow(int(m[1]), int(m[2]), m[3].strip(), m[4].strip(),
                                m[5].strip()))
    return rows


def utmp_for(pid: int, line: str | None = None) -> list[UtmpRow]:
    return [r for r in utmp_rows()
            if r.pid == pid and (line is None or r.line == line.removeprefix("/dev/"))]


def tty_state(tty: str) -> tuple[int, int, int]:
    st = os.stat(tty)
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


# --- the victim: another user's live pty, held by another process ---------------------------


@dataclass
class Victim:
    user: TestUser
    tty: str
    master: int
    holder: subprocess.Popen

    def assert_intact(self) -> None:
        """Still the victim's: owner, group tty, 0620, USER_PROCESS in utmp."""
        assert self.holder.poll() is None, "the victim's pty holder died"
        assert tty_state(self.tty) == (self.user.uid, _tty_gid(), 0o620), \
            f"victim pty {self.tty} is now {tty_state(self.tty)}"
        rows = utmp_for(self.holder.pid, self.tty)
        assert [(r.type, r.user) for r in rows] == [(USER_PROCESS, self.user.name)], rows


@pytest.fixture(scope="module")
def victim() -> Victim:
    """A throwaway user logged in on a pty that another process holds (with
    a utmp record naming it), for the whole module."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    user = create_user("psv", password=False, key=False)
    master, slave = os.openpty()
    tty = os.ttyname(slave)
    os.chown(tty, user.uid, _tty_gid())
    os.chmod(tty, 0o620)
    holder = subprocess.Popen(["sleep", "3600"], pass_fds=(master, slave),
                              stdin=subprocess.DEVNULL)
    os.close(slave)
    loginrec.record_login(loginrec.LoginRecord(user=user.name, line=tty, pid=holder.pid,
                                               host="victim.example", addr="192.0.2.7"))
    found = Victim(user, tty, master, holder)
    try:
        found.assert_intact()
        yield found
    finally:
        loginrec.record_logout(tty, holder.pid)
        holder.kill()
        holder.wait()
        os.close(master)
        remove_user(user)


# --- the monitor, forked, post-auth ---------------------------------------------------------


def _open_fds() -> list[str]:
    """What each of this process's descriptors is (readlink of /proc/self/fd)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass  # the directory listing's own descriptor, closed by now
    return sorted(found)


def _session_monitor(sock: socket.socket, logfile: Path, host_key_paths: list[str],
                     pam_service: str, user_name: str, session_id: bytes,
                     max_ptys: int) -> int:
    """In the forked child: a real Monitor, as after a hand-off, serving ``sock``."""
    signal.alarm(int(TIMEOUT * 2))  # never outlive a hung test
    log = log_to_file(logfile)

    options = ServerOptions().finish()
    options.use_pam = True
    options.pam_service = pam_service
    options.max_sessions = max_ptys
    keys, problems = read_host_keys(host_key_paths)
    assert not problems, problems
    startup_r, startup_w = os.pipe()
    monitor = Monitor(options, keys, PEER, startup_w)
    # What the pre-auth phase would have decided (monitor/main.py after the
    # hand-off): the user, authenticated, the session id, post-auth.
    os.close(startup_r)
    os.close(startup_w)
    monitor.pw = pwd.getpwnam(user_name)
    state = monitor.state
    state.user = user_name
    state.user_valid = True
    state.authenticated = True
    state.session_id = session_id
    state.phase = Phase.POSTAUTH
    state.max_ptys = max_ptys
    monitor.pam = auth_pam.PamLogin(pam_service, user_name, rhost=PEER.addr, ruser=user_name)
    for step in (lambda: monitor.pam.setcred(auth_pam.PAM_ESTABLISH_CRED),
                 monitor.pam.open_session):
        result = step()
        assert result.ok, result.message
    monitor.pam_session_open = True
    channel = MonitorChannel(sock)
    log.info("harness: fds before %s", json.dumps(_open_fds()))
    try:
        result = serve_phase(monitor, channel, "session")
        log.info("harness: fds after %s", json.dumps(_open_fds()))
        log.info("harness: ptys held %s", json.dumps(sorted(monitor.state.ptys)))
        if result.ending is Ending.CLOSED:
            log.info("harness: channel closed")
        elif result.handoff is not None:
            log.info("harness: Handoff accepted after login")
        return EXIT_CODES[result.ending]
    finally:
        channel.close()
        monitor.cleanup()
        log.info("harness: fds at exit %s", json.dumps(_open_fds()))


@dataclass
class SessionOutcome(Outcome):
    pid: int = 0

    def harness(self, what: str):
        m = re.search(rf"^INFO privsep\.monitor: harness: {what} (.*)$", self.log, re.M)
        assert m, f"no harness line {what!r}\n{self}"
        return json.loads(m[1])


@dataclass
class Pty:
    tty: str
    master: int
    slave: int


class SessionProcess:
    """Steps a (compromised) session process takes; legitimate ones assert their answer."""

    def __init__(self, channel: MonitorChannel, monitor_pid: int, session_id: bytes,
                 host_keys: dict[str, HostKey], user: TestUser) -> None:
        self.ch = channel
        self.monitor_pid = monitor_pid
        self.session_id = session_id
        self.host_keys = host_keys
        self.user = user
        self.fds: list[int] = []

    def pty(self) -> Pty:
        answer, fds = self.ch.call(wire.PtyRequest("xterm", 80, 24, 0, 0), wire.PtyAnswer)
        self.fds += fds
        assert len(fds) == 2, fds
        return Pty(answer.tty, fds[0], fds[1])

    def close_fds(self, pty: Pty) -> None:
        for fd in (pty.master, pty.slave):
            if fd in self.fds:
                self.fds.remove(fd)
                os.close(fd)

    def cleanup(self, tty: str) -> bool:
        answer, _ = self.ch.call(wire.PtyCleanupRequest(tty), wire.PtyCleanupAnswer)
        return answer.done

    def sign(self, algorithm: str, data: bytes) -> bytes:
        answer, _ = self.ch.call(wire.SignRequest(algorithm, data), wire.SignAnswer)
        key = next(k for k in self.host_keys.values()
                   if algorithm in hostkey_blobs.algorithms_for_type(k.key_type))
        public = paramiko.PKey.from_type_string(key.key_type, key.blob)
        assert public.verify_ssh_sig(data, paramiko.Message(answer.signature))
        return answer.signature

    def prove(self, key_type: str, session_id: bytes | None = None) -> bytes:
        """A hostkeys-prove blob for one of our keys."""
        return hostkey_blobs.hostkeys_prove_data(
            self.session_id if session_id is None else session_id, self.host_keys[key_type].blob)

    def log(self, text: str, level: int = logging.INFO) -> None:
        self.ch.send(wire.Log(level, text.encode()))

    def attack(self, msg: wire.Message, fds: tuple[int, ...] = ()) -> None:
        self.ch.send(msg, fds)
        assert_dropped(self.ch)

    def attack_raw(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                          struct.pack(f"{len(fds)}i", *fds))]
        self.ch.sock.sendmsg([data], ancillary)
        assert_dropped(self.ch)


def run_session(tmp_path: Path, host_key_paths: list[str], host_keys: dict[str, HostKey],
                pam_service: str, user: TestUser,
                steps: Callable[[SessionProcess], None], max_ptys: int = 10) -> SessionOutcome:
    """Fork a post-auth monitor for ``user``; ``steps`` play the session process."""
    logfile = tmp_path / "monitor.log"
    session_id = secrets.token_bytes(32)
    pid, channel = fork_monitor(logfile, lambda sock: _session_monitor(
        sock, logfile, host_key_paths, pam_service, user.name, session_id, max_ptys))
    session = SessionProcess(channel, pid, session_id, host_keys, user)
    failure: BaseException | None = None
    try:
        steps(session)
    except BaseException as exc:
        failure = exc
    finally:
        channel.close()  # a monitor still serving sees EOF and ends
        for fd in session.fds:
            os.close(fd)
        code = _wait(pid)
    outcome = SessionOutcome(code, logfile.read_text(), pid)
    if failure is not None:
        raise AssertionError(f"session side failed: {failure!r}\n{outcome}") from failure
    return outcome


def assert_clean(outcome: SessionOutcome, user: TestUser, victim: Victim) -> None:
    """Nothing left behind, no descriptor leaked into the monitor, the victim untouched."""
    assert ptys_owned_by(user.uid) == [], str(outcome)
    left = [r for r in utmp_for(outcome.pid) if r.type == USER_PROCESS]
    assert left == [], f"utmp USER_PROCESS left for monitor {outcome.pid}: {left}\n{outcome}"
    before = Counter(outcome.harness("fds before"))
    after = Counter(outcome.harness("fds after"))
    held = outcome.harness("ptys held")
    gained = after - before
    assert gained == Counter({"/dev/ptmx": len(held)} if held else {}), \
        f"monitor gained descriptors {gained} holding {held}\n{outcome}"
    at_exit = Counter(outcome.harness("fds at exit"))
    assert at_exit - before == Counter(), f"monitor kept {at_exit - before} after cleanup"
    victim.assert_intact()


def assert_refused_session(outcome: SessionOutcome, reason: str, user: TestUser,
                           victim: Victim) -> None:
    assert_refused(outcome, reason)
    assert "Handoff accepted after login" not in outcome.log
    assert_clean(outcome, user, victim)


@pytest.fixture
def session(tmp_path, host_key_paths, host_keys, pam_service, user, victim):
    """session(steps, max_ptys=10) runs ``steps(SessionProcess)`` against a
    fresh post-auth monitor for ``user``."""
    victim.assert_intact()

    def run(steps: Callable[[SessionProcess], None], max_ptys: int = 10) -> SessionOutcome:
        return run_session(tmp_path, host_key_paths, host_keys, pam_service, user, steps,
                           max_ptys)
    return run


@pytest.fixture
def refused(session, user, victim):
    """refused(steps, reason, max_ptys=10): the case ends in a clean refusal."""
    def run(steps: Callable[[SessionProcess], None], reason: str,
            max_ptys: int = 10) -> SessionOutcome:
        outcome = session(steps, max_ptys)
        assert_refused_session(outcome, reason, user, victim)
        return outcome
    return run


# --- positive controls -------------------------------------------------------------------------


def test_control_pty_request_and_cleanup(session, user, victim):
    """A legitimate pty: both ends, the user's pts 0620 with a USER_PROCESS
    record of the monitor's pid; its cleanup gives it back to root 0666 and
    writes DEAD_PROCESS."""
    seen = {}

    def steps(s: SessionProcess) -> None:
        pty = s.pty()
        assert os.ttyname(pty.slave) == pty.tty
        assert tty_state(pty.tty) == (user.uid, _tty_gid(), 0o620)
        rows = utmp_for(s.monitor_pid, pty.tty)
        assert [(r.type, r.user, r.id) for r in rows] == \
            [(USER_PROCESS, user.name, pty.tty.removeprefix("/dev/")[-4:])], rows
        os.write(pty.master, b"echo\n")  # the two ends are one terminal
        seen["tty"] = pty.tty
        assert s.cleanup(pty.tty) is True
        assert tty_state(pty.tty) == (0, 0, 0o666)
        rows = utmp_for(s.monitor_pid, pty.tty)
        assert [r.type for r in rows] == [DEAD_PROCESS], rows
        s.close_fds(pty)

    outcome = session(steps)
    assert outcome.code == CLOSED, str(outcome)
    assert f"Allocated pty {seen['tty']} for {user.name}" in outcome.log
    assert "fatal" not in outcome.log, str(outcome)
    assert_clean(outcome, user, victim)


def test_control_ptys_held_at_close_are_released(session, user, victim):
    """A session process that goes away holding ptys: the monitor releases them."""
    def steps(s: SessionProcess) -> None:
        for _ in range(3):
            pty = s.pty()
            assert tty_state(pty.tty)[0] == user.uid

    outcome = session(steps)
    assert outcome.code == CLOSED, str(outcome)
    assert len(outcome.harness("ptys held")) == 3
    assert_clean(outcome, user, victim)


def test_control_number_kept_while_monitor_holds_it(session, user, victim):
    """The session process closes its ends of a pty: the monitor still holds
    the master, so the kernel gives its number to nobody else (issue 11.2)."""
    def steps(s: SessionProcess) -> None:
        pty = s.pty()
        s.close_fds(pty)
        others = [os.openpty() for _ in range(4)]
        try:
            names = {os.ttyname(slave) for _, slave in others}
            assert pty.tty not in names
            assert tty_state(pty.tty) == (user.uid, _tty_gid(), 0o620)
            assert s.cleanup(pty.tty) is True
            # Released, and its number free again (nobody holds a master now).
            assert not os.path.exists(pty.tty)
        finally:
            for fds in others:
                for fd in fds:
                    os.close(fd)

    outcome = session(steps)
    assert outcome.code == CLOSED, str(outcome)
    assert_clean(outcome, user, victim)


@pytest.mark.parametrize("key_type", [ED25519, ECDSA])
def test_control_postauth_signatures(session, user, victim, key_type):
    """Rekeys (every exchange-hash size) and hostkeys-prove for each of our keys."""
    def steps(s: SessionProcess) -> None:
        for size in sorted(wire.HASH_SIZES):
            s.sign(key_type, secrets.token_bytes(size))
        s.sign(key_type, s.prove(key_type))

    outcome = session(steps)
    assert outcome.code == CLOSED, str(outcome)
    assert "fatal" not in outcome.log, str(outcome)
    assert_clean(outcome, user, victim)


# --- cleanup of ptys it does not hold --------------------------------------------------------


def test_cleanup_of_a_pty_never_allocated(refused):
    def steps(s: SessionProcess) -> None:
        s.attack(wire.PtyCleanupRequest("/dev/pts/4093"))

    refused(steps, "PtyCleanupRequest /dev/pts/4093 is not this session's pty")


@pytest.mark.parametrize("holding", [False, True], ids=["holding-none", "holding-own"])
def test_cleanup_of_another_users_live_pty(refused, victim, holding):
    """Other users' sessions are unaffected: the victim's pts keeps its owner,
    mode and utmp record (checked by ``refused``)."""
    def steps(s: SessionProcess) -> None:
        if holding:
            s.pty()
        s.attack(wire.PtyCleanupRequest(victim.tty))

    refused(steps, f"PtyCleanupRequest {victim.tty} is not this session's pty")


def test_cleanup_of_another_users_pty_after_closing_own(refused, victim):
    """The session process closes its own pty's fds first (the race of issue
    11.2 made on demand), then names the victim's."""
    def steps(s: SessionProcess) -> None:
        pty = s.pty()
        s.close_fds(pty)
        s.attack(wire.PtyCleanupRequest(victim.tty))

    refused(steps, f"PtyCleanupRequest {victim.tty} is not this session's pty")


@pytest.mark.parametrize("name", [
    "", "/dev/tty", "/dev/ptmx", "/dev/pts/0/../{n}", "pts/{n}", "/dev//pts/{n}",
    "/dev/pts/{n}\0", "/dev/pts/{n} ",
], ids=["empty", "dev-tty", "ptmx", "dotdot", "line-form", "double-slash", "nul", "space"])
def test_cleanup_of_a_name_that_is_not_the_one_held(refused, user, name):
    """Names that might resolve to the session's own pty are not it: the
    monitor matches what it holds, not paths."""
    def steps(s: SessionProcess) -> None:
        pty = s.pty()
        s.attack(wire.PtyCleanupRequest(name.format(n=pty.tty.rsplit("/", 1)[1])))

    refused(steps, "is not this session's pty")


def test_cleanup_twice(refused):
    def steps(s: SessionProcess) -> None:
        pty = s.pty()
        assert s.cleanup(pty.tty) is True
        s.close_fds(pty)
        s.attack(wire.PtyCleanupRequest(pty.tty))

    refused(steps, "is not this session's pty")


def test_cleanup_of_a_number_reused_by_another_user(refused, make_user):
    """After a legitimate cleanup the number may go to someone else (here a
    second victim); a second cleanup naming it is refused and their pty is
    left alone."""
    other = make_user("psw", password=False, key=False)
    taken: list[tuple[int, int]] = []

    def steps(s: SessionProcess) -> None:
        pty = s.pty()
        s.close_fds(pty)
        assert s.cleanup(pty.tty) is True
        for _ in range(20):  # the lowest free number: ours, just freed
            master, slave = os.openpty()
            taken.append((master, slave))
            tty = os.ttyname(slave)
            if tty == pty.tty:
                break
        assert tty == pty.tty, "the released number was not reused"
        os.chown(tty, other.uid, _tty_gid())
        os.chmod(tty, 0o620)
        s.attack(wire.PtyCleanupRequest(tty))
        assert tty_state(tty) == (other.uid, _tty_gid(), 0o620)

    try:
        refused(steps, "is not this session's pty")
        tty = os.ttyname(taken[-1][1])
        assert tty_state(tty) == (other.uid, _tty_gid(), 0o620)
    finally:
        for fds in taken:
            for fd in fds:
                os.close(fd)


# --- pty floods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("max_ptys", [1, 3, 10])
def test_pty_flood_beyond_max_sessions(refused, user, max_ptys):
    def steps(s: SessionProcess) -> None:
        for _ in range(max_ptys):
            assert tty_state(s.pty().tty)[0] == user.uid
        s.attack(wire.PtyRequest("xterm", 80, 24, 0, 0))

    outcome = refused(steps, f"PtyRequest beyond {max_ptys} ptys (MaxSessions)", max_ptys)
    assert len(outcome.harness("ptys held")) == max_ptys
    assert outcome.log.count("Allocated pty") == max_ptys


def test_pty_flood_counts_what_is_held(refused):
    """Cleanups make room; the bound is on ptys held at once."""
    def steps(s: SessionProcess) -> None:
        ptys = [s.pty() for _ in range(3)]
        assert s.cleanup(ptys[0].tty) is True
        s.pty()
        s.attack(wire.PtyRequest("xterm", 80, 24, 0, 0))

    outcome = refused(steps, "PtyRequest beyond 3 ptys (MaxSessions)", max_ptys=3)
    assert outcome.log.count("Allocated pty") == 4


# --- signatures over data that is neither an exchange hash nor a proof --------------------------


@pytest.mark.parametrize("size", [0, 1, 19, 21, 33, 100, 1000])
def test_sign_data_of_arbitrary_length(refused, size):
    def steps(s: SessionProcess) -> None:
        s.attack(wire.SignRequest(ED25519, os.urandom(size)))

    refused(steps, f"SignRequest data of {size} bytes is not an exchange hash, nor a "
                   "hostkeys-prove blob")


def _prove(name: bytes, session_id: bytes, keyblob: bytes, tail: bytes = b"") -> bytes:
    def string(b: bytes) -> bytes:
        return U32.pack(len(b)) + b
    return string(name) + string(session_id) + string(keyblob) + tail


PROVE = hostkey_blobs.HOSTKEYS_PROVE.encode()

#: name: (algorithm, data builder (session, foreign key) -> bytes, reason)
FORGED_PROOFS = {
    "other-session-id": (ED25519, lambda s, f: s.prove(ED25519, secrets.token_bytes(32)),
                         "hostkeys-prove blob for another session id"),
    "foreign-key": (ED25519, lambda s, f: _prove(PROVE, s.session_id, f.asbytes()),
                    "hostkeys-prove blob names a key that is not ours"),
    "wrong-algorithm": (ECDSA, lambda s, f: s.prove(ED25519),
                        f"algorithm {ECDSA!r} is not the named key's"),
    "rsa-algorithm": ("rsa-sha2-512", lambda s, f: s.prove(ED25519),
                      "algorithm 'rsa-sha2-512' is not the named key's"),
    "trailing-bytes": (ED25519, lambda s, f: s.prove(ED25519) + b"\x00",
                       "trailing bytes after hostkeys-prove blob"),
    "truncated": (ED25519, lambda s, f: s.prove(ED25519)[:-5],
                  "truncated hostkeys-prove blob"),
    "other-request-name": (ED25519, lambda s, f: _prove(b"hostkeys-00@openssh.com", s.session_id,
                                                        s.host_keys[ED25519].blob),
                           "not a hostkeys-prove blob"),
    "empty-session-id": (ED25519, lambda s, f: _prove(PROVE, b"", s.host_keys[ED25519].blob),
                         "empty session id or key"),
    "userauth-blob": (ED25519, lambda s, f: userauth_blob(s.session_id, s.user.name,
                                                          f.asbytes()),
                      "is not an exchange hash, nor a hostkeys-prove blob"),
}


@pytest.mark.parametrize("name", list(FORGED_PROOFS))
def test_sign_forged_hostkeys_prove(refused, foreign_key, name):
    algorithm, build, reason = FORGED_PROOFS[name]

    def steps(s: SessionProcess) -> None:
        data = build(s, foreign_key)
        assert len(data) not in wire.HASH_SIZES
        s.attack(wire.SignRequest(algorithm, data))

    refused(steps, reason)


def test_sign_with_an_algorithm_we_have_no_key_for(refused):
    def steps(s: SessionProcess) -> None:
        s.attack(wire.SignRequest("ssh-dss", secrets.token_bytes(20)))

    refused(steps, "no host key for algorithm 'ssh-dss'")


# --- pre-auth requests after login ----------------------------------------------------------------


PREAUTH_REQUESTS = {
    "PwnamRequest": lambda s: wire.PwnamRequest("root"),
    "PasswordRequest": lambda s: wire.PasswordRequest(b"hunter2"),
    "KeyAllowedRequest": lambda s: wire.KeyAllowedRequest(
        ED25519, paramiko.Ed25519Key.from_private_key_file(str(s.user.key_path)).asbytes()),
    # A perfect signature by the user's own key over this session id.
    "KeyVerifyRequest": lambda s: signed_verify(
        paramiko.Ed25519Key.from_private_key_file(str(s.user.key_path)),
        userauth_blob(s.session_id, s.user.name, paramiko.Ed25519Key.from_private_key_file(
            str(s.user.key_path)).asbytes())),
    "KbdintRequest": lambda s: wire.KbdintRequest(True, []),
    "Handoff": lambda s: fake_handoff(s.session_id),
    # The monitor's own answers, sent as requests.
    "KeyVerifyAnswer": lambda s: wire.KeyVerifyAnswer(True),
    "PtyCleanupAnswer": lambda s: wire.PtyCleanupAnswer(True),
    "PwnamAnswer": lambda s: wire.PwnamAnswer(True, "publickey"),
}


@pytest.mark.parametrize("after_pty", [False, True], ids=["first", "holding-pty"])
@pytest.mark.parametrize("name", list(PREAUTH_REQUESTS))
def test_preauth_request_after_login(refused, name, after_pty):
    def steps(s: SessionProcess) -> None:
        if after_pty:
            s.pty()
        s.attack(PREAUTH_REQUESTS[name](s))

    refused(steps, f"{name} not permitted in postauth")


def test_requests_after_cleanup_of_everything(refused):
    """The session process gave back every pty (as at logout), then asks
    for more than a session may."""
    names = []

    def steps(s: SessionProcess) -> None:
        ptys = [s.pty() for _ in range(2)]
        for pty in ptys:
            s.close_fds(pty)
            assert s.cleanup(pty.tty) is True
        s.log("logout")
        names.append(ptys[1].tty)
        s.attack(wire.PtyCleanupRequest(ptys[1].tty))

    outcome = refused(steps, "PtyCleanupRequest /dev/pts/")
    assert f"PtyCleanupRequest {names[0]} is not this session's pty" in outcome.log


def test_handoff_after_cleanup_of_everything(refused):
    def steps(s: SessionProcess) -> None:
        pty = s.pty()
        s.close_fds(pty)
        assert s.cleanup(pty.tty) is True
        s.attack(fake_handoff(s.session_id))

    refused(steps, "Handoff not permitted in postauth")


# --- malformed and oversized records ------------------------------------------------------------


PTY_REQ = wire.encode(wire.PtyRequest("xterm", 80, 24, 0, 0))
SESSION_MALFORMED = {
    **MALFORMED,
    "pty-request-truncated": (U32.pack(len(PTY_REQ) - 4 - 2) + PTY_REQ[4:-2], "truncated record"),
    "pty-request-trailing": (U32.pack(len(PTY_REQ) - 4 + 1) + PTY_REQ[4:] + b"\x00",
                             "trailing bytes after PtyRequest"),
    "cleanup-bad-utf8": (_record(wire.MsgType.PTY_CLEANUP_REQUEST, U32.pack(2) + b"\xff\xfe"),
                         "tty: not UTF-8"),
    "cleanup-oversized-string": (_record(wire.MsgType.PTY_CLEANUP_REQUEST,
                                         U32.pack(0xFFFFFFF0) + b"/dev/pts/0"),
                                 "truncated record"),
    "unknown-type-0": (_record(0, b""), "unknown message type 0"),
    "unknown-type-255": (_record(255, b"\x00" * 64), "unknown message type 255"),
    "oversized-log": (_record(wire.MsgType.LOG, U32.pack(0) + U32.pack(20)
                              + U32.pack(wire.MAX_RECORD) + b"x" * wire.MAX_RECORD),
                      "oversized record"),
}


@pytest.mark.parametrize("holding", [False, True], ids=["first", "holding-pty"])
@pytest.mark.parametrize("name", list(SESSION_MALFORMED))
def test_malformed_record(refused, name, holding):
    data, reason = SESSION_MALFORMED[name]

    def steps(s: SessionProcess) -> None:
        if holding:
            s.pty()
        s.attack_raw(data)

    refused(steps, f"bad message from session: {reason}")


# --- descriptors where none belong ---------------------------------------------------------------


DESCRIPTOR_CASES = {
    # name: (message, number of descriptors, reason)
    "pty-request-1": (wire.PtyRequest("xterm", 80, 24, 0, 0), 1,
                      "PtyRequest came with 1 descriptors"),
    "pty-request-2": (wire.PtyRequest("xterm", 80, 24, 0, 0), 2,
                      "PtyRequest came with 2 descriptors"),
    "cleanup-2": (wire.PtyCleanupRequest("/dev/pts/0"), 2,
                  "PtyCleanupRequest came with 2 descriptors"),
    "log-1": (wire.Log(logging.INFO, b"hello"), 1, "Log came with 1 descriptors"),
    "sign-4": (wire.SignRequest(ED25519, bytes(32)), 4, "SignRequest came with 4 descriptors"),
    "pty-answer-3": (wire.PtyAnswer("/dev/pts/0"), 3, "PtyAnswer came with 3 descriptors"),
    # More than the channel takes: the control data is cut (MSG_CTRUNC).
    "log-8": (wire.Log(logging.INFO, b"hello"), 8, "oversized record"),
}


@pytest.mark.parametrize("name", list(DESCRIPTOR_CASES))
def test_record_with_descriptors_where_none_belong(refused, name):
    """The descriptors are pipe ends; the monitor must close every one it
    received (the harness's fd lists show no pipe gained, and the read end
    of each pipe sees EOF once the test closed its own write ends)."""
    msg, count, reason = DESCRIPTOR_CASES[name]
    pipes: list[tuple[int, int]] = []

    def steps(s: SessionProcess) -> None:
        # Made after the monitor's fork, so that it can only have them by the message.
        pipes.extend(os.pipe() for _ in range(count))
        s.ch.send(msg, tuple(w for _, w in pipes))
        for _, w in pipes:
            os.close(w)
        assert_dropped(s.ch)

    try:
        outcome = refused(steps, f"bad message from session: {reason}")
        inodes = {f"pipe:[{os.fstat(r).st_ino}]" for r, _ in pipes}
        assert not inodes & set(outcome.harness("fds after")), str(outcome)
        for r, _ in pipes:
            os.set_blocking(r, False)
            assert os.read(r, 1) == b""  # EOF: no write end is open anywhere
    finally:
        for r, _ in pipes:
            os.close(r)


def test_record_carrying_the_victims_pty(refused, victim):
    """The session process sends the monitor a pty master that is not its own
    (here the victim's): refused, closed, and the victim's pty untouched."""
    def steps(s: SessionProcess) -> None:
        s.attack(wire.PtyCleanupRequest(victim.tty), fds=(victim.master,))

    refused(steps, "bad message from session: PtyCleanupRequest came with 1 descriptors")


# --- log floods ---------------------------------------------------------------------------------


def test_log_flood(refused, host_keys):
    """Thousands of long Log records: the monitor keeps answering, cuts each
    line to 1000 characters, and still refuses what it must."""
    count, length = 3000, 5000
    timings = {}

    def steps(s: SessionProcess) -> None:
        start = time.monotonic()
        for i in range(count):
            s.log(f"{i:05d}" + "x" * (length - 5))
        s.log("y" * (wire.MAX_RECORD - 64))
        s.log("max-level", level=2**64 - 1)
        s.log("zero-level", level=0)
        s.sign(ED25519, secrets.token_bytes(32))  # still answered
        timings["flood"] = time.monotonic() - start
        s.attack(wire.PtyCleanupRequest("/dev/pts/4094"))

    outcome = refused(steps, "PtyCleanupRequest /dev/pts/4094 is not this session's pty")
    assert timings["flood"] < 20, timings
    # The session process's lines carry no mark, as sshd's post-auth child's.
    lines = re.findall(r"^INFO privsep\.monitor: (\d{5}x*)$", outcome.log, re.M)
    assert len(lines) == count, str(outcome)[:2000]
    assert {len(text) for text in lines} == {MAX_CHILD_LOG}
    assert re.search(rf"^INFO privsep\.monitor: y{{{MAX_CHILD_LOG}}}$", outcome.log,
                     re.M)
    assert "CRITICAL privsep.monitor: max-level\n" in outcome.log
    assert "DEBUG privsep.monitor: zero-level\n" in outcome.log
    longest = max(len(line) for line in outcome.log.splitlines()
                  if line.startswith(("INFO privsep.monitor: ", "CRITICAL privsep.monitor: ")))
    assert longest <= len("CRITICAL privsep.monitor: ") + MAX_CHILD_LOG
