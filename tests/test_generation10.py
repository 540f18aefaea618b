"""Process generation 10 (issue 16, section 3): OpenSSH 10's process model,
on this machine, set with ``ProcessGeneration 10``.

The listener execs ``sshd-session`` per connection and the monitor execs
``sshd-auth`` for the pre-auth phase, each a fresh interpreter.  What
OpenSSH 10.0 shows was measured on a Debian 13 VM (/work/shared/DESIGN.md,
openssh-server 1:10.0p1-7+deb13u4)::

    root  sshd: /usr/sbin/sshd -D [listener] 1 of 10-100 startups
    root   \\_ sshd-session: root [priv]
    root   |   \\_ sshd-session: root@pts/0
    root   |       \\_ sleep 40            (own sid, pts/0)
    root   \\_ sshd-session: unknown [priv]
    sshd   |   \\_ sshd-auth: unknown [net]

``pstree -alpu`` names them sshd, sshd-session, sshd-auth; the sshd-auth
child has uid sshd, gid nogroup, NoNewPrivs 1, Seccomp 2, root /run/sshd.
This daemon must show the same, with its own names in the titles
(``privsep-sshd-session: alice [priv]``) and OpenSSH 10's in the kernel's
comm (what pstree shows).
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys

import pytest

from privsep.common import roles
from privsep.listener import generation
from tests.daemon import REPO, Server, descendants, processes, ssh, ssh_background, wait_until

GEN10 = "ProcessGeneration 10"

# What the trixie VM showed (/work/shared/DESIGN.md), as this daemon's titles
# and comm names must show it.
SESSION_PREFIX = "privsep-sshd-session: "
AUTH_PREFIX = "privsep-sshd-auth: "


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as handle:
        return handle.read().strip()


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        lines = handle.read().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _stack(pid: int) -> str:
    """The address range of the process's main stack: a forked child has its
    parent's, an exec'd program a freshly randomised one."""
    with open(f"/proc/{pid}/maps") as handle:
        return next(line.split()[0] for line in handle if line.rstrip().endswith("[stack]"))


# --- the default and the keyword -------------------------------------------------------

def test_default_follows_the_installed_openssh() -> None:
    bookworm = "Package: openssh-server\nStatus: install ok installed\nVersion: 1:9.2p1-2+deb12u3\n"
    trixie = "Package: openssh-server\nStatus: install ok installed\nVersion: 1:10.0p1-7+deb13u4\n"
    removed = "Package: openssh-server\nStatus: deinstall ok config-files\nVersion: 1:10.0p1-7\n"
    other = "Package: openssh-client\nStatus: install ok installed\nVersion: 1:10.0p1-7\n"
    assert generation.dpkg_openssh_major(f"{other}\n{bookworm}") == 9
    assert generation.dpkg_openssh_major(trixie) == 10
    assert generation.dpkg_openssh_major(removed) is None
    assert generation.dpkg_openssh_major(other) is None
    assert generation.sshd_v_major("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15") == 9
    assert generation.sshd_v_major("OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1 1 Jul 2025") == 10
    assert generation.generation_of_version(9) == 9 and generation.generation_of_version(10) == 10
    # and on this machine: what its sshd -V says
    done = subprocess.run(["/usr/sbin/sshd", "-V"], capture_output=True, text=True)
    major = generation.sshd_v_major(done.stderr)
    expected = generation.generation_of_version(major) if major else generation.FALLBACK
    assert generation.installed() == expected


def _dump(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "privsep", "-T", "-f", "/dev/null", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=30)


def test_keyword_printed_by_T_and_checked() -> None:
    assert f"processgeneration {generation.installed()}\n" in _dump().stdout
    assert "processgeneration 10\n" in _dump("-o", "ProcessGeneration=10").stdout
    assert "processgeneration 9\n" in _dump("-o", "ProcessGeneration=9").stdout
    bad = _dump("-o", "ProcessGeneration=11")
    assert bad.returncode == 255
    assert 'command-line line 0: unsupported option "11".' in bad.stderr  # sshd's form


# --- logins --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gen10_server(pam_service: str):
    from tests.conftest import _serve
    yield from _serve("privsep", [GEN10, "KbdInteractiveAuthentication yes"])


def test_logins_publickey_and_password_exec_and_pty(gen10_server: Server, user) -> None:
    result = ssh(gen10_server, user, "echo key-$((6*7)); exit 7")
    assert (result.returncode, result.stdout) == (7, b"key-42\n"), result.stderr
    result = ssh(gen10_server, user, "echo pw-$((6*7))", password=user.password)
    assert (result.returncode, result.stdout) == (0, b"pw-42\n"), result.stderr
    result = ssh(gen10_server, user, "tty; echo pty-$((6*7))", tty=True)
    assert result.returncode == 0, result.stderr
    assert re.search(rb"^/dev/pts/\d+\r\npty-42\r\n", result.stdout), result.stdout
    result = ssh(gen10_server, user, "tty; echo pty-$((6*7))", tty=True, password=user.password)
    assert result.returncode == 0 and b"pty-42" in result.stdout, result.stderr
    log = gen10_server.log_text()
    assert re.search(rf"^Accepted publickey for {user.name} from 127\.0\.0\.1 port \d+ ssh2: ED25519 ",
                     log, re.M)
    assert re.search(rf"^Accepted password for {user.name} from 127\.0\.0\.1 port \d+ ssh2$",
                     log, re.M)


# --- the genealogy -------------------------------------------------------------------------

def _login_chain(server: Server, user) -> list[int]:
    """[monitor, session, shell] of the user's live pty login."""
    def chain():
        shells = [p for p in descendants(server.pid) if p.args == "-bash" and p.uid == user.uid]
        if not shells:
            return None
        table = processes()
        path = [shells[0].pid]
        while table[path[-1]].ppid != server.pid:
            path.append(table[path[-1]].ppid)
        return list(reversed(path))
    return wait_until(chain)


