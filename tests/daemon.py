"""Real servers and the real OpenSSH client, for tests that log in.

``Server`` runs either privsep-sshd (as installed by install.sh, so the
checkout's code) or Debian's /usr/sbin/sshd as the reference, each on its own
loopback port with its own config and log file.  ``ssh()`` runs the stock
client against either, with a key or with a password fed through
SSH_ASKPASS (no sshpass, no mocks).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.userutil import TestUser

INSTALLED = "/usr/local/sbin/privsep-sshd"
OPENSSH = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parent.parent
PAM_SERVICE = "privsep-sshd"


def install_pam_service() -> str:
    """Make /etc/pam.d/privsep-sshd the repository's file and return the
    service name. The real install script does this copy; tests and
    benchmarks do it themselves so they run from a checkout. Left in place
    afterwards, as an install would, so concurrent runs never see it vanish."""
    source = REPO / "pam.d" / PAM_SERVICE
    target = Path("/etc/pam.d") / PAM_SERVICE
    wanted = source.read_bytes()
    if not target.exists() or target.read_bytes() != wanted:
        # Write then rename: a PAM call elsewhere never reads half a file.
        tmp = target.with_name(f".{PAM_SERVICE}.{os.getpid()}")
        tmp.write_bytes(wanted)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return PAM_SERVICE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def privsep_command() -> list[str]:
    """The daemon under test: the installed one, or PRIVSEP_SSHD if set."""
    override = os.environ.get("PRIVSEP_SSHD")
    if override:
        return override.split()
    if os.path.exists(INSTALLED):
        return [INSTALLED]
    return [sys.executable, "-m", "privsep"]


@dataclass
class Server:
    kind: str  # "privsep" or "openssh"
    port: int
    workdir: Path
    process: subprocess.Popen | None = None
    extra_config: list[str] = field(default_factory=list)
    #: lines after the defaults: Match blocks go here
    tail_config: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def config_lines(self) -> list[str]:
        lines = [
            "ListenAddress 127.0.0.1",
            f"Port {self.port}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            "LogLevel VERBOSE",
            "UsePAM yes",
            "PasswordAuthentication yes",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PrintMotd no",
        ]
        if self.kind == "openssh":
            for kind in ("ed25519", "ecdsa", "rsa"):
                lines.append(f"HostKey {self.workdir / f'host_{kind}_key'}")
        return self.extra_config + lines + self.tail_config

    def start(self) -> "Server":
        config = self.workdir / "sshd_config"
        config.write_text("\n".join(self.config_lines()) + "\n")
        if self.kind == "openssh":
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
            for kind in ("ed25519", "ecdsa", "rsa"):
                key = self.workdir / f"host_{kind}_key"
                if not key.exists():
                    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)],
                                   check=True)
            argv = [OPENSSH, "-D", "-e", "-f", str(config)]
        else:
            argv = [*privsep_command(), "-D", "-e", "-f", str(config)]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.log_text()}")
            try:
                probe = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            except OSError:
                time.sleep(0.05)
                continue
            with probe:
                # Read the identification before closing: closed with it
                # unread, the socket answers it with a reset, and sshd then
                # logs "read: Connection reset by peer" instead of "Connection
                # closed by remote host", at random.
                try:
                    probe.settimeout(5)
                    probe.recv(1024)
                except OSError:
                    pass
            return self
        raise RuntimeError(f"{self.kind} server did not listen: {self.log_text()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Sessions outlive the listener (as with sshd); kill what is left.
        subprocess.run(["pkill", "-KILL", "-s", str(self.process.pid)], check=False)
        self.process = None

    def wait_for_log(self, text: str, timeout: float = 15) -> str:
        """Wait until ``text`` is in the log; returns the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log_text()
            if text in log:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in {self.kind} log:\n{self.log_text()}")


def start_server(kind: str, extra_config: list[str] | None = None,
                 tail_config: list[str] | None = None) -> Server:
    workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-srv-"))
    os.chmod(workdir, 0o755)
    return Server(kind, free_port(), workdir, extra_config=list(extra_config or []),
                  tail_config=list(tail_config or [])).start()


def remove_server(server: Server) -> None:
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def ssh_argv(server: Server, user: TestUser, *command: str, key: bool = True,
             password: str | None = None, tty: bool | None = None,
             options: list[str] | None = None,
             flags: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment for the real ssh client logging in to ``server``."""
    # The caller's options come first: for ssh the first value obtained wins.
    argv = ["ssh"]
    for option in options or []:
        argv += ["-o", option]
    argv += [
        "-p", str(server.port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=20",
        "-o", "IdentitiesOnly=yes", "-F", "/dev/null",
    ]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    if password is not None:
        askpass = server.workdir / f"askpass-{user.name}"
        askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
        askpass.chmod(0o700)
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        argv += ["-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1"]
    else:
        argv += ["-o", "BatchMode=yes"]
    if key and user.key_path is not None and password is None:
        argv += ["-i", str(user.key_path), "-o", "PreferredAuthentications=publickey"]
    if not flags or "-v" not in flags:
        argv += ["-o", "LogLevel=ERROR"]
    if tty is True:
        argv.append("-tt")
    elif tty is False:
        argv.append("-T")
    argv += list(flags or [])
    argv += [f"{user.name}@127.0.0.1", *command]
    return argv, env


def ssh(server: Server, user: TestUser, *command: str, input: bytes | None = None,
        timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    argv, env = ssh_argv(server, user, *command, **kwargs)
    return subprocess.run(argv, input=input if input is not None else b"", env=env,
                          capture_output=True, timeout=timeout)


def ssh_background(server: Server, user: TestUser, *command: str, **kwargs) -> subprocess.Popen:
    """A client left running (stdin a pipe), for tests that look at a live session."""
    argv, env = ssh_argv(server, user, *command, **kwargs)
    return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    uid: int
    sid: int
    tty: str
    stat: str
    args: str


def processes() -> dict[int, Proc]:
    out = subprocess.run(["ps", "-e", "-ww", "-o", "pid=,ppid=,uid=,sid=,tty=,stat=,args="],
                         capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split(None, 6)
        if len(parts) < 7:
            parts.append("")
        pid, ppid, uid, sid, tty, stat, args = parts
        table[int(pid)] = Proc(int(pid), int(ppid), int(uid), int(sid), tty, stat, args)
    return table


def descendants(root: int) -> list[Proc]:
    table = processes()
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for proc in table.values():
            if proc.ppid == parent:
                found.append(proc)
                frontier.append(proc.pid)
    return found


def wait_until(predicate, timeout: float = 15, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
