"""privsep-tree and the phase trace, against a live login through the real
client: the tree's JSON checked against /proc, `ss` and `ps` read here
independently; the trace of a login and logout in order; --compare with
Debian's sshd; bad input."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privsep_tree import proc as proc_mod
from privsep_tree import tree as tree_mod
from tests.daemon import Server, descendants, processes, ssh_background, wait_until

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def run_tree(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    argv = [PYTHON, "-m", "privsep_tree.tree", *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd="/")


def tree_json(pid: int) -> dict:
    out = run_tree("--pid", str(pid), "--json")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout)


def login_chain(server: Server, user) -> list[int]:
    """[monitor, session, shell] pids of the user's live pty login."""
    def chain():
        shells = [p for p in descendants(server.pid) if p.args == "-bash" and p.uid == user.uid]
        if not shells:
            return None
        table = processes()
        path = [shells[0].pid]
        while table[path[-1]].ppid != server.pid:
            path.append(table[path[-1]].ppid)
        return list(reversed(path))
    pids = wait_until(chain)
    # bash at its prompt, start-up files read and closed: its fds hold still
    wait_until(lambda: processes()[pids[-1]].stat.startswith("S"))
    return pids


@pytest.fixture
def live_login(privsep_server: Server, user):
    client = ssh_background(privsep_server, user, tty=True)
    try:
        yield privsep_server, user, client, login_chain(privsep_server, user)
    finally:
        client.kill()
        client.wait()


# --- the truth, read here without privsep.tree ----------------------------------------------

def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def ps_field(pid: int, field: str) -> str:
    return subprocess.run(["ps", "-ww", "-o", f"{field}=", "-p", str(pid)], capture_output=True,
                          text=True, check=True).stdout.strip()