def test_logged_in_genealogy_is_openssh_10s(gen10_server: Server, user) -> None:
    client = ssh_background(gen10_server, user, tty=True)
    try:
        monitor, session, shell = _login_chain(gen10_server, user)
        table = processes()
        tty = table[shell].tty
        assert re.fullmatch(r"pts/\d+", tty)
        # sshd-session: alice [priv] (root) -> sshd-session: alice@pts/N (alice) -> -bash
        assert (table[monitor].uid, table[monitor].args) == (0, f"{SESSION_PREFIX}{user.name} [priv]")
        assert (table[session].uid, table[session].args) == (user.uid,
                                                             f"{SESSION_PREFIX}{user.name}@{tty}")
        assert (table[shell].uid, table[shell].args, table[shell].sid) == (user.uid, "-bash", shell)
        assert table[monitor].sid == monitor  # [priv] leads its own session, as sshd's
        assert [_comm(p) for p in (gen10_server.pid, monitor, session)] == [
            "privsep-sshd", "sshd-session", "sshd-session"]
        # the per-connection program was exec'd, not forked: the listener's
        # stack is not its own
        assert _stack(monitor) != _stack(gen10_server.pid)
        assert _stack(session) == _stack(monitor)  # the session process is forked
        # pstree shows the programs' names, as on trixie
        tree = subprocess.run(["pstree", "-alpu", str(gen10_server.pid)], capture_output=True,
                              text=True, check=True).stdout
        assert re.search(rf"^privsep-sshd,{gen10_server.pid}\n", tree), tree
        assert re.search(rf"^\s+`-sshd-session,{monitor}\n", tree, re.M), tree
        assert re.search(rf"^\s+`-sshd-session,{session},{user.name}\n", tree, re.M), tree
        assert re.search(rf"^\s+`-bash,{shell}\n", tree, re.M), tree
    finally:
        client.kill()
        client.wait()


