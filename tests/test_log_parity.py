"""The log, line for line: the same scenario against Debian's sshd 9.2 and
this daemon, at LogLevel VERBOSE and INFO (and ERROR, FATAL and QUIET for
a few), compared whole after normalising only what must differ: pids,
ports, and the fingerprint of a key that differs between the two runs
(none here: the same user and key log in to both)."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace

import paramiko
import pytest

from tests.daemon import (Server, descendants, processes, ssh, ssh_argv, ssh_background,
                          wait_until)
from tests.userutil import TestUser

# the port the harness's readiness probe and each client came from, pids
_NORMALISE = [
    (re.compile(r"\bport \d+"), "port N"),
    (re.compile(r"\bpid \d+"), "pid N"),
    # the kernel's next free pty, shared with whatever else runs here
    (re.compile(r"\bpts/\d+"), "pts/N"),
    # packet bytes: each daemon's own KEXINIT, EXT_INFO and host keys differ
    # (test_verbose_killed_client checks the numbers themselves)
    (re.compile(r"^Transferred: sent \d+, received \d+ bytes$"),
     "Transferred: sent N, received N bytes"),
]


def normalised(text: str) -> list[str]:
    """The log's lines with ports and pids made equal, the listener's
    start-up line dropped (its wording is the daemon's own)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("Server listening on "):
            continue
        for pattern, repl in _NORMALISE:
            line = pattern.sub(repl, line)
        lines.append(line)
    return lines


def settled_log(server: Server, last: str | None, timeout: float = 15) -> list[str]:
    """The server's normalised log once ``last`` (a regular expression) has
    been written and nothing more came for a moment; with ``last`` None
    (a level that writes nothing for the scenario), after that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log_text()
        if last is None or re.search(last, text, re.M):
            time.sleep(0.5 if last is not None else 1.5)  # anything that follows
            return normalised(server.log_text())
        time.sleep(0.05)
    raise AssertionError(f"{last!r} not in {server.kind} log:\n{server.log_text()}")


Scenario = Callable[[Server, TestUser], None]


def _key(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true").returncode == 0


def _key_tty(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true", tty=True).returncode == 0


def _password(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true", password=user.password).returncode == 0


def _bad_password(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true", password="not-" + str(user.password)).returncode == 255


_KBDINT = ["PreferredAuthentications=keyboard-interactive"]


def _kbdint(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true", password=user.password, options=_KBDINT).returncode == 0


def _bad_kbdint(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true", password="not-" + str(user.password),
               options=_KBDINT).returncode == 255


def _invalid_user_kbdint(server: Server, user: TestUser) -> None:
    ghost = replace(user, name="nosuchuser" + user.name[-6:])
    assert ssh(server, ghost, "true", password="x", options=_KBDINT).returncode == 255


def _invalid_user(server: Server, user: TestUser) -> None:
    ghost = replace(user, name="nosuchuser" + user.name[-6:])
    assert ssh(server, ghost, "true", password="x").returncode == 255


def _too_many(server: Server, user: TestUser) -> None:
    result = ssh(server, user, "true", password="wrong",
                 options=["NumberOfPasswordPrompts=8"])
    assert result.returncode == 255


def _no_kex(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true",
               options=["KexAlgorithms=diffie-hellman-group1-sha1"]).returncode == 255


def _no_cipher(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true", options=["Ciphers=3des-cbc"]).returncode == 255


def _no_host_key(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true", options=["HostKeyAlgorithms=ssh-dss"]).returncode == 255


def _no_mac(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true", options=["Ciphers=aes128-ctr",
                                              "MACs=hmac-sha1"]).returncode == 255


def _send_banner(server: Server, data: bytes) -> bytes:
    """Connect, send ``data`` as the client's identification, and read what
    the server says until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass  # closed with our extra bytes unread
    return received


def _chroot_refused(server: Server, user: TestUser) -> None:
    assert ssh(server, user, "true").returncode == 255


def _garbage_banner(server: Server, user: TestUser) -> None:
    assert _send_banner(server, b"GET / HTTP/1.0\r\n\r\n").startswith(b"SSH-2.0-")


def _old_protocol(server: Server, user: TestUser) -> None:
    assert _send_banner(server, b"SSH-1.5-OldClient\r\n").startswith(b"SSH-2.0-")


def _bad_version(server: Server, user: TestUser) -> None:
    assert _send_banner(server, b"SSH-2.0\r\n").startswith(b"SSH-2.0-")


def _mux(server: Server, user: TestUser) -> None:
    """Two sessions through a ControlMaster, each closed while the
    connection lives on, then the master's exit: sshd's "Close session"
    is then certain (the client's CLOSE is read long before any
    DISCONNECT), where after a plain ``ssh host true`` it is a race."""
    path = str(server.workdir / "mux")
    argv, env = ssh_argv(server, user, flags=["-M", "-S", path, "-N"])
    master = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until(lambda: os.path.exists(path) or master.poll() is not None)
        assert master.poll() is None, master.stderr.read()
        for n, tty in enumerate((None, True), start=1):
            assert ssh(server, user, "true", tty=tty, flags=["-S", path]).returncode == 0
            wait_until(lambda n=n: server.log_text().count("Close session: ") == n)
        assert ssh(server, user, flags=["-S", path, "-O", "exit"]).returncode == 0
        master.wait(15)
    finally:
        master.kill()
        master.wait()


def _killed_client(server: Server, user: TestUser) -> None:
    """A pty session whose client is killed (SIGKILL): the connection ends
    with no DISCONNECT, the client's kernel closing the socket."""
    # a command line of this run only (the other daemon's may linger)
    command = f"sleep 60.{time.monotonic_ns()}"
    client = ssh_background(server, user, command, tty=True)
    try:
        # until the command runs: killed earlier, sshd's child may still be
        # setting up the terminal, and logs that it lost it
        wait_until(lambda: subprocess.run(["pgrep", "-u", user.name, "-fx", command],
                                          capture_output=True).returncode == 0
                   or client.poll() is not None)
        assert client.poll() is None, client.stderr.read()
    finally:
        client.kill()
        client.wait()


def _reset_client(server: Server, user: TestUser) -> None:
    """A pty session pouring out output whose client is stopped, then
    killed with that output unread: its kernel answers with a reset, and
    the server's read fails (sshd: "Read error", and nothing more).  The
    program is hung up all the same."""
    client = ssh_background(server, user, "yes", tty=True)
    try:
        wait_until(lambda: "Starting session: command on pts/" in server.log_text()
                   or client.poll() is not None)
        assert client.poll() is None, client.stderr.read()
        os.kill(client.pid, signal.SIGSTOP)
        time.sleep(1)  # the socket's buffers fill up
    finally:
        client.kill()
        client.wait()
    wait_until(lambda: not any(proc.uid == user.uid and proc.args == "yes"
                               for proc in processes().values()))


def _reset_during_download(server: Server, user: TestUser) -> None:
    """A client reading a download as it comes, whose socket is then closed
    with a reset (SO_LINGER 0) while the server is still sending: the
    server meets the reset in a read or in a write; sshd says "Read error"."""
    key = paramiko.Ed25519Key.from_private_key_file(str(user.key_path))
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    transport = paramiko.Transport(sock)
    try:
        transport.connect(username=user.name, pkey=key)
        channel = transport.open_session()
        channel.exec_command("cat /dev/zero")
        received = 0
        while received < 4 << 20:
            chunk = channel.recv(65536)
            assert chunk, "the download ended early"
            received += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()  # under paramiko's feet: a reset, with data still coming
        transport.close()
    wait_until(lambda: not any(proc.uid == user.uid and proc.args == "cat /dev/zero"
                               for proc in processes().values()))


def _grace_silent(server: Server, user: TestUser) -> None:
    """A client that says nothing after the server's identification, until
    LoginGraceTime drops it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        assert sock.recv(256).startswith(b"SSH-2.0-")
        try:
            assert sock.recv(4096) == b""
        except ConnectionResetError:
            pass
    wait_until(lambda: not descendants(server.pid))


def _grace_at_password(server: Server, user: TestUser) -> None:
    """A client held at its password prompt (mid-authentication, the user
    named) until LoginGraceTime drops it."""
    client = ssh_background(server, user, "true", password="x")
    askpass = server.workdir / f"askpass-{user.name}"
    askpass.write_text("#!/bin/sh\nsleep 60\n")
    try:
        wait_until(lambda: [p for p in descendants(client.pid) if p.args == "sleep 60"])
        wait_until(lambda: not descendants(server.pid))  # the connection is gone
    finally:
        client.kill()
        client.wait()


# name: (scenario, extra server config, regular expression of the last line)
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...], str]] = {
    "publickey": (_key, (), r"^Disconnected from user "),
    "publickey-pty": (_key_tty, (), r"^Disconnected from user "),
    "multiplexed": (_mux, (), r"^Disconnected from user "),
    "killed-client": (_killed_client, (), r"^Closing connection to "),
    "reset-client": (_reset_client, (), r"^Read error from remote host "),
    "reset-during-download": (_reset_during_download, (),
                              r"^(Read error from remote host |Connection reset by user )"),
    "password": (_password, (), r"^Disconnected from user "),
    "bad-password": (_bad_password, (), r"^Connection closed by authenticating user "),
    "keyboard-interactive": (_kbdint, ("KbdInteractiveAuthentication yes",),
                             r"^Disconnected from user "),
    "bad-keyboard-interactive": (_bad_kbdint, ("KbdInteractiveAuthentication yes",),
                                 r"^Connection closed by authenticating user "),
    "invalid-user": (_invalid_user, (), r"^Connection closed by invalid user "),
    "invalid-user-keyboard-interactive": (_invalid_user_kbdint,
                                          ("KbdInteractiveAuthentication yes",),
                                          r"^Connection closed by invalid user "),
    "too-many-failures": (_too_many, ("MaxAuthTries 3",), r"Too many authentication failures"),
    "chroot-refused": (_chroot_refused, ("ChrootDirectory %h",),
                       r"^bad ownership or modes for chroot directory "),
    "garbage-banner": (_garbage_banner, (), r"^banner exchange: "),
    "old-protocol": (_old_protocol, (), r"^banner exchange: "),
    "bad-version": (_bad_version, (), r"^banner exchange: "),
    "no-kex": (_no_kex, (), r"^Unable to negotiate"),
    "no-cipher": (_no_cipher, (), r"^Unable to negotiate"),
    "no-host-key": (_no_host_key, (), r"^Unable to negotiate"),
    "no-mac": (_no_mac, ("MACs hmac-sha2-512",), r"^Unable to negotiate"),
    # Debian 12's sshd writes nothing when LoginGraceTime runs out
    "grace-timeout": (_grace_silent, ("LoginGraceTime 2",), r"^Connection from "),
    "grace-timeout-at-password": (_grace_at_password, ("LoginGraceTime 3",),
                                  r"^Connection from "),
}


#: the scenarios whose one session ends with the connection (``ssh host
#: true``): its "Close session" races the client's DISCONNECT
RACING_CLOSE = {"publickey", "publickey-pty", "password", "keyboard-interactive"}
#: sshd's "Close session" for the session the client's DISCONNECT ends
_CLOSE = re.compile(r"Close session: user (\S+) from 127\.0\.0\.1 port N id 0")


def _without_racing_close(lines: list[str], user: TestUser) -> list[str]:
    """The lines without a "Close session" that sits right before the
    "Received disconnect" of the same client, and only there.

    sshd writes that one only when its loop handled the client's CLOSE
    before the DISCONNECT that follows it at once (session.c's close at
    channel garbage collection; measured on Debian's 9.2: 0 of 20 plain
    ``ssh host true``, 4 of 10 with ``-tt``).  This daemon closes a
    session at the same point of its loop (SessionProcess.collect_closed),
    so it too writes it or not by the packets' timing.  Where it is
    written, its words are checked here; the "multiplexed" scenario,
    where both daemons must write it, compares it whole."""
    kept = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if line.startswith("Close session: ") and following.startswith("Received disconnect "):
            match = _CLOSE.fullmatch(line)
            assert match and match.group(1) == user.name, line
            continue
        kept.append(line)
    return kept


#: the scenarios whose client resets the connection while the server
#: sends: sshd meets the reset in its read ("Read error", most often) or,
#: when it lands between its poll and its write, in the write
#: (sshpkt_fatal's "Connection reset by user"), both measured; so does this
#: daemon, whose loop reads the socket first too
RACING_RESET = {"reset-during-download"}
_RESET = re.compile(r"^(Read error from remote host 127\.0\.0\.1 port N: Connection reset by "
                    r"peer|Connection reset by user \S+ 127\.0\.0\.1 port N)$")


#: the probe's last line at each level (QUIET and FATAL write none)
_PROBE_LAST = {"ERROR": r"^kex_exchange_identification", "FATAL": None, "QUIET": None}
#: nothing to wait for: the level writes no line for the scenario
SILENT = ""


def _compare(server_with, user: TestUser, level: str, name: str,
             last_at_level: str | None = None,
             raw: dict[str, str] | None = None) -> list[str]:
    """Both daemons' normalised logs for the scenario, asserted equal;
    ``raw``, when given, gets each one's log as written."""
    scenario, extra, last = SCENARIOS[name]
    logs = {}
    for kind in ("openssh", "privsep"):
        server = server_with(f"LogLevel {level}", *extra, kind=kind)
        # the harness's readiness probe (connect, close) comes first in both
        settled_log(server, _PROBE_LAST.get(level, r"^Connection closed by 127\.0\.0\.1 port \d+$"))
        scenario(server, user)
        logs[kind] = settled_log(server, None if last_at_level == SILENT
                                 else last_at_level or last)
        if raw is not None:
            raw[kind] = server.log_text()
    if name in RACING_CLOSE:
        for kind in logs:
            logs[kind] = _without_racing_close(logs[kind], user)
    if name in RACING_RESET:
        for kind in logs:
            logs[kind] = [_RESET.sub("RESET", line) for line in logs[kind]]
    assert logs["privsep"] == logs["openssh"], \
        "\n".join(["--- sshd", *logs["openssh"], "--- privsep-sshd", *logs["privsep"]])
    return logs["openssh"]


def _assert_last_lines(lines: list[str], first: str, expected: list[str]) -> None:
    """The lines from the last one starting with ``first`` on match
    ``expected``'s patterns, one for one."""
    start = max(i for i, line in enumerate(lines) if line.startswith(first))
    assert len(lines[start:]) == len(expected), lines
    for line, pattern in zip(lines[start:], expected):
        assert re.fullmatch(pattern, line), (line, pattern)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_verbose(server_with, user: TestUser, name: str) -> None:
    lines = _compare(server_with, user, "VERBOSE", name)
    assert not any(line.startswith("trace: ") for line in lines)


@pytest.mark.parametrize("name", ["publickey", "password", "bad-password", "invalid-user",
                                  "keyboard-interactive", "bad-keyboard-interactive",
                                  "too-many-failures", "no-kex"])
def test_info(server_with, user: TestUser, name: str) -> None:
    lines = _compare(server_with, user, "INFO", name)
    assert not any(line.startswith(("Connection from ", "Postponed ", "Accepted key "))
                   for line in lines)


def test_verbose_publickey_words(server_with, user: TestUser) -> None:
    """The lines the issue named, there in sshd's order (the comparison
    above could pass with both daemons silent)."""
    lines = _compare(server_with, user, "VERBOSE", "publickey")
    fp = r"ED25519 SHA256:[A-Za-z0-9+/]{43}"
    expected = [
        r'Connection from 127\.0\.0\.1 port N on 127\.0\.0\.1 port N rdomain ""',
        rf"Accepted key {fp} found at {user.home}/\.ssh/authorized_keys:1",
        rf"Postponed publickey for {user.name} from 127\.0\.0\.1 port N ssh2 \[preauth\]",
        rf"Accepted key {fp} found at {user.home}/\.ssh/authorized_keys:1",
        rf"Accepted publickey for {user.name} from 127\.0\.0\.1 port N ssh2: {fp}",
        r"User child is on pid N",
        rf"Starting session: command for {user.name} from 127\.0\.0\.1 port N id 0",
        r"Received disconnect from 127\.0\.0\.1 port N:11: disconnected by user",
        rf"Disconnected from user {user.name} 127\.0\.0\.1 port N",
    ]
    _assert_last_lines(lines, "Connection from", expected)


def test_verbose_close_session(server_with, user: TestUser) -> None:
    """sshd's "Close session" once each multiplexed session is over, before
    the next one starts, with its number reused (the comparison in
    _compare checks that it is sshd's; this, that it is there at all)."""
    lines = _compare(server_with, user, "VERBOSE", "multiplexed")
    peer = r"127\.0\.0\.1 port N"
    expected = [
        rf"Accepted publickey for {user.name} from {peer} ssh2: .*",
        r"User child is on pid N",
        rf"Starting session: command for {user.name} from {peer} id 0",
        rf"Close session: user {user.name} from {peer} id 0",
        rf"Starting session: command on pts/N for {user.name} from {peer} id 0",
        rf"Close session: user {user.name} from {peer} id 0",
        rf"Received disconnect from {peer}:11: disconnected by user",
        rf"Disconnected from user {user.name} {peer}",
    ]
    _assert_last_lines(lines, "Accepted publickey", expected)


_TRANSFERRED = re.compile(r"^Transferred: sent (\d+), received (\d+) bytes$", re.M)


def test_verbose_killed_client(server_with, user: TestUser) -> None:
    """A client killed in a pty session: sshd's four last lines, in its
    order, with no "Disconnected from user" (no DISCONNECT came); and
    byte counts near sshd's.  What the client sent is the same packets to
    both (measured equal: 3472); what each server sent differs by its own
    KEXINIT, EXT_INFO, key exchange reply and hostkeys-00 (measured 3476
    here, 3824 for sshd), hence the margins."""
    raw: dict[str, str] = {}
    lines = _compare(server_with, user, "VERBOSE", "killed-client", raw=raw)
    peer = r"127\.0\.0\.1 port N"
    expected = [
        rf"Starting session: command on pts/N for {user.name} from {peer} id 0",
        rf"Connection closed by {peer}",
        rf"Close session: user {user.name} from {peer} id 0",
        r"Transferred: sent N, received N bytes",
        rf"Closing connection to {peer}",
    ]
    _assert_last_lines(lines, "Starting session", expected)
    (ours_sent, ours_received), (sshd_sent, sshd_received) = (
        tuple(map(int, _TRANSFERRED.findall(raw[kind])[-1])) for kind in ("privsep", "openssh"))
    numbers = (ours_sent, ours_received, sshd_sent, sshd_received)
    assert min(numbers) > 0, numbers
    assert abs(ours_received - sshd_received) <= sshd_received // 10, numbers
    assert abs(ours_sent - sshd_sent) <= sshd_sent * 15 // 100, numbers


def test_error_level(server_with, user: TestUser) -> None:
    """At LogLevel ERROR a refused password leaves only the probe's
    banner-exchange error in both logs."""
    lines = _compare(server_with, user, "ERROR", "bad-password",
                     last_at_level=r"^kex_exchange_identification")
    assert lines == ["kex_exchange_identification: Connection closed by remote host"]


def test_error_level_keyboard_interactive(server_with, user: TestUser) -> None:
    """A refused keyboard-interactive answer is an ERROR line of PAM's in
    sshd (auth-pam.c, as its monitor reads the PAM thread's verdict)."""
    lines = _compare(server_with, user, "ERROR", "bad-keyboard-interactive",
                     last_at_level=r"^PAM: ")
    assert lines == ["kex_exchange_identification: Connection closed by remote host",
                     f"PAM: Authentication failure for {user.name} from 127.0.0.1"]


@pytest.mark.parametrize("level", ["QUIET", "FATAL"])
@pytest.mark.parametrize("name", ["publickey", "password", "bad-password", "invalid-user",
                                  "bad-keyboard-interactive", "no-kex", "garbage-banner"])
def test_quiet_and_fatal(server_with, user: TestUser, level: str, name: str) -> None:
    """At LogLevel QUIET and FATAL a login, a refusal or a bad client
    leaves nothing in either log (sshd has no fatal line for them)."""
    assert _compare(server_with, user, level, name, last_at_level=SILENT) == []


@pytest.mark.parametrize("level", ["QUIET", "FATAL", "ERROR"])
def test_fatal_chroot(server_with, user: TestUser, level: str) -> None:
    """A login that fails on sshd's fatal() (a chroot the user owns): its
    line is there down to LogLevel FATAL, and gone at QUIET, as in sshd."""
    lines = _compare(server_with, user, level, "chroot-refused",
                     last_at_level=SILENT if level == "QUIET" else None)
    fatal = f'bad ownership or modes for chroot directory "{user.home}"'
    assert lines == {"QUIET": [], "FATAL": [fatal],
                     "ERROR": ["kex_exchange_identification: Connection closed by remote host",
                               fatal]}[level]


def test_trace_only_at_debug(server_with, user: TestUser) -> None:
    """The phase trace is DEBUG chatter: there at LogLevel DEBUG."""
    server = server_with("LogLevel DEBUG")
    assert ssh(server, user, "true").returncode == 0
    log = server.wait_for_log("monitor: PAM pam_end")
    assert re.search(r"^trace: pid \d+ uid 0 monitor: forked session process", log, re.M)


@pytest.mark.parametrize("name", ["grace-timeout", "grace-timeout-at-password"])
def test_grace_timeout_writes_nothing(server_with, user: TestUser, name: str) -> None:
    """LoginGraceTime's end leaves no line in Debian 12's sshd (its
    CVE-2024-6387 fix made sigdie() silent), nor here in generation 9: the
    connection's last line is its "Connection from"."""
    lines = _compare(server_with, user, "VERBOSE", name)
    _assert_last_lines(lines, "Connection from", [
        r'Connection from 127\.0\.0\.1 port N on 127\.0\.0\.1 port N rdomain ""'])


@pytest.mark.parametrize("round_", range(3))
def test_reset_during_download(server_with, user: TestUser, round_: int) -> None:
    """A reset while the server sends bulk data: one line, one of sshd's
    two for it (a read's "Read error" or a write's "Connection reset by
    user"), with no "Close session" and no "Disconnected from user"
    (three rounds: which call meets the reset is the packets' timing)."""
    lines = _compare(server_with, user, "VERBOSE", "reset-during-download")
    _assert_last_lines(lines, "Starting session", [
        rf"Starting session: command for {user.name} from 127\.0\.0\.1 port N id 0", "RESET"])
