"""PerSourcePenalties end to end (OpenSSH 10; ProcessGeneration 10 only):
the real ssh client fails its password, and the listener refuses its
source for a while, in sshd 10's words.  The table itself is tested
without processes in tests/test_srclimit.py.

There is no sshd 10 on this Debian 12 machine: what sshd 10.0 writes was
read in its source (srclimit.c, sshd.c); tests/test_vm.py is where it can
be compared side by side.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

from tests.daemon import REPO, Server, descendants, privsep_command, ssh, wait_until
from tests.userutil import TestUser

GEN10 = "ProcessGeneration 10"
#: one failed password leaves a deferred 10 s penalty; a second within 8 s
#: makes it more than min (12 s): active, for at most max (14 s).  A failed
#: password takes pam_unix's delay (2 s) and, on a loaded machine, as much
#: again: 8 s leaves room for both.
AUTHFAIL, MIN, MAX = 10, 12, 14
SHORT = f"PerSourcePenalties authfail:{AUTHFAIL} min:{MIN} max:{MAX}"


def _fail_password(server: Server, user: TestUser) -> None:
    result = ssh(server, user, "true", password=user.password + "-wrong")
    assert result.returncode == 255, result.stderr


def _settle() -> None:
    """Let the start-up probe's "noauth" penalty (1 s, deferred) expire, so
    that the first penalty of a test is a new one."""
    time.sleep(2.1)


def _drop_answer(server: Server) -> tuple[bytes, float]:
    """What a plain TCP client reads before the listener closes, and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        data = b""
        while chunk := conn.recv(1024):
            data += chunk
    return data, time.monotonic() - started


def test_failed_passwords_get_the_source_refused_until_the_penalty_expires(
        server_with, user) -> None:
    server = server_with(GEN10, SHORT)
    _settle()
    _fail_password(server, user)
    server.wait_for_log("srclimit_penalise: ipv4: new 127.0.0.1/32 deferred penalty of "
                        f"{AUTHFAIL} seconds for penalty: failed authentication")
    _fail_password(server, user)
    log = server.wait_for_log("srclimit_penalise: 127.0.0.1/32: activating ipv4 penalty of ")
    seconds = int(re.search(r"activating ipv4 penalty of (\d+) seconds for penalty: "
                            r"failed authentication$", log, re.M).group(1))
    assert MIN < seconds <= MAX
    blocked_at = time.monotonic()

    # refused at once, with sshd 10's words to the client and in the log
    answer, took = _drop_answer(server)
    assert answer == b"Not allowed at this time\r\n"
    assert took < 1.0, took
    assert re.search(rf"^drop connection #0 from \[127\.0\.0\.1\]:\d+ on \[127\.0\.0\.1\]:"
                     rf"{server.port} penalty: failed authentication$",
                     server.wait_for_log("drop connection #0"), re.M)
    # the real client too, even with its good key (closed, or reset when its
    # identification was still unread: as with sshd, a race)
    refused = ssh(server, user, "true")
    assert refused.returncode == 255, refused.stderr
    assert refused.stderr.startswith(b"kex_exchange_identification: "), refused.stderr

    # and served again once the penalty ran out (no later than max), the
    # drops above having added nothing to it
    wait_until(lambda: ssh(server, user, "true").returncode == 0, timeout=20, interval=0.5)
    assert time.monotonic() - blocked_at < MAX + 2
    assert time.monotonic() - blocked_at > seconds - 2

    # a successful login earns no penalty
    before = server.log_text().count("srclimit_penalise")
    result = ssh(server, user, "echo in")
    assert (result.returncode, result.stdout) == (0, b"in\n"), result.stderr
    result = ssh(server, user, "echo in", password=user.password)
    assert (result.returncode, result.stdout) == (0, b"in\n"), result.stderr
    time.sleep(0.5)  # the listener reaps the monitors
    assert server.log_text().count("srclimit_penalise") == before
    assert "Traceback" not in server.log_text()


def test_grace_exceeded_penalty(server_with) -> None:
    server = server_with(GEN10, "LoginGraceTime 1",
                         "PerSourcePenalties grace-exceeded:30 min:5 noauth:0")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
        idle.recv(256)  # the banner; then nothing until LoginGraceTime ends it
        log = server.wait_for_log("penalty: exceeded LoginGraceTime")
    assert re.search(r"^Timeout before authentication for connection from 127\.0\.0\.1 to "
                     r"127\.0\.0\.1, pid = \d+$", log, re.M)
    assert re.search(r"^srclimit_penalise: ipv4: new 127\.0\.0\.1/32 active penalty of 30 "
                     r"seconds for penalty: exceeded LoginGraceTime$", log, re.M), log
    answer, _ = _drop_answer(server)
    assert answer == b"Not allowed at this time\r\n"
    server.wait_for_log("penalty: exceeded LoginGraceTime\n")


