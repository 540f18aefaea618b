"""Several sessions on one connection: ControlMaster, each its own pty and
shell, MaxSessions; both daemons."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time

import pytest

from tests.daemon import Server, descendants, ssh_argv, wait_until


@pytest.fixture
def master(session_server: Server, user):
    directory = tempfile.mkdtemp(prefix="mux-")
    path = os.path.join(directory, "ctl")
    argv, env = ssh_argv(session_server, user, flags=["-M", "-S", path, "-N"])
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    wait_until(lambda: os.path.exists(path) or proc.poll() is not None)
    assert proc.poll() is None, proc.stderr.read()

    def run(*command: str, tty: bool | None = None, flags=(), **kwargs):
        argv, env = ssh_argv(session_server, user, *command, tty=tty,
                             flags=["-S", path, *flags])
        return subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **kwargs)

    yield run, path, env
    subprocess.run(["ssh", "-S", path, "-O", "exit", "x"], capture_output=True, env=env)
    proc.kill()
    proc.wait()
    subprocess.run(["rm", "-rf", directory])


def test_ten_sessions_with_their_own_pty(session_server: Server, user, master) -> None:
    run, path, env = master
    clients = [run("tty; echo $$; sleep 3", tty=True) for _ in range(10)]
    outs = [c.communicate(timeout=60) for c in clients]
    assert all(c.returncode == 0 for c in clients), [o[1] for o in outs]
    ttys = [o[0].decode().split()[0] for o in outs]
    pids = [o[0].decode().split()[1] for o in outs]
    assert all(re.fullmatch(r"/dev/pts/\d+", t) for t in ttys), ttys
    assert len(set(ttys)) == 10 and len(set(pids)) == 10
    check = subprocess.run(["ssh", "-S", path, "-O", "check", "x"], capture_output=True, env=env)
    assert check.returncode == 0


def test_multiplexed_shells_and_title(session_server: Server, user, master) -> None:
    run, _, _ = master
    shells = [run(tty=True) for _ in range(3)]
    try:
        logins = wait_until(lambda: [p for p in descendants(session_server.pid)
                                     if p.args == "-bash" and p.uid == user.uid
                                     and p.tty.startswith("pts/")]
                            if len([p for p in descendants(session_server.pid)
                                    if p.args == "-bash" and p.uid == user.uid]) == 3 else None)
        assert len({p.tty for p in logins}) == 3
        assert len({p.sid for p in logins}) == 3
        parent = {p.pid: p for p in descendants(session_server.pid)}[logins[0].ppid]
        # sshd's title lists every tty of the connection: user@pts/1,pts/2,pts/3
        title_ttys = parent.args.split("@", 1)[1].split(",")
        assert sorted(title_ttys) == sorted(p.tty for p in logins)
    finally:
        for shell in shells:
            shell.stdin.write(b"exit\n")
            shell.stdin.flush()
        for shell in shells:
            shell.wait(20)


def test_max_sessions(session_server: Server, user, master) -> None:
    run, _, _ = master
    busy = [run("echo up; sleep 4") for _ in range(10)]
    for client in busy:
        assert client.stdout.readline() == b"up\n"
    extra = run("echo eleventh", flags=["-v"])
    out, err = extra.communicate(timeout=30)
    # the master's connection refused the eleventh session; the client then
    # falls back to a connection of its own
    assert b"Session open refused by peer" in err
    assert out == b"eleventh\n"
    for client in busy:
        client.communicate(timeout=30)
        assert client.returncode == 0
    if session_server.kind == "privsep":
        session_server.wait_for_log("no more sessions")
    later = run("echo again")
    assert later.communicate(timeout=30)[0] == b"again\n"


def test_a_command_gets_only_its_standard_fds(session_server: Server, user, master) -> None:
    """A command started beside a pty session (whose pty came to the session
    process with SCM_RIGHTS) has fds 0, 1 and 2 only, as with sshd: ls's
    listing of its own is 3.  privsep-sshd starts such a command with
    posix_spawn, not a fork that closes everything (programs.PipeRunner)."""
    run, _, _ = master
    shell = run("echo up; sleep 30", tty=True)
    try:
        assert shell.stdout.readline().strip() == b"up"
        out, err = run("exec ls /proc/self/fd").communicate(timeout=30)
        assert out.split() == [b"0", b"1", b"2", b"3"], (out, err)
    finally:
        shell.kill()
        shell.wait()