class _HeldAtPassword:
    """A client held at its password prompt: its sshd-auth child is up, the
    user named."""

    def __init__(self, server: Server, user, tmp_path) -> None:
        self.fifo = tmp_path / "hold"
        os.mkfifo(self.fifo)
        self.client = ssh_background(server, user, "true", password="unused")
        (server.workdir / f"askpass-{user.name}").write_text(f"#!/bin/sh\ncat {self.fifo}\n")

    def close(self) -> None:
        self.client.kill()
        self.client.wait()
        try:
            os.close(os.open(self.fifo, os.O_RDWR))
        except OSError:
            pass


def test_preauth_sshd_auth_is_sandboxed_like_openssh_10s(gen10_server: Server, user,
                                                         tmp_path) -> None:
    held = _HeldAtPassword(gen10_server, user, tmp_path)
    try:
        net = wait_until(lambda: [p for p in descendants(gen10_server.pid)
                                  if p.args == f"{AUTH_PREFIX}{user.name} [net]"])[0]
        priv = processes()[net.ppid]
        assert (priv.uid, priv.args, priv.ppid) == (0, f"{SESSION_PREFIX}{user.name} [priv]",
                                                    gen10_server.pid)
        assert (_comm(net.pid), _comm(priv.pid)) == ("sshd-auth", "sshd-session")
        # exec'd: a fresh interpreter, not a fork of the monitor's
        assert _stack(net.pid) != _stack(priv.pid)
        status = _status(net.pid)
        privsep = pwd.getpwnam("privsep-sshd")
        assert status["Uid"].split() == [str(privsep.pw_uid)] * 4
        assert status["Gid"].split() == [str(privsep.pw_gid)] * 4  # nogroup, as sshd-auth
        assert status["Groups"].strip() == ""
        assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[cap], 16) == 0, cap  # sshd-auth keeps CapBnd: tighter here
        assert os.readlink(f"/proc/{net.pid}/root") == "/run/privsep-sshd"
        fds = {os.readlink(f"/proc/{net.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{net.pid}/fd")}
        assert all(t.startswith("socket:") or t == "/dev/null" for t in fds), fds
        pstree = subprocess.run(["pstree", "-alpu", str(priv.pid)], capture_output=True,
                                text=True, check=True).stdout
        assert re.search(rf"^\s+`-sshd-auth,{net.pid},privsep-sshd\n", pstree, re.M), pstree
    finally:
        held.close()


def test_preauth_titles_before_a_user_is_named(gen10_server: Server) -> None:
    """OpenSSH 10: ``sshd-session: [accepted]`` above ``sshd-auth: [session-auth]``."""
    import socket
    sock = socket.create_connection(("127.0.0.1", gen10_server.port), timeout=20)
    try:
        net = wait_until(lambda: [p for p in descendants(gen10_server.pid)
                                  if p.args == f"{AUTH_PREFIX}[session-auth]"])[0]
        assert processes()[net.ppid].args == f"{SESSION_PREFIX}[accepted]"
        assert roles.role_of(net.args, roles.MONITOR) == roles.NET_CHILD
    finally:
        sock.close()


def test_generation_9_still_forks(privsep_server: Server, user, tmp_path) -> None:
    """The contrast: without the keyword (9 on bookworm) the net-child is a
    fork of its monitor (the same stack), titled and named privsep-sshd."""
    if generation.installed() != 9:
        pytest.skip("the installed OpenSSH is not 9.x")
    held = _HeldAtPassword(privsep_server, user, tmp_path)
    try:
        net = wait_until(lambda: [p for p in descendants(privsep_server.pid)
                                  if p.args == f"privsep-sshd: {user.name} [net]"])[0]
        assert _stack(net.pid) == _stack(net.ppid) == _stack(privsep_server.pid)
        assert _comm(net.pid) == _comm(net.ppid) == "privsep-sshd"
    finally:
        held.close()


# --- inetd mode ----------------------------------------------------------------------------

