"""A compromised net-child against the real monitor (issue 2, "Must show").

Each test forks a real root ``Monitor`` (real PAM service, a real ed25519
host key, a real throwaway user with a real key in authorized_keys) serving
one end of a monitor socketpair, and plays the net-child on the other end:
with MonitorChannel where the records are well formed, with raw sendmsg
where they are not.  The monitor runs in a forked process so that PAM and
os._exit stay out of pytest's process; its log goes to a file, and its exit
code says how serve() ended:

    HANDED_OFF  serve_phase() got a Handoff: a login would proceed
    REFUSED     serve_phase() refused the child (PolicyViolation, logged by
                the same code as in the daemon)

Every hostile case ends REFUSED, with the "fatal: monitor: <reason>;
dropping <peer>" line naming the reason, no "Accepted" line and no hand-off.
The positive controls run the same harness through a legitimate login and
end HANDED_OFF with "Accepted publickey/password for <user>", so the
refusals are the monitor's doing and not the harness's.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko
import pytest

from privsep.monitor import pubkey
from privsep.monitor.hostkeys import public_keys, read_host_keys
from privsep.wire import messages as wire
from privsep.common.peer import Peer
from privsep.monitor.monitor import Ending, Monitor, serve_phase
from privsep.common.channel import MonitorChannel, make_pair
from privsep.config.servconf import ServerOptions

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

PEER = Peer("127.0.0.1", 5555, "127.0.0.1", 22)
DROPPING = f"; dropping {PEER}"
ALG = "ssh-ed25519"
TIMEOUT = 30.0

# Exit codes of the forked monitor, one per way serve_phase can end.
HANDED_OFF, REFUSED, CLOSED, GONE, CRASHED = 0, 3, 4, 5, 6
EXIT_CODES = {Ending.HANDED_OFF: HANDED_OFF, Ending.REFUSED: REFUSED, Ending.CLOSED: CLOSED,
              Ending.GONE: GONE, Ending.CRASHED: CRASHED}
CODE_NAMES = {HANDED_OFF: "HANDED_OFF", REFUSED: "REFUSED", CLOSED: "CLOSED",
              GONE: "GONE", CRASHED: "CRASHED"}

U32 = struct.Struct(">I")


# --- keys -------------------------------------------------------------------------


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return path


@pytest.fixture(scope="module")
def host_key_path(tmp_path_factory) -> Path:
    return _keygen(tmp_path_factory.mktemp("hostkey") / "ssh_host_ed25519_key")


@pytest.fixture(scope="module")
def stranger_key(tmp_path_factory) -> paramiko.Ed25519Key:
    """A key in nobody's authorized_keys."""
    path = _keygen(tmp_path_factory.mktemp("stranger") / "id_ed25519")
    return paramiko.Ed25519Key.from_private_key_file(str(path))


# --- the monitor, forked -------------------------------------------------------------


