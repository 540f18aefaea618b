"""The pty-reuse race of issue 11.2, end to end with the real daemon.

A logged-in user (paramiko, an unmodified client) loops: open a session
channel, ask for a pty, close the channel.  Meanwhile the test, playing the
other users of the machine, keeps allocating ptys (os.openpty in a thread),
gives each to a victim user (owner the victim, group tty, mode 0620, as a
login would) and holds it.

Before the fix (commit 80f0075) the monitor closed its own copies of the pty
after passing them on and later released "the tty of that name": once the
session process had closed its ends, the kernel could give that number to
one of the victim's allocations, and the release then made the victim's live
terminal root:root 0666 (12 of 90 cycles).  Now the monitor holds the master
until it has released the pty, so the number is nobody else's until then:
no victim pty may end up root:root or mode 0666.
"""

from __future__ import annotations

import grp
import os
import re
import threading
import time

import paramiko
import pytest

from tests.daemon import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

CYCLES = 90
#: Victim ptys held at most (a container's devpts instance takes 3072).
MAX_VICTIM_PTYS = 2500
#: The victim allocates one pty this often.
VICTIM_PERIOD = 0.002


def _user_ptys(uid: int) -> list[str]:
    found = []
    for entry in os.scandir("/dev/pts"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(entry.path)
            except FileNotFoundError:
                pass
    return found


class Allocator(threading.Thread):
    """Another user's logins: ptys allocated, given to ``uid``, and held."""

    def __init__(self, uid: int) -> None:
        super().__init__(daemon=True)
        self.uid = uid
        self.gid = grp.getgrnam("tty").gr_gid
        self.held: list[tuple[int, str]] = []  # (master, /dev/pts/N)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() and len(self.held) < MAX_VICTIM_PTYS:
                master, slave = os.openpty()
                tty = os.ttyname(slave)
                os.chown(tty, self.uid, self.gid)
                os.chmod(tty, 0o620)
                os.close(slave)  # the master keeps the pts alive
                self.held.append((master, tty))
                time.sleep(VICTIM_PERIOD)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        for master, _ in self.held:
            os.close(master)
        self.held.clear()


def test_pty_release_never_hits_another_users_pty(server_with, user, make_user):
    # LogLevel DEBUG: the pty numbers the session had come from the phase trace
    privsep_server = server_with("LogLevel DEBUG")
    victim = make_user("psv", password=False, key=False)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", privsep_server.port, username=user.name,
                   key_filename=str(user.key_path), allow_agent=False, look_for_keys=False,
                   timeout=20)
    transport = client.get_transport()
    allocator = Allocator(victim.uid)
    started = time.monotonic()
    allocator.start()
    try:
        for _ in range(CYCLES):
            channel = transport.open_session(timeout=10)
            channel.get_pty()
            assert _user_ptys(user.uid), "no pty given to the user"
            channel.close()
            # The session gives it back on its own; wait for that, so that
            # each cycle is one pty (MaxSessions stays out of it).
            wait_until(lambda: not _user_ptys(user.uid), timeout=10, interval=0.002)
        elapsed = time.monotonic() - started
        assert transport.is_active(), "the daemon dropped the connection"
    finally:
        allocator.stop.set()
        allocator.join(10)
        client.close()
    try:
        assert allocator.error is None, repr(allocator.error)
        hijacked = []
        for master, tty in allocator.held:
            st = os.stat(tty)
            if (st.st_uid, st.st_gid) == (0, 0) or st.st_mode & 0o7777 == 0o666:
                hijacked.append(f"{tty} {st.st_uid}:{st.st_gid} {st.st_mode & 0o7777:o}")
        session_ttys = set(re.findall(rf"Allocated pty (/dev/pts/\d+) for {user.name}\b",
                                      privsep_server.log_text()))
        reused = sorted({tty for _, tty in allocator.held} & session_ttys)
        print(f"\n{CYCLES} cycles in {elapsed:.1f}s; {len(allocator.held)} victim ptys held; "
              f"{len(session_ttys)} pty numbers the session had; {len(reused)} of them later "
              f"the victim's; hijacked: {len(hijacked)}")
        assert hijacked == [], f"{len(hijacked)} of the victim's ptys released: {hijacked}"
        # The race was on: numbers the session released went to the victim.
        assert session_ttys and reused, (session_ttys, len(allocator.held))
    finally:
        allocator.close()