#: In the login's command: comm and title of its parent (the session
#: process) and grandparent (the monitor), one "comm|title" line each.
_PARENTS = ('for p in $PPID $(ps -o ppid= -p $PPID); do '
            'printf "%s|%s\\n" "$(cat /proc/$p/comm)" "$(ps -o args= -p $p)"; done')


@pytest.mark.parametrize("gen", [9, 10])
def test_inetd_mode_follows_the_generation(gen: int, user, pam_service, tmp_path) -> None:
    """``-i`` as a ProxyCommand: in generation 10 the process execs
    sshd-session in place, as OpenSSH 10's ``sshd -i`` does, so the monitor
    and its session process have generation 10's titles and names; in 9 both
    stay privsep-sshd."""
    from tests.daemon import privsep_command
    config = tmp_path / "sshd_config"
    config.write_text(f"LogLevel VERBOSE\nPasswordAuthentication no\nProcessGeneration {gen}\n")
    log = tmp_path / "inetd.log"
    proxy = " ".join([*privsep_command(), "-i", "-f", str(config), "-E", str(log)])
    argv = ["ssh", "-F", "/dev/null", "-o", f"ProxyCommand={proxy}", "-o",
            "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
            "LogLevel=ERROR", "-o", "BatchMode=yes", "-i", str(user.key_path),
            f"{user.name}@inetd-host", _PARENTS]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    prefix, comm = (SESSION_PREFIX, "sshd-session") if gen == 10 else ("privsep-sshd: ", "privsep-sshd")
    assert result.stdout.splitlines() == [f"{comm}|{prefix}{user.name}@notty",
                                          f"{comm}|{prefix}{user.name} [priv]"], result.stdout
    assert f"Accepted publickey for {user.name} from UNKNOWN port 65535 ssh2" in log.read_text()


# --- privsep-tree ---------------------------------------------------------------------

def _tree(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "privsep_tree.tree", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd="/")