def log_to_file(logfile: Path) -> logging.Logger:
    """In a forked monitor: every log line to ``logfile``; the monitor's logger."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    handler = logging.FileHandler(logfile)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    return logging.getLogger("privsep.monitor")


def _monitor_process(sock: socket.socket, logfile: Path, host_key_path: Path,
                     pam_service: str,
                     configure: Callable[[ServerOptions], None] | None = None) -> int:
    """In the forked child: a real Monitor serving ``sock`` until it ends;
    ``configure`` may change the options first (TrustedUserCAKeys...)."""
    signal.alarm(int(TIMEOUT * 2))  # default action: never outlive a hung test
    log = log_to_file(logfile)

    options = ServerOptions().finish()
    options.use_pam = True
    options.pam_service = pam_service
    if configure is not None:
        configure(options)
    keys, _ = read_host_keys([str(host_key_path)])
    _, startup_fd = os.pipe()
    monitor = Monitor(options, keys, PEER, startup_fd)
    channel = MonitorChannel(sock)
    # The daemon's own serve_phase: the same exception handling and log lines
    # as a real connection, minus the fork of a net-child (the test is the
    # net-child) and the post-auth session.
    try:
        result = serve_phase(monitor, channel, "preauth")
        log.info("harness: key options %s", [(o.name, o.value) for o in monitor.key_options])
        if result.handoff is not None:
            log.info("harness: Handoff accepted for %s (session id %s)",
                     monitor.state.user, result.handoff.state.session_id.hex())
        elif result.ending is Ending.CLOSED:
            log.info("harness: channel closed without hand-off")
        return EXIT_CODES[result.ending]
    finally:
        channel.close()
        monitor.cleanup()


@dataclass
class Outcome:
    code: int
    log: str

    def __str__(self) -> str:
        return f"monitor exit {CODE_NAMES.get(self.code, self.code)}; log:\n{self.log}"

    def without(self, text: str) -> "Outcome":
        """The same outcome, the log lines containing ``text`` left out."""
        kept = [line for line in self.log.splitlines(keepends=True) if text not in line]
        return Outcome(self.code, "".join(kept))


def _wait(pid: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("monitor did not exit")


def fork_monitor(logfile: Path, body: Callable[[socket.socket], int]
                 ) -> tuple[int, MonitorChannel]:
    """Fork a monitor running ``body`` on its end of a fresh pair (its exit
    code is what ``body`` returns; a traceback goes to ``logfile``); the pid
    and the test's end."""
    logfile.write_text("")
    monitor_end, child_end = make_pair()
    pid = os.fork()
    if pid == 0:  # the monitor: never return into pytest
        code = CRASHED
        try:
            child_end.close()
            code = body(monitor_end)
        except BaseException:
            try:
                with open(logfile, "a") as f:
                    traceback.print_exc(file=f)
            except BaseException:
                pass
        finally:
            os._exit(code)
    monitor_end.close()
    child_end.settimeout(TIMEOUT)
    return pid, MonitorChannel(child_end)


def run_monitor(tmp_path: Path, host_key_path: Path, pam_service: str,
                drive: Callable[[MonitorChannel], None],
                configure: Callable[[ServerOptions], None] | None = None) -> Outcome:
    """Fork a monitor, let ``drive`` play the net-child, return how it ended."""
    logfile = tmp_path / "monitor.log"
    pid, channel = fork_monitor(
        logfile, lambda sock: _monitor_process(sock, logfile, host_key_path, pam_service,
                                               configure))
    failure: BaseException | None = None
    try:
        drive(channel)
    except BaseException as exc:
        failure = exc
    finally:
        channel.close()  # a monitor still serving sees EOF and ends
        code = _wait(pid)
    outcome = Outcome(code, logfile.read_text())
    if failure is not None:
        raise AssertionError(f"net-child side failed: {failure!r}\n{outcome}") from failure
    return outcome


def assert_refused(outcome: Outcome, reason: str) -> None:
    """Refused for ``reason``, with a log line, no login, no hand-off."""
    assert outcome.code == REFUSED, str(outcome)
    pattern = re.compile(r"^CRITICAL privsep\.monitor: fatal: monitor: .*" + re.escape(reason)
                         + r".*" + re.escape(DROPPING) + "$", re.M)
    assert pattern.search(outcome.log), f"no refusal line naming {reason!r}\n{outcome}"
    # no login accepted ("Accepted key ... found at" only says a key is listed)
    assert not re.search(r"Accepted (publickey|password|keyboard-interactive)", outcome.log), \
        str(outcome)
    assert "Handoff accepted" not in outcome.log, str(outcome)


def assert_dropped(channel: MonitorChannel) -> None:
    """The monitor answered nothing and closed the channel."""
    try:
        msg, fds = channel.recv()
    except (EOFError, ConnectionResetError):
        return
    for fd in fds:
        os.close(fd)
    pytest.fail(f"monitor answered {msg!r} instead of dropping the child")


# --- the net-child's side ---------------------------------------------------------------


def userauth_blob(session_id: bytes, user: str, keyblob: bytes, *, service="ssh-connection",
                  method="publickey", has_signature=True, algorithm=ALG,
                  msg_type=50) -> bytes:
    """The data a client signs for publickey auth (RFC 4252 section 7)."""
    m = paramiko.Message()
    m.add_string(session_id)
    m.add_byte(bytes([msg_type]))
    m.add_string(user)
    m.add_string(service)
    m.add_string(method)
    m.add_boolean(has_signature)
    m.add_string(algorithm)
    m.add_string(keyblob)
    return m.asbytes()