def test_exempt_sources_are_never_refused(server_with, user) -> None:
    server = server_with(GEN10, SHORT, "PerSourcePenaltyExemptList 10.0.0.0/8,127.0.0.1")
    for _ in range(3):
        _fail_password(server, user)
    result = ssh(server, user, "echo in")
    assert (result.returncode, result.stdout) == (0, b"in\n"), result.stderr
    log = server.log_text()
    assert "srclimit_penalise" not in log and "drop connection" not in log


def test_penalties_off(server_with, user) -> None:
    server = server_with(GEN10, "PerSourcePenalties no")
    for _ in range(3):
        _fail_password(server, user)
    assert ssh(server, user, "true").returncode == 0
    assert "srclimit_penalise" not in server.log_text()


def test_generation_9_has_no_penalties(server_with, user) -> None:
    """sshd 9.2 has no PerSourcePenalties: generation 9 reads the keyword,
    says it does not use it, and refuses no one for failed passwords."""
    server = server_with("ProcessGeneration 9", SHORT)
    for _ in range(3):
        _fail_password(server, user)
    result = ssh(server, user, "echo in")
    assert (result.returncode, result.stdout) == (0, b"in\n"), result.stderr
    log = server.log_text()
    assert re.search(r"sshd_config line 2: Unsupported option PerSourcePenalties$", log, re.M), log
    assert "srclimit_penalise" not in log and "drop connection" not in log


def test_generation_10_max_startups_drop_in_sshd_10s_words(server_with) -> None:
    """sshd 10's drop_connection words MaxStartups's drop too: its reason
    "Maxstartups" ends the line, and the client reads the same sentence."""
    server = server_with(GEN10, "MaxStartups 1:100:1", "PerSourcePenalties no")
    title = lambda: subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(server.pid)],  # noqa: E731
                                   capture_output=True, text=True).stdout
    wait_until(lambda: "[listener] 0 of 1-1 startups" in title())  # the start-up probe is gone
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
        assert held.recv(64).startswith(b"SSH-2.0-")
        wait_until(lambda: "[listener] 1 of 1-1 startups" in title())
        answer, _ = _drop_answer(server)
        assert answer == b"Not allowed at this time\r\n"
        log = server.wait_for_log(" Maxstartups\n")
    assert re.search(rf"^drop connection #1 from \[127\.0\.0\.1\]:\d+ on \[127\.0\.0\.1\]:"
                     rf"{server.port} Maxstartups$", log, re.M), log


def test_T_prints_them_in_generation_10_only(tmp_path) -> None:
    key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    printed = {}
    for generation in ("9", "10"):
        config.write_text(f"HostKey {key}\nProcessGeneration {generation}\n"
                          "PerSourcePenalties no\nPerSourcePenalties authfail:1m\n"
                          "PerSourcePenaltyExemptList 192.0.2.0/24\n")
        done = subprocess.run([*privsep_command(), "-T", "-f", str(config)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        printed[generation] = [line for line in done.stdout.splitlines()
                               if line.startswith("persourcepenalt")]
    assert printed["9"] == []  # as sshd 9.2, which has neither keyword
    assert printed["10"] == [  # "no" then a field: sshd 10 turns them on
        "persourcepenalties crash:90 authfail:60 noauth:1 grace-exceeded:10 refuseconnection:10 "
        "max:600 min:15 max-sources4:65536 max-sources6:65536 overflow:permissive "
        "overflow6:permissive",
        "persourcepenaltyexemptlist 192.0.2.0/24"]


def test_a_crashed_preauth_child_earns_the_crash_penalty(server_with) -> None:
    """sshd-auth killed by SIGSEGV: the monitor exits EXIT_CHILD_CRASH, the
    listener writes sshd 10's line and refuses the source for "crash"."""
    server = server_with(GEN10, "PerSourcePenalties crash:30 noauth:0")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")
        auth = wait_until(lambda: [p for p in descendants(server.pid)
                                   if p.args.startswith("privsep-sshd-auth: ")])[0]
        os.kill(auth.pid, signal.SIGSEGV)
        log = server.wait_for_log("penalty: caused crash")
    assert re.search(r"^Session process \d+ unpriv child crash for connection from 127\.0\.0\.1 "
                     r"to 127\.0\.0\.1$", log, re.M), log
    # new, or added to the start-up probe's 0 s "noauth" penalty if that
    # has not expired yet (within the same second), as in sshd
    assert re.search(r"^srclimit_penalise: (ipv4: new 127\.0\.0\.1/32 active|127\.0\.0\.1/32: "
                     r"activating ipv4) penalty of 30 seconds for penalty: caused crash$",
                     log, re.M), log
    answer, _ = _drop_answer(server)
    assert answer == b"Not allowed at this time\r\n"
    server.wait_for_log("penalty: caused crash\n")
    assert "Traceback" not in server.log_text()