def test_privsep_tree_tells_the_generations_apart(gen10_server: Server, privsep_server: Server,
                                                  openssh_server: Server, user) -> None:
    import json
    servers = (gen10_server, privsep_server, openssh_server)
    clients = [ssh_background(s, user, tty=True) for s in servers]
    try:
        for server in servers:
            _login_chain(server, user)
        out = _tree("--pid", str(gen10_server.pid), "--compare", str(openssh_server.pid), "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert (data["left"]["generation"], data["right"]["generation"]) == ("10", "9")
        rows = {row["path"]: row for row in data["comparison"]}
        monitor, session = "listener#1/monitor#1", "listener#1/monitor#1/session#1"
        for path in (monitor, session):
            assert rows[path]["left_shape"]["program"] == "sshd-session"
            assert rows[path]["right_shape"]["program"] == "sshd"
            assert "program" in rows[path]["differences"]
            assert "title" not in rows[path]["differences"]  # the same words otherwise
            for field in ("uid", "root", "no_new_privs", "seccomp", "CapEff", "session"):
                assert field not in rows[path]["differences"], (path, field)
        text = _tree("--pid", str(gen10_server.pid), "--compare", str(openssh_server.pid)).stdout
        assert f"left: privsep-sshd {gen10_server.pid} (OpenSSH 10 model)" in text
        assert f"right: sshd {openssh_server.pid} (OpenSSH 9 model)" in text
        assert f"{monitor}: program: 'sshd-session' vs 'sshd'" in text
        # generation 9 beside sshd 9.2: no program differs
        data = json.loads(_tree("--pid", str(privsep_server.pid), "--compare",
                                str(openssh_server.pid), "--json").stdout)
        assert (data["left"]["generation"], data["right"]["generation"]) == ("9", "9")
        assert not [row for row in data["comparison"] if "program" in row["differences"]]
    finally:
        for client in clients:
            client.kill()
            client.wait()


def test_trixie_titles_classified() -> None:
    """The titles of the trixie VM's listing: the roles and programs
    privsep-tree gives them, the same as for this daemon's."""
    listing = [
        ("sshd: /usr/sbin/sshd -D [listener] 1 of 10-100 startups", "sshd", roles.LISTENER),
        ("sshd-session: root [priv]", "sshd-session", roles.MONITOR),
        ("sshd-session: root@pts/0", "sshd-session", roles.SESSION),
        ("sshd-session: unknown [priv]", "sshd-session", roles.MONITOR),
        ("sshd-auth: unknown [net]", "sshd-auth", roles.NET_CHILD),
        ("sshd-auth: [session-auth]", "sshd-auth", roles.NET_CHILD),
        ("privsep-sshd-session: alice [priv]", "sshd-session", roles.MONITOR),
        ("privsep-sshd-auth: alice [net]", "sshd-auth", roles.NET_CHILD),
        ("privsep-sshd: alice [priv]", "sshd", roles.MONITOR),
    ]
    for title, program, role in listing:
        assert roles.program_of(title)[0] == program, title
        assert roles.role_of(title, None) == role, title


# --- crash cleanup and host keys ---------------------------------------------------------

CRASH_CASES = [("before-kex", "net-child"), ("password-prompt", "monitor"),
               ("mid-handoff", "monitor"), ("pty-shell", "monitor"), ("pty-shell", "session"),
               ("authenticated", "listener")]


@pytest.mark.parametrize("phase,victim", CRASH_CASES, ids=[f"{p}-{v}" for p, v in CRASH_CASES])
def test_kill(phase: str, victim: str, server_with, make_user) -> None:
    """tests/test_crash_cleanup.py's cases, with the exec'd programs."""
    from tests import test_crash_cleanup as crash
    # LogLevel DEBUG: the scenes wait for lines of the phase trace
    server = server_with(GEN10, "KbdInteractiveAuthentication yes", "LogLevel DEBUG")
    bystander = crash.Bystander(server, make_user("psb"))
    scene = crash.Scene(server, make_user("pst"), phase, detached=victim != "shell")
    try:
        scene.bring_up()
        os.kill(scene.victim(victim), signal.SIGKILL)
        if victim == "listener":
            wait_until(lambda: server.process.poll() is not None)
            bystander.check()
            scene.carry_on()
            scene.logout_recorded()
            bystander.check()
        else:
            crash._nothing_left(scene)
            assert server.process.poll() is None, "the listener died"
            result = ssh(server, bystander.user, "echo", "serving-$((6*7))", timeout=crash.WAIT)
            assert b"serving-42" in result.stdout, result.stderr
            bystander.check()
    finally:
        scene.close()
        bystander.client.close()


from tests.test_hostkey_memory import (  # noqa: E402 - the fixtures and the scan, reused
    ALGORITHM, _kex, host_keys, leaks, read_memory, secrets,
)


def test_no_host_key_in_sshd_auth_or_sshd_session(server_with, host_keys, secrets, user) -> None:
    server = server_with(GEN10, *(f"HostKey {path}" for path in host_keys.values()))
    for algorithm in ALGORITHM.values():
        _kex(server, algorithm).close()
    waiting = _kex(server, ALGORITHM["ed25519"])  # its sshd-auth waits for userauth
    session = ssh_background(server, user, "sleep 60")

    def present():
        procs = [p for p in descendants(server.pid) if p.args.startswith(
            (SESSION_PREFIX, AUTH_PREFIX))]
        titles = " | ".join(p.args for p in procs)
        return procs if "[session-auth]" in titles and "@notty" in titles else None
    try:
        scanned = {}
        for proc in wait_until(present):
            try:
                scanned[proc.args] = leaks(read_memory(proc.pid), secrets)
            except (FileNotFoundError, ProcessLookupError):
                continue
        assert {title.split(": ", 1)[1] for title in scanned} >= {
            "[session-auth]", f"{user.name} [priv]", f"{user.name}@notty"}, scanned
        assert {title: found for title, found in scanned.items() if found} == {}
    finally:
        waiting.close()
        session.kill()
        session.wait()