def signed_verify(key: paramiko.PKey, blob: bytes) -> wire.KeyVerifyRequest:
    """A KeyVerifyRequest with a real signature by ``key`` over ``blob``."""
    signature = key.sign_ssh_data(blob, ALG).asbytes()
    return wire.KeyVerifyRequest(ALG, key.asbytes(), blob, signature)


def fake_handoff(session_id: bytes) -> wire.Handoff:
    direction = wire.DirectionState("aes256-ctr", bytes(32), bytes(16), 0, b"",
                                    "hmac-sha2-256", bytes(32), 3, 3, 100)
    return wire.Handoff(wire.TransportState(
        session_id=session_id, local_version="SSH-2.0-privsep_sshd",
        remote_version="SSH-2.0-OpenSSH_9.2p1", strict_kex=True, client_ext_info=False,
        inbound=direction, outbound=direction, pending=b""))


class NetChild:
    """Steps a (compromised) net-child takes; legitimate ones assert their answer."""

    def __init__(self, channel: MonitorChannel, host_key_path: Path) -> None:
        self.ch = channel
        self.host_public = public_keys(read_host_keys([str(host_key_path)])[0])[0]

    def sign(self, data: bytes) -> bytes:
        answer, _ = self.ch.call(wire.SignRequest(ALG, data), wire.SignAnswer)
        # A real host-key signature over exactly that data.
        assert self.host_public.verify_ssh_sig(data, paramiko.Message(answer.signature))
        return answer.signature

    def kex(self) -> bytes:
        """A key exchange: the host key signs an exchange hash, the session id."""
        session_id = secrets.token_bytes(32)
        self.sign(session_id)
        return session_id

    def pwnam(self, name: str) -> bool:
        answer, _ = self.ch.call(wire.PwnamRequest(name), wire.PwnamAnswer)
        return answer.valid

    def key_allowed(self, key: paramiko.PKey) -> bool:
        answer, _ = self.ch.call(wire.KeyAllowedRequest(ALG, key.asbytes()),
                                 wire.KeyAllowedAnswer)
        return answer.allowed

    def verify(self, req: wire.KeyVerifyRequest) -> bool:
        answer, _ = self.ch.call(req, wire.KeyVerifyAnswer)
        return answer.verified

    def password(self, password: str) -> bool:
        answer, _ = self.ch.call(wire.PasswordRequest(password.encode()), wire.PasswordAnswer)
        return answer.accepted

    def up_to_key_allowed(self, user, key: paramiko.PKey) -> bytes:
        """kex, user named, key allowed: the legitimate start of a key login."""
        session_id = self.kex()
        assert self.pwnam(user.name) is True
        assert self.key_allowed(key) is True
        return session_id

    def attack(self, msg: wire.Message, fds: tuple[int, ...] = ()) -> None:
        self.ch.send(msg, fds)
        assert_dropped(self.ch)

    def attack_raw(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
        self.ch.sock.sendmsg([data], ancillary)
        assert_dropped(self.ch)


@pytest.fixture
def hostile(tmp_path, host_key_path, pam_service):
    """hostile(steps, **options) runs ``steps(NetChild)`` against a fresh
    forked monitor; ``options`` are ServerOptions attributes to change."""
    def run(steps: Callable[[NetChild], None], **changes) -> Outcome:
        def configure(options: ServerOptions) -> None:
            for name, value in changes.items():
                setattr(options, name, value)
        return run_monitor(tmp_path, host_key_path, pam_service,
                           lambda ch: steps(NetChild(ch, host_key_path)), configure)
    return run


@pytest.fixture
def user_key(user) -> paramiko.Ed25519Key:
    return paramiko.Ed25519Key.from_private_key_file(str(user.key_path))


# --- positive controls: the same harness lets a legitimate login through -------------------


def test_control_publickey_login_is_handed_off(hostile, user, user_key):
    verdicts = []

    def steps(child: NetChild) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        child.sign(secrets.token_bytes(32))  # a rekey before auth is legal
        blob = userauth_blob(session_id, user.name, user_key.asbytes())
        verdicts.append(child.verify(signed_verify(user_key, blob)))
        child.ch.send(fake_handoff(session_id))

    outcome = hostile(steps)
    assert verdicts == [True]
    assert outcome.code == HANDED_OFF, str(outcome)
    fp = pubkey.fingerprint(user_key.asbytes())
    assert (f"Accepted publickey for {user.name} from {PEER} ssh2: ED25519 {fp}"
            in outcome.log), str(outcome)
    assert f"harness: Handoff accepted for {user.name}" in outcome.log
    assert "fatal" not in outcome.log


def test_control_password_login_is_handed_off(hostile, user):
    verdicts = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        verdicts.append(child.password(user.password))
        child.ch.send(fake_handoff(session_id))

    outcome = hostile(steps)
    assert verdicts == [True]
    assert outcome.code == HANDED_OFF, str(outcome)
    assert f"Accepted password for {user.name} from {PEER} ssh2" in outcome.log
    assert "fatal" not in outcome.log


# --- host-key signatures ---------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 19, 33, 100, 1000])
@pytest.mark.parametrize("after_kex", [False, True], ids=["first", "after-kex"])
def test_sign_data_of_arbitrary_length(hostile, size, after_kex):
    def steps(child: NetChild) -> None:
        if after_kex:
            child.kex()
        child.attack(wire.SignRequest(ALG, os.urandom(size)))

    assert_refused(hostile(steps), f"SignRequest data of {size} bytes is not an exchange hash")


def test_sign_of_a_userauth_blob_refused(hostile, user, user_key):
    """The host key is no oracle: a userauth blob is not an exchange hash."""
    def steps(child: NetChild) -> None:
        session_id = child.kex()
        child.attack(wire.SignRequest(ALG, userauth_blob(session_id, user.name,
                                                         user_key.asbytes())))

    assert_refused(hostile(steps), "is not an exchange hash")


def test_second_sign_does_not_move_the_session_id(hostile, user, user_key):
    """A second hash-sized sign request is answered (rekey), but the session
    id stays the first: a userauth blob signed over the second is refused."""
    def steps(child: NetChild) -> None:
        child.up_to_key_allowed(user, user_key)
        second = secrets.token_bytes(32)
        child.sign(second)
        blob = userauth_blob(second, user.name, user_key.asbytes())
        child.attack(signed_verify(user_key, blob))

    assert_refused(hostile(steps), "signature over another session id")


# --- the signed userauth blob must belong to this connection ------------------------------


@pytest.mark.parametrize("tamper,reason", [
    (lambda sid, user: dict(session_id=secrets.token_bytes(32), user=user),
     "signature over another session id"),
    (lambda sid, user: dict(session_id=sid, user="root"),
     "signed request names user 'root'"),
    (lambda sid, user: dict(session_id=sid, user=user, service="ssh-userauth"),
     "signed request names service 'ssh-userauth'"),
    (lambda sid, user: dict(session_id=sid, user=user, service="sftp"),
     "signed request names service 'sftp'"),
    (lambda sid, user: dict(session_id=sid, user=user, msg_type=60),
     "signed message type 60"),
    (lambda sid, user: dict(session_id=sid, user=user, has_signature=False),
     "not a publickey request with signature"),
], ids=["other-session-id", "other-user", "service-ssh-userauth", "service-sftp",
        "msg-type-60", "no-signature-flag"])
def test_userauth_blob_not_bound_to_this_login(hostile, user, user_key, tamper, reason):
    """After a legitimate KeyAllowed, a blob with a real signature by the
    user's own key, but over the wrong fields, is refused."""
    def steps(child: NetChild) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        fields = tamper(session_id, user.name)
        blob = userauth_blob(fields.pop("session_id"), fields.pop("user"),
                             user_key.asbytes(), **fields)
        child.attack(signed_verify(user_key, blob))

    assert_refused(hostile(steps), reason)


def test_userauth_blob_naming_another_real_user(hostile, make_user, user_key, user):
    """The user's key signs a blob naming another existing user."""
    other = make_user()

    def steps(child: NetChild) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        blob = userauth_blob(session_id, other.name, user_key.asbytes())
        child.attack(signed_verify(user_key, blob))

    outcome = hostile(steps)
    assert_refused(outcome, f"signed request names user '{other.name}'")


# --- keys the monitor never allowed ---------------------------------------------------------


def test_key_not_in_authorized_keys(hostile, user, stranger_key):
    answers = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        answers.append(child.key_allowed(stranger_key))
        # The compromised child goes on as if it had been allowed, with a
        # blob and signature that are otherwise perfect.
        blob = userauth_blob(session_id, user.name, stranger_key.asbytes())
        child.attack(signed_verify(stranger_key, blob))

    outcome = hostile(steps)
    assert answers == [False]
    fp = pubkey.fingerprint(stranger_key.asbytes())
    assert re.search(rf"Failed publickey for {user.name} from .* ssh2: ED25519 {re.escape(fp)}",
                     outcome.log), str(outcome)
    assert_refused(outcome, "KeyVerifyRequest for a key other than the one last allowed")


def test_key_verify_with_no_key_allowed_request(hostile, user, user_key):
    """Even the user's real key must be asked about first."""
    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        blob = userauth_blob(session_id, user.name, user_key.asbytes())
        child.attack(signed_verify(user_key, blob))

    assert_refused(hostile(steps), "KeyVerifyRequest for a key other than the one last allowed")


# --- claims of success -----------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["first", "after-kex", "after-pwnam", "after-key-allowed"])
def test_handoff_without_verification(hostile, user, user_key, stage):
    def steps(child: NetChild) -> None:
        session_id = b"\x00" * 32
        if stage != "first":
            session_id = child.kex()
        if stage in ("after-pwnam", "after-key-allowed"):
            assert child.pwnam(user.name) is True
        if stage == "after-key-allowed":
            assert child.key_allowed(user_key) is True
        child.attack(fake_handoff(session_id))

    assert_refused(hostile(steps), "Handoff before authentication")


def test_handoff_after_wrong_password(hostile, user):
    answers = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        answers.append(child.password(user.password + "x"))
        child.attack(fake_handoff(session_id))

    outcome = hostile(steps)
    assert answers == [False]
    assert f"Failed password for {user.name} from {PEER} ssh2" in outcome.log, str(outcome)
    assert_refused(outcome, "Handoff before authentication")


def test_handoff_after_failed_signature(hostile, user, user_key):
    """A correct blob with a signature over something else: KeyVerify says
    no, and the hand-off that follows is refused."""
    answers = []

    def steps(child: NetChild) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        blob = userauth_blob(session_id, user.name, user_key.asbytes())
        forged = signed_verify(user_key, blob + b"x")
        answers.append(child.verify(wire.KeyVerifyRequest(ALG, user_key.asbytes(), blob,
                                                          forged.signature)))
        child.attack(fake_handoff(session_id))

    outcome = hostile(steps)
    assert answers == [False]
    assert f"Failed publickey for {user.name} from {PEER} ssh2" in outcome.log, str(outcome)
    assert_refused(outcome, "Handoff before authentication")


# --- post-auth requests before auth ------------------------------------------------------------


@pytest.mark.parametrize("stage", ["first", "after-pwnam"])
def test_pty_request_before_auth(hostile, user, stage):
    def steps(child: NetChild) -> None:
        if stage == "after-pwnam":
            child.kex()
            assert child.pwnam(user.name) is True
        child.attack(wire.PtyRequest("xterm", 80, 24, 0, 0))

    outcome = hostile(steps)
    assert_refused(outcome, "PtyRequest not permitted in preauth")
    assert "Allocated pty" not in outcome.log


def test_pty_cleanup_before_auth(hostile):
    def steps(child: NetChild) -> None:
        child.attack(wire.PtyCleanupRequest("/dev/pts/0"))

    assert_refused(hostile(steps), "PtyCleanupRequest not permitted in preauth")


# --- the banner refusal: sshd's lines only, before anything else -----------------------------


@pytest.mark.parametrize("msg,stage,reason", [
    (wire.BannerRefused("invalid", "GET /"), "after-kex", "after the identification"),
    (wire.BannerRefused("made-up", "x"), "first", "unknown banner refusal"),
    (wire.BannerRefused("major", "2; rm -rf"), "first", "not a number"),
    (wire.BannerRefused("invalid", "x" * 257), "first", "257 characters"),
], ids=["after-kex", "unknown-reason", "major-not-a-number", "too-long"])
def test_banner_refusal_beyond_sshd_lines(hostile, msg, stage, reason):
    def steps(child: NetChild) -> None:
        if stage == "after-kex":
            child.kex()
        child.attack(msg)

    outcome = hostile(steps)
    assert_refused(outcome, reason)
    assert "BannerRefused" in outcome.log
    assert "banner exchange" not in outcome.log


def test_banner_refusal_writes_sshd_lines_once(hostile):
    """The lines themselves (unmarked, tests/test_log_parity.py compares
    them with sshd's); a second refusal is one too many."""
    def steps(child: NetChild) -> None:
        child.ch.send(wire.BannerRefused("invalid", "GET / HTTP/1.0"))
        child.attack(wire.BannerRefused("invalid", "again"))

    outcome = hostile(steps)
    assert_refused(outcome, "BannerRefused repeated")
    assert 'client sent invalid protocol identifier "GET / HTTP/1.0"\n' in outcome.log
    assert re.search(r"banner exchange: Connection from \S+ port \d+: invalid format\n",
                     outcome.log), outcome.log
    assert "again" not in outcome.log.replace("BannerRefused(reason='invalid', detail='again')", "")


# --- malformed records --------------------------------------------------------------------------


def _record(msg_type: int, body: bytes) -> bytes:
    return U32.pack(len(body) + 1) + bytes([msg_type]) + body


PWNAM = wire.encode(wire.PwnamRequest("someone"))

MALFORMED = {
    # name: (raw datagram, reason in the log)
    "truncated-as-sent": (PWNAM[:-3], f"record length {len(PWNAM) - 4} but {len(PWNAM) - 7} bytes"),
    "truncated-reframed": (U32.pack(len(PWNAM) - 7) + PWNAM[4:-3], "truncated record"),
    "truncated-header": (PWNAM[:3], "truncated record"),
    "unknown-type": (_record(99, b"\x00" * 8), "unknown message type 99"),
    "oversized-claim": (U32.pack(wire.MAX_RECORD + 1) + bytes([wire.MsgType.PWNAM_REQUEST]),
                        f"record of {wire.MAX_RECORD + 1} bytes is oversized"),
    "oversized-datagram": (_record(wire.MsgType.PASSWORD_REQUEST,
                                   U32.pack(wire.MAX_RECORD) + b"p" * wire.MAX_RECORD),
                           "oversized record"),
    "trailing-bytes": (U32.pack(len(PWNAM) - 4 + 2) + PWNAM[4:] + b"\x00\x00",
                       "trailing bytes after PwnamRequest"),
    "bad-utf8": (_record(wire.MsgType.PWNAM_REQUEST, U32.pack(2) + b"\xff\xfe"),
                 "user: not UTF-8"),
    "bool-2": (_record(wire.MsgType.PWNAM_ANSWER, b"\x02"), "valid: bool must be 0 or 1"),
}


@pytest.mark.parametrize("stage", ["first", "mid-login"])
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_record(hostile, user, user_key, name, stage):
    data, reason = MALFORMED[name]

    def steps(child: NetChild) -> None:
        if stage == "mid-login":
            child.up_to_key_allowed(user, user_key)
        child.attack_raw(data)

    assert_refused(hostile(steps), f"bad message from preauth: {reason}")


@pytest.mark.parametrize("stage", ["first", "mid-login"])
def test_record_with_unexpected_descriptor(hostile, user, user_key, stage):
    """A well-formed request carrying a descriptor it should not."""
    def steps(child: NetChild) -> None:
        if stage == "mid-login":
            child.up_to_key_allowed(user, user_key)
        r, w = os.pipe()
        try:
            child.attack(wire.PwnamRequest(user.name), fds=(r,))
        finally:
            os.close(r)
            os.close(w)

    assert_refused(hostile(steps), "bad message from preauth: PwnamRequest came with 1 descriptors")


def test_answer_sent_as_request(hostile, user):
    """A child claiming a verdict by sending the monitor's own answer."""
    def steps(child: NetChild) -> None:
        child.kex()
        assert child.pwnam(user.name) is True
        child.attack(wire.KeyVerifyAnswer(True))

    assert_refused(hostile(steps), "KeyVerifyAnswer not permitted in preauth")


def test_largest_legal_record_crosses_the_channel():
    """The boundary of the oversized cases: a record of exactly MAX_RECORD
    bytes is carried whole and decoded (the socket buffer must hold it)."""
    a, b = make_pair()
    sender, receiver = MonitorChannel(a), MonitorChannel(b)
    try:
        msg = wire.PasswordRequest(b"p" * (wire.MAX_RECORD - 1 - 4))
        sender.send(msg)
        got, fds = receiver.recv()
        assert got == msg and fds == []
    finally:
        sender.close()
        receiver.close()


# --- key options come from the key verified (issue 11.3) ---------------------------------------

RESTRICTED_OPTIONS = 'command="echo forced",no-pty'


@pytest.fixture
def restricted_key(user, tmp_path) -> paramiko.Ed25519Key:
    """R: a second key of ``user``, on a restricted authorized_keys line
    before the user's unrestricted key U (``user_key``)."""
    path = _keygen(tmp_path / "id_restricted")
    key = paramiko.Ed25519Key.from_private_key_file(str(path))
    auth = user.home / ".ssh" / "authorized_keys"
    line = f"{RESTRICTED_OPTIONS} {path.with_suffix('.pub').read_text().strip()}\n"
    auth.write_text(line + auth.read_text())  # root writes; owner and mode stay the user's
    return key


def test_key_verify_for_a_key_allowed_before_another(hostile, user, user_key,
                                                     restricted_key):
    """A compromised net-child asks about the restricted key R, then about the
    user's unrestricted key U, then sends a good signature by R: the question
    about U reset the one-key state, so R is no longer the key allowed, and
    the session can never get U's freedom with R's signature."""
    answers = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        answers.append(child.key_allowed(restricted_key))
        answers.append(child.key_allowed(user_key))
        blob = userauth_blob(session_id, user.name, restricted_key.asbytes())
        child.attack(signed_verify(restricted_key, blob))

    outcome = hostile(steps)
    assert answers == [True, True]
    for key in (restricted_key, user_key):
        fp = pubkey.fingerprint(key.asbytes())
        assert f"Accepted key ED25519 {fp} found at " in outcome.log, str(outcome)
    assert_refused(outcome, "KeyVerifyRequest for a key other than the one last allowed")
    assert "harness: key options []" in outcome.log, str(outcome)


@pytest.mark.parametrize("asked", [["R"], ["U", "R"]], ids=["R", "U-then-R"])
def test_control_key_options_are_the_verified_keys(hostile, user, user_key,
                                                   restricted_key, asked):
    """R asked about last and verified: handed off, with R's line's options."""
    keys = {"R": restricted_key, "U": user_key}
    verdicts = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        for name in asked:
            assert child.key_allowed(keys[name]) is True
        blob = userauth_blob(session_id, user.name, restricted_key.asbytes())
        verdicts.append(child.verify(signed_verify(restricted_key, blob)))
        child.ch.send(fake_handoff(session_id))

    outcome = hostile(steps)
    assert verdicts == [True]
    assert outcome.code == HANDED_OFF, str(outcome)
    fp = pubkey.fingerprint(restricted_key.asbytes())
    assert (f"Accepted publickey for {user.name} from {PEER} ssh2: ED25519 {fp}"
            in outcome.log), str(outcome)
    assert "harness: key options [('command', 'echo forced'), ('no-pty', None)]" \
        in outcome.log, str(outcome)
    assert "fatal" not in outcome.log
