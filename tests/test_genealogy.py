"""The process genealogy of docs/DESIGN.md, read from ps and /proc while a
session is live, for privsep-sshd and for Debian's sshd side by side."""

from __future__ import annotations

import os
import re
import stat
import time

import pytest

from tests.daemon import Proc, Server, descendants, processes, ssh_background, wait_until


def _title(proc: Proc) -> str:
    """The title without the daemon's name: 'alice [priv]', '-bash'."""
    return re.sub(r"^(privsep-sshd|sshd): ", "", proc.args)


def _login_chain(server: Server, user) -> list[Proc]:
    """listener's descendants down to the user's shell, in order."""
    def chain():
        procs = descendants(server.pid)
        shells = [p for p in procs if p.args == "-bash" and p.uid == user.uid]
        if not shells:
            return None
        table = processes()
        path = [shells[0]]
        while path[-1].ppid != server.pid:
            path.append(table[path[-1].ppid])
        return list(reversed(path))
    return wait_until(chain)


@pytest.fixture
def live_pty_session(any_server: Server, user):
    client = ssh_background(any_server, user, tty=True)
    try:
        yield any_server, user, _login_chain(any_server, user)
    finally:
        client.kill()
        client.wait()


def test_pty_session_genealogy(live_pty_session) -> None:
    server, user, chain = live_pty_session
    monitor, session, shell = chain
    listener = processes()[server.pid]
    assert listener.uid == 0
    if server.kind == "privsep":
        assert re.search(r"\[listener\] \d+ of 10-100 startups$", listener.args), listener.args
    # root monitor -> user's session process -> the user's login shell
    assert monitor.uid == 0 and _title(monitor) == f"{user.name} [priv]"
    tty = shell.tty
    assert re.fullmatch(r"pts/\d+", tty)
    assert session.uid == user.uid and _title(session) == f"{user.name}@{tty}"
    assert shell.uid == user.uid and shell.args == "-bash"
    # the shell leads its own session on the pts, in the foreground
    assert shell.sid == shell.pid
    # (once bash has read its start-up files and waits at the prompt: S, not R)
    assert wait_until(lambda: processes()[shell.pid].stat.startswith("Ss"))
    assert monitor.tty == "?" and session.tty == "?"
    # the net-child is gone after authentication
    assert not [p for p in descendants(server.pid) if "[net]" in p.args]
    st = os.stat(f"/dev/{tty}")
    assert st.st_uid == user.uid
    assert st.st_gid == __import__("grp").getgrnam("tty").gr_gid
    assert stat.S_IMODE(st.st_mode) == 0o620
    # the pts is the shell's controlling terminal
    fields = open(f"/proc/{shell.pid}/stat").read().rsplit(")", 1)[1].split()
    tty_nr = int(fields[4])
    assert os.major(tty_nr) == os.major(st.st_rdev) and os.minor(tty_nr) == os.minor(st.st_rdev)


def test_same_shape_as_openssh(privsep_server: Server, openssh_server: Server, user) -> None:
    shapes = []
    for server in (privsep_server, openssh_server):
        client = ssh_background(server, user, tty=True)
        try:
            chain = _login_chain(server, user)
            shapes.append([(p.uid, re.sub(r"pts/\d+", "pts/N", _title(p))) for p in chain])
        finally:
            client.kill()
            client.wait()
    assert shapes[0] == shapes[1]


def test_notty_title(privsep_server: Server, user) -> None:
    client = ssh_background(privsep_server, user, "sleep 30", tty=False)
    try:
        session = wait_until(lambda: [p for p in descendants(privsep_server.pid)
                                      if p.args.endswith(f"{user.name}@notty")])
        assert session[0].uid == user.uid
    finally:
        client.kill()
        client.wait()


def _status(pid: int) -> dict[str, str]:
    lines = open(f"/proc/{pid}/status").read().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_preauth_net_child_is_sandboxed(privsep_server: Server, user, tmp_path) -> None:
    """Hold the client at the password prompt and read the net-child from /proc."""
    import pwd

    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    client = ssh_background(privsep_server, user, "true", password="unused")
    # Replace the askpass the helper wrote with one that blocks on a fifo.
    askpass = privsep_server.workdir / f"askpass-{user.name}"
    try:
        askpass.write_text(f"#!/bin/sh\ncat {fifo}\n")
        net = wait_until(lambda: [p for p in descendants(privsep_server.pid)
                                  if p.args.endswith(f"{user.name} [net]")])[0]
        priv = processes()[net.ppid]
        # the listener counts the unauthenticated connection
        assert re.search(r"\[listener\] [1-9]\d* of 10-100 startups$",
                         processes()[privsep_server.pid].args)
        assert priv.uid == 0 and priv.args.endswith(f"{user.name} [priv]")
        assert net.args == f"privsep-sshd: {user.name} [net]"
        status = _status(net.pid)
        privsep = pwd.getpwnam("privsep-sshd")
        assert status["Uid"].split() == [str(privsep.pw_uid)] * 4
        assert status["Gid"].split() == [str(privsep.pw_gid)] * 4
        assert status["Groups"].strip() == ""
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[cap], 16) == 0, cap
        assert os.readlink(f"/proc/{net.pid}/root") == "/run/privsep-sshd"
        assert os.listdir("/run/privsep-sshd") == []
        limits = open(f"/proc/{net.pid}/limits").read()
        assert re.search(r"Max file size\s+0\s+0", limits)
        assert re.search(r"Max processes\s+0\s+0", limits)
        assert re.search(r"Max open files\s+1\s+1", limits)
        assert re.search(r"Max core file size\s+0\s+0", limits)
        # only the client socket and the monitor socketpair are open
        fds = {fd: os.readlink(f"/proc/{net.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{net.pid}/fd")}
        assert all(target.startswith("socket:") or target == "/dev/null" for target in fds.values()), fds
        assert sum(target.startswith("socket:") for target in fds.values()) == 2
    finally:
        client.kill()
        client.wait()
        try:
            fd = os.open(fifo, os.O_RDWR)  # never blocks; closing gives the reader EOF
            os.close(fd)
        except OSError:
            pass
