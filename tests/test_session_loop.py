"""The session process is one thread (privsep/session/loop.py), as sshd's is:
its /proc task list, `pstree -alpu` under the monitor beside sshd's, and the
key exchange the server starts on an idle connection when RekeyLimit's time
is up (the loop's timer, no thread).  Also the packet layer's paramiko
internals that the loop reads (privsep/session/packets.py)."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
from paramiko.packet import Packetizer

from tests.daemon import (
    Server, descendants, processes, remove_server, ssh_argv, ssh_background, start_server,
    wait_until,
)

#: Packetizer state packets.SessionPacketizer reads to find a packet's end.
LOOP_PACKETIZER_STATE = ["block_size_in", "block_engine_in", "etm_in", "aead_in", "mac_size_in",
                         "socket", "remainder", "keepalive_last"]


def test_packetizer_state_the_loop_reads_exists() -> None:
    import socket
    a, b = socket.socketpair()
    try:
        packetizer = Packetizer(a)
        for name in LOOP_PACKETIZER_STATE:
            assert hasattr(packetizer, "_Packetizer__" + name), name
        assert callable(getattr(packetizer, "_trigger_rekey"))
    finally:
        a.close()
        b.close()


def _session_process(server: Server, user, tty: bool):
    """The logged-in session process: user@pts/N or user@notty."""
    suffix = re.compile(r"@pts/\d+$" if tty else r"@notty$")
    return wait_until(lambda: [p for p in descendants(server.pid)
                               if p.uid == user.uid and suffix.search(p.args)])[0]


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.parametrize("tty", [True, False], ids=["pty-shell", "exec"])
def test_one_thread_per_session_process(privsep_server: Server, openssh_server: Server, user,
                                        tty: bool) -> None:
    counts = {}
    for server in (privsep_server, openssh_server):
        client = ssh_background(server, user, *([] if tty else ["sleep 30"]), tty=tty)
        try:
            session = _session_process(server, user, tty)
            # once the program runs and the loop (or sshd's) waits for it
            wait_until(lambda: [p for p in descendants(session.pid)])
            time.sleep(0.3)
            counts[server.kind] = _threads(session.pid)
        finally:
            client.kill()
            client.wait()
    assert counts == {"privsep": 1, "openssh": 1}


def _pstree_under_monitor(server: Server, user) -> list[str]:
    """`pstree -alpu` from the [priv] monitor down, with what differs by
    nature taken out: pids, the daemon's name, the pts number."""
    session = _session_process(server, user, tty=True)
    wait_until(lambda: [p for p in descendants(session.pid) if p.args == "-bash"])
    monitor = processes()[session.ppid]
    out = subprocess.run(["pstree", "-alpu", str(monitor.pid)], capture_output=True, text=True,
                         check=True).stdout
    lines = []
    for line in out.splitlines():
        line = re.sub(r",\d+", ",PID", line)
        line = re.sub(r"\b(privsep-sshd|sshd)\b", "DAEMON", line)
        line = re.sub(r"pts/\d+", "pts/N", line)
        lines.append(line.rstrip())
    return lines


def test_pstree_under_the_monitor_as_sshd(privsep_server: Server, openssh_server: Server,
                                          user) -> None:
    trees = {}
    for server in (privsep_server, openssh_server):
        client = ssh_background(server, user, tty=True)
        try:
            trees[server.kind] = _pstree_under_monitor(server, user)
        finally:
            client.kill()
            client.wait()
    # monitor -> session process -> -bash, and no {thread} entry anywhere
    assert len(trees["privsep"]) == 3, trees["privsep"]
    assert not [line for line in trees["privsep"] if "{" in line], trees["privsep"]
    assert trees["privsep"] == trees["openssh"]


# --- RekeyLimit's time half: the server starts a key exchange on an idle connection ---

IDLE_REKEY = ["RekeyLimit default 5"]


@pytest.fixture(scope="module")
def idle_rekey_servers(pam_service):
    servers = {kind: start_server(kind, IDLE_REKEY) for kind in ("privsep", "openssh")}
    yield servers
    for server in servers.values():
        remove_server(server)


def _client_kex_log(server: Server, user, seconds: int) -> list[str]:
    """The client's KEXINIT lines over an idle session of ``seconds``."""
    argv, env = ssh_argv(server, user, f"sleep {seconds}; echo done", flags=["-v"])
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=seconds + 60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == b"done\n"
    return re.findall(r"SSH2_MSG_KEXINIT (sent|received)", result.stderr.decode())


def test_idle_connection_rekeyed_by_the_server(idle_rekey_servers, user) -> None:
    """With no data moving, the server's KEXINIT comes first (the client
    answers with its own): the time half of RekeyLimit, as sshd does it."""
    logs = {kind: _client_kex_log(server, user, 8) for kind, server in idle_rekey_servers.items()}
    for kind, lines in logs.items():
        # the first exchange: the client sends, then receives; then the server starts one
        assert lines[:2] == ["sent", "received"], (kind, lines)
        assert lines[2:4] == ["received", "sent"], (kind, lines)
    assert len(logs["privsep"]) == len(logs["openssh"]), logs