def ss_unix() -> dict[tuple[int, int], tuple[int, int]]:
    """(pid, fd) -> (inode, peer inode), from `ss -xpn` (sock_diag, via iproute2)."""
    out = subprocess.run(["ss", "-xpnH"], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        inode, peer = int(parts[5]), int(parts[7])
        for pid, fd in re.findall(r"pid=(\d+),fd=(\d+)", line):
            table[int(pid), int(fd)] = (inode, peer)
    return table


def ss_tcp(pid: int) -> list[tuple[str, str, int]]:
    """(local, remote, fd) of pid's established TCP sockets, from `ss -tnp`."""
    out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        for p, fd in re.findall(r"pid=(\d+),fd=(\d+)", line):
            if int(p) == pid:
                found.append((parts[3], parts[4], int(fd)))
    return found


def fd_entries(proc: dict, kind: str) -> list[dict]:
    return [e for e in proc["fds"] if e["kind"] == kind]


# --- the tree against /proc -------------------------------------------------------------------

def test_tree_matches_proc(live_login) -> None:
    server, user, client, (monitor, session, shell) = live_login
    data = tree_json(server.pid)
    assert data["listener"] == server.pid and data["daemon"] == "privsep-sshd"
    assert not [n for n in data["notes"] if "hidden" in n or "unknown" in n]
    procs = {p["pid"]: p for p in data["processes"]}
    assert [procs[pid]["role"] for pid in (server.pid, monitor, session, shell)] == \
        ["listener", "monitor", "session", "shell"]
    assert procs[server.pid]["children"] == [monitor] or monitor in procs[server.pid]["children"]
    assert procs[monitor]["children"] == [session] and procs[session]["children"] == [shell]

    for pid in (server.pid, monitor, session, shell):
        p, st = procs[pid], status(pid)
        assert p["ppid"] == int(st["PPid"])
        assert p["uid"] == [int(x) for x in st["Uid"].split()]
        assert p["gid"] == [int(x) for x in st["Gid"].split()]
        assert p["groups"] == [int(x) for x in st["Groups"].split()]
        assert p["sid"] == int(ps_field(pid, "sid")) and p["pgid"] == int(ps_field(pid, "pgid"))
        tty = ps_field(pid, "tty")
        assert p["tty"] == (None if tty == "?" else tty)
        assert p["root"] == os.readlink(f"/proc/{pid}/root")
        assert p["cap_eff_hex"] == st["CapEff"] and p["cap_bnd_hex"] == st["CapBnd"]
        assert p["no_new_privs"] == int(st["NoNewPrivs"])
        assert p["seccomp"] == {"0": "off", "1": "strict", "2": "filter"}[st["Seccomp"]]
        assert p["title"] == ps_field(pid, "args")
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        assert sorted(e["fd"] for e in p["fds"]) == fds
        assert p["hidden"] == []

    # who is who
    assert procs[monitor]["uid"][1] == 0 and procs[monitor]["cap_eff"] != "none"
    assert procs[session]["uid"] == [user.uid] * 4 and procs[session]["cap_eff"] == "none"
    assert procs[shell]["uid"] == [user.uid] * 4 and procs[shell]["sid"] == shell
    assert procs[shell]["loginuid"] == user.uid

    # the listener listens on the server's port
    listening = fd_entries(procs[server.pid], "tcp")
    assert [e["local"] for e in listening] == [f"127.0.0.1:{server.port}"]
    assert listening[0]["state"] == "LISTEN"

    # monitor <-> session: one socketpair, each end naming the other, as ss sees it
    ss = ss_unix()
    (m_end,) = [e for e in fd_entries(procs[monitor], "unix") if e["peer"]]
    (s_end,) = [e for e in fd_entries(procs[session], "unix") if e["peer"]]
    assert m_end["peer"]["pid"] == session and m_end["peer"]["fd"] == s_end["fd"]
    assert s_end["peer"]["pid"] == monitor and s_end["peer"]["fd"] == m_end["fd"]
    assert m_end["type"] == s_end["type"] == "seqpacket"
    assert ss[monitor, m_end["fd"]] == (m_end["inode"], s_end["inode"])
    assert ss[session, s_end["fd"]] == (s_end["inode"], m_end["inode"])

    # the TCP connection is carried by the session process; the monitor keeps
    # its copy of the same socket, as sshd's [priv] does
    (conn,) = fd_entries(procs[session], "tcp")
    assert conn["state"] == "ESTABLISHED" and conn["local"] == f"127.0.0.1:{server.port}"
    assert ss_tcp(session) == [(conn["local"], conn["remote"], conn["fd"])]
    (kept,) = fd_entries(procs[monitor], "tcp")
    assert kept["inode"] == conn["inode"]

    # nothing the root listener holds reaches a monitor or the user's processes
    # (its signal wake-up pipe once did)
    listener_inodes = {e.get("inode") for e in procs[server.pid]["fds"]} - {None}
    for pid in (monitor, session, shell):
        shared = [e for e in procs[pid]["fds"] if e.get("inode") in listener_inodes]
        assert shared == [], (pid, shared)

    # the pty: master in the session process, /dev/pts/N on the shell's stdio
    pts = procs[shell]["tty"]
    assert re.fullmatch(r"pts/\d+", pts)
    masters = fd_entries(procs[session], "ptmx")
    assert [e["pts"] for e in masters] == [pts]
    assert os.readlink(f"/proc/{session}/fd/{masters[0]['fd']}") == "/dev/ptmx"
    assert {e["fd"] for e in fd_entries(procs[shell], "pts") if e["pts"] == pts} >= {0, 1, 2}


def test_tree_text_and_watch(live_login) -> None:
    server, user, client, (monitor, session, shell) = live_login
    out = run_tree("--pid", str(server.pid))
    assert out.returncode == 0 and "Traceback" not in out.stderr
    text = out.stdout
    assert text.startswith(f"privsep-sshd listener {server.pid}:")
    assert f"└─ {monitor} monitor  privsep-sshd: {user.name} [priv]" in text
    assert re.search(rf"{session} session  privsep-sshd: {user.name}@pts/\d+", text)
    assert re.search(rf"{shell} shell  -bash", text)
    assert re.search(rf"unix seqpacket <-> pid {session} session fd \d+", text)
    assert re.search(r"pty master \(/dev/ptmx\) of pts/\d+", text)
    assert f"tcp listen 127.0.0.1:{server.port}" in text
    # --watch, bounded
    out = run_tree("--pid", str(server.pid), "--watch", "0.2", "--count", "2")
    assert out.returncode == 0
    assert out.stdout.count(f"privsep-sshd listener {server.pid}:") == 2


def test_tree_from_pidfile(live_login) -> None:
    server, *_ = live_login
    out = run_tree("--pidfile", str(server.workdir / "sshd.pid"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["listener"] == server.pid


# --- the phase trace --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def privsep_server(pam_service: str):
    """privsep-sshd at LogLevel DEBUG, where the phase trace is written
    (at VERBOSE and below the log holds only sshd's own lines)."""
    from tests.conftest import _serve
    yield from _serve("privsep", ["LogLevel DEBUG"])


TRACE = re.compile(r"^trace: pid (\d+) uid (\d+) ([\w-]+): (.*?)(?: \[(?:preauth|session)\])?$")


def test_trace_of_login_and_logout(privsep_server: Server, user) -> None:
    before = len(privsep_server.log_text().splitlines())
    client = ssh_background(privsep_server, user, tty=True)
    monitor, session, shell = login_chain(privsep_server, user)
    client.stdin.write(b"exit\n")
    client.stdin.flush()
    client.wait(30)
    wait_until(lambda: f"pid {monitor} uid 0 monitor: PAM pam_end" in privsep_server.log_text())
    lines = privsep_server.log_text().splitlines()[before:]
    # this connection's lines: from the listener's fork of its monitor on
    start = next(i for i, line in enumerate(lines)
                 if re.search(rf"listener: accepted .* forked monitor {monitor}$", line))
    steps = []
    for line in lines[start:]:
        m = TRACE.match(line)
        if m:
            steps.append((int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)))
    net_pid = int(re.search(r"forked net-child (\d+)", next(s[3] for s in steps
                                                            if "forked net-child" in s[3])).group(1))
    privsep_uid = pwd.getpwnam("privsep-sshd").pw_uid
    who = {"listener": (privsep_server.pid, 0), "monitor": (monitor, 0),
           "net-child": (net_pid, privsep_uid), "session": (session, user.uid)}
    mine = [s for s in steps if s[0] in {pid for pid, _ in who.values()}]
    for pid, uid, role, _ in mine:
        assert (pid, uid) == who[role], (pid, uid, role)
    pts = "/dev/pts/"
    expected = [
        ("listener", rf"accepted 127\.0\.0\.1 port \d+, forked monitor {monitor}"),
        ("monitor", rf"forked net-child {net_pid} \(uid privsep-sshd, root /run/privsep-sshd, caps none\)"),
        ("net-child", r"sandboxed: uid \d+ gid \d+, no groups, root /run/privsep-sshd, caps none, "
                      r"no_new_privs, seccomp filter"),
        ("monitor", r"signed (32|64) bytes with the \S+ host key \(signer child\)"),
        ("net-child", r"key exchange done: kex \S+, host key \S+, ciphers \S+/\S+, MACs \S+/\S+"),
        ("net-child", rf"asks the monitor about user {user.name}"),
        ("monitor", rf"user {user.name}: valid"),
        ("monitor", rf"PAM pam_start\(privsep-sshd, {user.name}\): Success"),
        ("net-child", rf"asks the monitor whether a ssh-ed25519 key is allowed for {user.name}"),
        ("monitor", rf"key ssh-ed25519 for {user.name}: allowed"),
        ("net-child", r"asks the monitor to verify a ssh-ed25519 signature"),
        ("monitor", r"PAM pam_acct_mgmt \(flags 0x0\): Success"),
        ("monitor", rf"signature by ssh-ed25519 key for {user.name}: verified, accepted"),
        ("net-child", r"handing off the transport at seq in (\d+) out (\d+), then exiting"),
        ("monitor", r"hand-off received: seq in (\d+) out (\d+), cipher in \S+ out \S+"),
        ("monitor", rf"net-child {net_pid} exited \(wait status 0\)"),
        ("monitor", r"PAM pam_setcred \(flags 0x2\): Success"),
        ("monitor", r"PAM pam_open_session \(flags 0x0\): Success"),
        ("monitor", rf"forked session process {session} \(uid {user.uid}\)"),
        ("session", rf"dropped to uid {user.uid} gid \d+ groups [\d,]+; resuming the transport "
                    r"at seq in \d+ out \d+"),
        ("monitor", rf"Allocated pty {pts}\d+ for {user.name}, owner {user.uid}:tty mode 620"),
        ("monitor", rf"wrote USER_PROCESS {pts}\d+ pid {monitor} to utmp, wtmp, lastlog"),
        ("session", rf"started -bash \(pid {shell}\): session leader \(sid {shell}\), "
                    rf"controlling tty {pts}\d+"),
        ("session", rf"{shell} on {pts}\d+ exited \(wait status 0\)"),
        ("monitor", rf"wrote DEAD_PROCESS {pts}\d+ pid {monitor} to utmp, wtmp"),
        ("monitor", rf"released pty {pts}\d+ \(owner root, mode 666\)"),
        ("monitor", rf"session process {session} exited \(wait status 0\): logout"),
        ("monitor", r"PAM pam_close_session \(flags 0x0\): Success"),
        ("monitor", r"PAM pam_setcred \(flags 0x4\): Success"),
        ("monitor", r"PAM pam_end"),
    ]
    # in this order (other lines may come between: a second key query, PAM reinit...)
    pos = 0
    seqs = []
    for role, pattern in expected:
        while pos < len(mine) and not (mine[pos][2] == role
                                       and re.fullmatch(pattern, mine[pos][3])):
            pos += 1
        assert pos < len(mine), f"missing, or out of order: {role}: {pattern}\n" + \
            "\n".join(f"{s[2]}: {s[3]}" for s in mine)
        m = re.fullmatch(pattern, mine[pos][3])
        if "seq in" in pattern and m.groups():
            seqs.append(m.groups())
        pos += 1
    assert seqs[0] == seqs[1]  # the sequence numbers the net-child sent are those received
    # OpenSSH's own lines are still there, as before
    text = "\n".join(lines[start:])
    assert re.search(rf"^Accepted publickey for {user.name} from 127\.0\.0\.1 port \d+ ssh2: ED25519 SHA256:",
                     text, re.M)
    assert re.search(rf"^Disconnected from user {user.name} 127\.0\.0\.1 port \d+$", text, re.M)


def test_trace_of_refused_password(privsep_server: Server, user) -> None:
    from tests.daemon import ssh
    before = len(privsep_server.log_text())
    result = ssh(privsep_server, user, "true", password="wrong-password")
    assert result.returncode == 255
    log = wait_until(lambda: (lambda t: t if "Connection closed by" in t else None)(
        privsep_server.log_text()[before:]))
    assert re.search(rf"net-child: asks the monitor to check a password for {user.name} \[preauth\]", log)
    assert re.search(rf"monitor: PAM pam_authenticate \(flags 0x1\): Authentication failure", log)
    assert re.search(rf"monitor: password for {user.name}: refused", log)
    assert re.search(rf"^Failed password for {user.name} from 127\.0\.0\.1 port \d+ ssh2$", log, re.M)


# --- side by side with Debian's sshd -------------------------------------------------------------

def test_compare_with_openssh(privsep_server: Server, openssh_server: Server, user) -> None:
    clients = [ssh_background(s, user, tty=True) for s in (privsep_server, openssh_server)]
    try:
        chains = [login_chain(s, user) for s in (privsep_server, openssh_server)]
        out = run_tree("--pid", str(privsep_server.pid), "--compare", str(openssh_server.pid))
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
        text = out.stdout
        header = text.splitlines()[0]
        assert f"left: privsep-sshd {privsep_server.pid}" in header
        assert f"right: sshd {openssh_server.pid}" in header
        for (monitor, session, shell), name in zip(chains, ("privsep-sshd", "sshd")):
            assert re.search(rf"\b{monitor} monitor  {name}: {user.name} \[priv\]", text)
            assert re.search(rf"\b{session} session  {name}: {user.name}@pts/\d+", text)
            assert re.search(rf"\b{shell} shell  -bash", text)
        assert "differences (* above; pids, names and numbers left out):" in text

        out = run_tree("--pid", str(privsep_server.pid), "--compare", str(openssh_server.pid),
                       "--json")
        data = json.loads(out.stdout)
        assert data["left"]["listener"] == privsep_server.pid
        assert data["right"]["listener"] == openssh_server.pid
        rows = {row["path"]: row for row in data["comparison"]}
        path = "listener#1/monitor#1/session#1/shell#1"
        for key in ("listener#1", "listener#1/monitor#1", "listener#1/monitor#1/session#1", path):
            assert rows[key]["left"] and rows[key]["right"], key
        assert rows["listener#1/monitor#1"]["left"] == chains[0][0]
        assert rows["listener#1/monitor#1"]["right"] == chains[1][0]
        # the same rights where the design says so
        for key in rows:
            for field in ("uid", "root", "no_new_privs", "seccomp", "CapEff"):
                assert field not in rows[key]["differences"], (key, field, rows[key])
        assert rows[path]["left_shape"]["session"] == "leader"
        assert rows[path]["left_shape"]["tty"] == rows[path]["right_shape"]["tty"] == "pts/N"
        # every difference listed in the JSON is listed and marked in the text
        for row in data["comparison"]:
            for field in row["differences"]:
                assert f"{row['path']}: {field}" in text
        if any(row["differences"] for row in data["comparison"]):
            assert re.search(r"^.{72} \* ", text, re.M)
    finally:
        for client in clients:
            client.kill()
            client.wait()


# --- bad input ---------------------------------------------------------------------------------

def test_not_an_sshd() -> None:
    out = run_tree("--pid", str(os.getpid()))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    assert f"pid {os.getpid()}" in out.stderr and "does not look like an sshd listener" in out.stderr
    # ... and the tree anyway: this test process and the privsep-tree it runs
    assert out.stdout.startswith(f"pid {os.getpid()}:")
    assert re.search(r"\d+ other  \S*python\S* -m privsep_tree\.tree", out.stdout)


def test_no_such_pid() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    pid = next(p for p in range(pid_max - 1, 1, -1) if not os.path.exists(f"/proc/{p}"))
    for args in (["--pid", str(pid)], ["--pid", str(pid), "--json"], ["--pid", "0"]):
        out = run_tree(*args)
        assert out.returncode == 1 and out.stdout == ""
        assert re.fullmatch(r"privsep-tree: no process with pid -?\d+\n", out.stderr), out.stderr
    out = run_tree("--pidfile", "/nonexistent/sshd.pid")
    assert out.returncode == 1
    assert out.stderr == ("privsep-tree: no pid file /nonexistent/sshd.pid: is privsep-sshd "
                          "running? (or give --pid PID)\n")
    out = run_tree("--pid", "abc")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_unprivileged_sees_what_proc_allows(live_login) -> None:
    server, user, client, (monitor, session, shell) = live_login
    out = run_tree("--pid", str(server.pid), user="nobody")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert re.search(r"^note: hidden: fds of pid .*run as root to see them\)$", out.stdout, re.M)
    assert re.search(r"^note: hidden: root of pid ", out.stdout, re.M)
    assert "fds (hidden)" in out.stdout
    # status is world-readable: roles, uids and ttys are still all there
    assert f"{shell} shell  -bash" in out.stdout
    out = run_tree("--pid", str(server.pid), "--json", user="nobody")
    data = json.loads(out.stdout)
    procs = {p["pid"]: p for p in data["processes"]}
    assert procs[monitor]["fds"] is None and "fds" in procs[monitor]["hidden"]
    assert procs[monitor]["root"] is None
    assert procs[session]["uid"] == [user.uid] * 4
    assert procs[shell]["tty"] == ps_field(shell, "tty")


def test_process_exiting_while_read(monkeypatch) -> None:
    """A child that exits between the listing and the reading is left out,
    with a note, and the rest of the tree is shown."""
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    kids: list[int] = []
    try:
        kids = wait_until(lambda: (lambda k: k if len(k) == 2 else None)(
            sorted(p.pid for p in descendants(parent.pid))))
        real = proc_mod.read_proc

        def racing(pid: int, depth: int, last_cap: int):
            if pid == kids[0]:
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not os.path.exists(f"/proc/{pid}"))  # sh reaped it
            return real(pid, depth, last_cap)

        monkeypatch.setattr(tree_mod, "read_proc", racing)
        tree = tree_mod.build(parent.pid)
        assert [p.pid for p in tree.procs] == [parent.pid, kids[1]]
        assert f"pid {kids[0]} exited while being read; left out" in tree.notes
        text = "\n".join(tree_mod.render(tree))
        assert f"note: pid {kids[0]} exited while being read" in text
    finally:
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.kill()
        parent.wait()


def test_decoders() -> None:
    assert proc_mod.decode_tty(0) is None
    assert proc_mod.decode_tty(os.makedev(136, 3)) == "pts/3"
    assert proc_mod.decode_tty(os.makedev(137, 1)) == "pts/257"
    assert proc_mod.decode_tty(os.makedev(4, 1)) == "tty1"
    assert proc_mod.caps_text("0000000000000000", 40) == "none"
    assert proc_mod.caps_text("000001ffffffffff", 40) == "full"
    assert proc_mod.caps_text("000001fffeffffff", 40) == "all but sys_resource"
    assert proc_mod.caps_text("0000000000000400", 40) == "net_bind_service"
    assert proc_mod._hex_addr("0100007F:0016") == "127.0.0.1:22"
    assert proc_mod._hex_addr("00000000000000000000000001000000:0016") == "[::1]:22"
    assert proc_mod._hex_addr("0000000000000000FFFF00000100007F:0016") == "127.0.0.1:22"
