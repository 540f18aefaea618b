"""utmp and wtmp as privsep-sshd writes them, read back with utmpdump and who,
after a normal logout and after the client is killed."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest

from privsep.monitor import loginrec
from tests.daemon import Server, descendants, ssh_background, wait_until


def _utmpdump(path: str) -> list[list[str]]:
    out = subprocess.run(["utmpdump", path], capture_output=True, text=True, check=True).stdout
    return [[field.strip() for field in re.findall(r"\[(.*?)\]", line)] for line in out.splitlines()]


def _pty_session(server: Server, user):
    """A live pty login: (client, monitor pid, pts line)."""
    client = ssh_background(server, user, tty=True)
    shell = wait_until(lambda: [p for p in descendants(server.pid)
                                if p.args == "-bash" and p.uid == user.uid])[0]
    session_pid = shell.ppid
    monitor_pid = [p for p in descendants(server.pid) if p.pid == session_pid][0].ppid
    return client, monitor_pid, shell.tty


def _records_for(path: str, line: str, pid: int) -> list[list[str]]:
    return [r for r in _utmpdump(path) if r[1].isdigit() and int(r[1]) == pid and r[4] == line]


@pytest.mark.parametrize("ending", ["logout", "client-killed"])
def test_login_and_logout_records(privsep_server: Server, user, ending: str) -> None:
    wtmp_before = len(_utmpdump(loginrec.WTMP_PATH))
    client, monitor_pid, line = _pty_session(privsep_server, user)
    # While logged in: USER_PROCESS in utmp with the monitor's pid, and who shows it.
    login = wait_until(lambda: _records_for(loginrec.UTMP_PATH, line, monitor_pid))[0]
    assert login[0] == "7"
    assert login[2] == line[-4:]
    assert login[3] == user.name
    assert login[5] == "127.0.0.1" and login[6] == "127.0.0.1"
    who = subprocess.run(["who"], capture_output=True, text=True).stdout
    assert re.search(rf"^{user.name}\s+{line}\s.*\(127\.0\.0\.1\)$", who, re.M), who

    if ending == "logout":
        client.stdin.write(b"exit\n")
        client.stdin.flush()
        assert client.wait(20) == 0
    else:
        client.send_signal(signal.SIGKILL)
        client.wait()

    # After: the slot is DEAD_PROCESS, no user; wtmp has login then logout.
    def logged_out():
        records = _records_for(loginrec.UTMP_PATH, line, monitor_pid)
        return records if records and records[0][0] == "8" else None
    dead = wait_until(logged_out)[0]
    assert dead[3] == ""
    who = subprocess.run(["who"], capture_output=True, text=True).stdout
    assert not re.search(rf"^{user.name}\s", who, re.M)
    wtmp = _utmpdump(loginrec.WTMP_PATH)[wtmp_before:]
    ours = [r for r in wtmp if r[1].isdigit() and int(r[1]) == monitor_pid and r[4] == line]
    assert [r[0] for r in ours] == ["7", "8"]
    assert ours[0][3] == user.name and ours[1][3] == ""
    # The pty went back to root.
    import os
    st = os.stat(f"/dev/{line}") if os.path.exists(f"/dev/{line}") else None
    assert st is None or st.st_uid == 0
    # `last` reads the same wtmp.
    last = subprocess.run(["last", "-w", "-f", loginrec.WTMP_PATH, user.name],
                          capture_output=True, text=True).stdout
    assert user.name in last and line in last


def test_nothing_left_in_utmp(privsep_server: Server, user) -> None:
    """No USER_PROCESS entry survives a session, whichever way it ended."""
    for _ in range(2):
        client, monitor_pid, line = _pty_session(privsep_server, user)
        client.kill()
        client.wait()
        wait_until(lambda: not [r for r in _utmpdump(loginrec.UTMP_PATH)
                                if r[0] == "7" and r[3] == user.name])
