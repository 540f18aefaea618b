"""privsep-sshd installed as a systemd service in real Debian 12 and 13 VMs.

Builds (once per machine and release, cached) a Debian image, boots it with
``qemu-system-x86_64 -accel tcg`` and systemd as PID 1 (tests/vm.py), runs
``install.sh --enable`` inside from a copy of this checkout, then logs in
from the host with the real OpenSSH client through forwarded loopback ports:
privsep-sshd on the guest's 2222, Debian's sshd on its 22 as the reference.
Every test runs once per release (``vmlib.SUITES``: bookworm with OpenSSH
9.2, trixie with OpenSSH 10.0, this daemon in the process generation of
each, and once, switched by ProcessGeneration and a reload, in the other
one); each VM boots once, the tests run in file order and each leaves the
service running for the next. After install.sh's own uninstall come the
README's `make run` and `make test` from a clean clone, then the Debian
package (built per release by `make deb` in the release's tree): installed,
logged in to, upgraded over itself, purged. PRIVSEP_VM_FULL=0 leaves these
last ones out (about 8 minutes less per release).

Budget (README, "Tests"): 45 minutes for both releases with every check
(measured on the 2-core development machine: Debian 12 17 minutes, Debian
13 21), within CI's 90 for the whole suite.

PRIVSEP_SKIP_VM=1 skips this module for quick local runs; CI never sets it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import vm as vmlib
from tests.daemon import wait_until

if os.environ.get("PRIVSEP_SKIP_VM") == "1":
    pytest.skip("PRIVSEP_SKIP_VM=1", allow_module_level=True)

UNIT = "privsep-sshd"
INSTALL = f"cd /root/privsep-sshd && ./install.sh --enable --wheels={vmlib.GUEST_WHEELS}"
#: The first install, with bash's trace and timestamps in TRACE (for the
#: fixture's report of where install.sh's time went); its errors as usual.
#: (bash takes no PS4 from the environment when run as root: it is set in
#: the shell that sources install.sh.)
TRACE = "/root/install.trace"
INSTALL_TRACED = (f"cd /root/privsep-sshd && {{ bash -c 'PS4=\"+ \\$EPOCHREALTIME \"; set -x; "
                  f". ./install.sh \"$@\"' install.sh --enable --wheels={vmlib.GUEST_WHEELS} "
                  f"2>{TRACE} || {{ grep -v '^+' {TRACE} >&2; exit 1; }}; }}")
# The Vagrantfile's demo user, made by its own provisioning script with the
# same password.
USER = "demo"
PASSWORD = re.search(r'^DEMO_PASSWORD = "(.*)"$', (vmlib.REPO / "Vagrantfile").read_text(),
                     re.M).group(1)


def readme_walkthrough() -> list[str]:
    """The README's in-VM commands (the sh block after the vm-walkthrough mark)."""
    text = (vmlib.REPO / "README.md").read_text()
    block = re.search(r"<!-- vm-walkthrough.*?-->\s*```sh\n(.*?)```", text, re.S)
    assert block, "README.md lost its vm-walkthrough block"
    return [line.strip() for line in block.group(1).splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _say(request, text: str) -> None:
    """A line on the terminal now, past pytest's capture (timings in CI logs)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)
    else:
        reporter.write_line(text)


#: The releases booted: both by default (`make test`, CI), one with e.g.
#: PRIVSEP_VM_RELEASES=trixie. The clean-clone and .deb checks below run
#: too unless PRIVSEP_VM_FULL=0 (about 8 minutes per release: README, "Tests").
RELEASES = tuple(os.environ.get("PRIVSEP_VM_RELEASES", " ".join(vmlib.SUITES)).split())
FULL = os.environ.get("PRIVSEP_VM_FULL", "1") != "0"
full_only = pytest.mark.skipif(not FULL, reason="PRIVSEP_VM_FULL=0 (README, \"Tests\")")


@pytest.fixture(scope="module", params=RELEASES)
def vm(request):
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, qemu images)")
    for tool in ("debootstrap", "mkfs.ext4", "qemu-system-x86_64", "qemu-img", "ssh"):
        assert shutil.which(tool), f"{tool} is missing: install.sh --test installs it"
    suite = request.param
    times = {}
    started = time.monotonic()
    image = vmlib.image(suite, log=lambda text: _say(request, text))
    times["image"] = time.monotonic() - started
    workdir = Path(tempfile.mkdtemp(prefix="privsep-vm-"))
    machine = vmlib.VM(image, workdir)
    # The .deb is built on the host (chroot) while the guest boots and runs
    # the tests before it: the two are independent.
    builder = concurrent.futures.ThreadPoolExecutor(1)
    machine.deb_build = builder.submit(_build_deb, image, workdir / "dist") if FULL else None
    try:
        mark = time.monotonic()
        machine.boot()
        times["boot"] = time.monotonic() - mark
        mark = time.monotonic()
        machine.push_checkout()
        times["copy"] = time.monotonic() - mark
        mark = time.monotonic()
        machine.install_output = machine.root(INSTALL_TRACED, timeout=1800)
        times["install.sh"] = time.monotonic() - mark
        _say(request, f"vm {suite}: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
        _say(request, f"vm {suite}: install.sh's slowest commands:\n" + "\n".join(
            f"  {secs:6.1f} s  {command[:110]}"
            for secs, command in slowest(machine.root(f"cat {TRACE}"))))
        yield machine
    except BaseException:
        _say(request, f"vm {suite}: console tail:\n{machine.console_tail()}")
        raise
    finally:
        machine.stop()
        builder.shutdown(wait=True)
        shutil.rmtree(workdir, ignore_errors=True)
        _say(request, f"vm {suite}: wall time {time.monotonic() - started:.0f} s")


def slowest(trace: str, count: int = 8) -> list[tuple[float, str]]:
    """The ``count`` longest steps of a ``bash -x`` trace whose PS4 carries
    $EPOCHREALTIME: each traced command's time is until the next one."""
    steps = []
    for line in trace.splitlines():
        match = re.match(r"^\++ (\d+\.\d+) (.*)", line)
        if match:
            steps.append((float(match.group(1)), match.group(2)))
    spans = [(b[0] - a[0], a[1]) for a, b in zip(steps, steps[1:])]
    return sorted(spans, reverse=True)[:count]


@pytest.fixture(scope="module")
def alice(vm) -> Path:
    """USER in the guest, with a password and an authorized key, made by the
    Vagrantfile's own provisioning script run as Vagrant runs it (uploaded to
    /tmp/vagrant-shell, made executable, run as root with the provisioner's
    args); returns the private key's path."""
    key = vm.workdir / "user_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = key.with_suffix(".pub").read_text().strip()
    script = vmlib.vagrantfile_demo_user_script()
    vm.root("cat > /tmp/vagrant-shell && chmod +x /tmp/vagrant-shell && "
            + shlex.join(["/tmp/vagrant-shell", USER, PASSWORD, pub]), input=script)
    return key


# --- helpers --------------------------------------------------------------

class Live:
    """A login shell on a pty, held open by the host's ssh client."""

    def __init__(self, vm: vmlib.VM, key: Path, port: int):
        argv = vm.ssh_argv(USER, key=key, port=port, tty=True, connect_timeout=120)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.buffer = bytearray()
        self.count = 0
        threading.Thread(target=self._pump, daemon=True).start()
        self.tty = self.run("tty").strip().splitlines()[-1].removeprefix("/dev/")
        assert re.fullmatch(r"pts/\d+", self.tty), self.tty

    def _pump(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.buffer += chunk

    def run(self, command: str, timeout: float = 180) -> str:
        """Run a command in the shell; its output (with the terminal's echo)."""
        self.count += 1
        marker = f"{self.count}:done".encode()
        start = len(self.buffer)
        # The echoed command line reads "$((N*1)):done", never "N:done".
        self.proc.stdin.write(f"{command}; echo $(({self.count}*1)):done\n".encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while marker not in self.buffer[start:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the session did not answer {command!r}: "
                                     f"{bytes(self.buffer[-2000:])!r}")
            time.sleep(0.1)
        text = bytes(self.buffer[start:]).decode(errors="replace")
        text = text[:text.rindex(marker.decode())]
        # Drop the echoed command line.
        return text.split("\n", 1)[1] if "\n" in text else ""

    def alive(self) -> None:
        assert self.run("echo $((6*7))").split() [-1:] == ["42"]

    def logout(self) -> None:
        self.proc.stdin.write(b"exit\n")
        self.proc.stdin.flush()
        assert self.proc.wait(120) == 0, bytes(self.buffer[-2000:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def login(vm, key: Path, port: int | None = None, command: str = "echo hello") -> vmlib.Result:
    return vm.ssh(command, user=USER, key=key, port=port or vm.privsep_port,
                  connect_timeout=120, timeout=300)


def show(vm, *props: str) -> dict[str, str]:
    out = vm.root(f"systemctl show {UNIT} " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cursor(vm) -> str:
    out = vm.root("journalctl --show-cursor -n 0 --no-pager")
    return out.strip().rsplit("cursor: ", 1)[-1]


def journal_since(vm, since: str, ident: str | None = None, unit: str | None = None) -> str:
    """Messages after the cursor ``since``, of one syslog tag or one unit
    (its processes' and systemd's about it). Filtered here: journalctl 252
    with a match and --after-cursor skips the first matching entry. Only
    the fields read here are asked for: every field of each entry costs
    the TCG guest three times as long (9 s for 1000 entries), and the
    waits below call this every two seconds."""
    out = vm.root(f"journalctl --no-pager -o json --after-cursor='{since}' "
                  "--output-fields=MESSAGE,SYSLOG_IDENTIFIER,_SYSTEMD_UNIT,UNIT")
    lines = []
    for line in out.splitlines():
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if not isinstance(message, str):
            continue  # binary messages come as arrays of bytes
        if ident is not None and entry.get("SYSLOG_IDENTIFIER") != ident:
            continue
        if unit is not None and unit not in (entry.get("_SYSTEMD_UNIT"), entry.get("UNIT")):
            continue
        lines.append(message)
    return "\n".join(lines) + "\n"


def wait_for(predicate, timeout: float = 300, interval: float = 2):
    """wait_until with the VM's pace: minutes, not seconds."""
    return wait_until(predicate, timeout=timeout, interval=interval)


def wait_listening(vm, since: str) -> None:
    """Until the (re)started daemon logged that it listens on 2222."""
    wait_for(lambda: "Server listening on 0.0.0.0 port 2222." in
             journal_since(vm, since, ident="privsep-sshd"))


def ps_table(vm) -> dict[int, dict]:
    out = vm.root("ps -e -ww -o pid=,ppid=,uid=,sid=,tty=,stat=,args=")
    table = {}
    for line in out.splitlines():
        pid, ppid, uid, sid, tty, stat, *rest = line.split(None, 6)
        table[int(pid)] = dict(pid=int(pid), ppid=int(ppid), uid=int(uid), sid=int(sid),
                               tty=tty, stat=stat, args=rest[0] if rest else "")
    return table


@dataclass(frozen=True)
class Titles:
    """The program names in the titles of a daemon's listener, per-connection
    monitor ([priv]) and user session process (user@tty)."""
    listener: str
    priv: str
    session: str


#: This daemon's titles per process generation (ProcessGeneration): in 9
#: (OpenSSH 9.2's model) one program, forked: all `privsep-sshd:`; in 10
#: (10.0's) the listener execs `privsep-sshd-session` per connection, which
#: execs `privsep-sshd-auth` before authentication.
TITLES = {
    "9": Titles("privsep-sshd", "privsep-sshd", "privsep-sshd"),
    "10": Titles("privsep-sshd", "privsep-sshd-session", "privsep-sshd-session"),
}

#: The generation privsep-tree finds in each release's sshd, and so the one
#: this daemon runs there by default (ProcessGeneration follows the
#: installed OpenSSH: privsep/listener/generation.py).
GENERATION = {"bookworm": "9", "trixie": "10"}
#: The generation each release's sshd does not have: checked too, by
#: test_the_other_generation, in the same guest.
OTHER_GENERATION = {"9": "10", "10": "9"}

#: This daemon's titles per release, in its default generation.
PRIVSEP_TITLES = {suite: TITLES[gen] for suite, gen in GENERATION.items()}

#: Debian's real sshd per release. OpenSSH 10.0 (trixie) execs sshd-session
#: per connection (and sshd-auth before authentication), so its [priv] and
#: user@tty processes are titled `sshd-session:`; 9.2 titles all `sshd:`.
OPENSSH_TITLES = {
    "bookworm": Titles("sshd", "sshd", "sshd"),
    "trixie": Titles("sshd", "sshd-session", "sshd-session"),
}

#: The kernel's comm of this daemon's [priv] and user@tty processes (what
#: pstree shows) per generation: 10 names them as OpenSSH 10.0's program,
#: 9 by the daemon's own name.
PRIVSEP_COMM = {"9": ["privsep-sshd", "privsep-sshd"], "10": ["sshd-session", "sshd-session"]}

#: The same comm names, this daemon's (default generation) and sshd's.
COMM = {
    "bookworm": (PRIVSEP_COMM["9"], ["sshd", "sshd"]),
    "trixie": (PRIVSEP_COMM["10"], ["sshd-session", "sshd-session"]),
}

#: Where the user's service manager lives (trixie's systemd is in /usr/lib).
SYSTEMD_USER = {
    "bookworm": "/lib/systemd/systemd --user",
    "trixie": "/usr/lib/systemd/systemd --user",
}


def genealogy(vm, titles: Titles, tty: str) -> list[dict]:
    """[pid 1, listener, priv, user@tty, shell] for the login on ``tty``,
    read from the guest's process table; asserts the shape."""
    table = ps_table(vm)
    uid = int(vm.root(f"id -u {USER}"))
    session = [p for p in table.values() if p["args"] == f"{titles.session}: {USER}@{tty}"]
    assert len(session) == 1, vm.root("ps -e -ww -o pid,ppid,uid,sid,tty,stat,args --forest")
    session = session[0]
    priv = table[session["ppid"]]
    listener = table[priv["ppid"]]
    init = table[listener["ppid"]]
    shells = [p for p in table.values() if p["ppid"] == session["pid"]]
    assert init["pid"] == 1 and vm.root("ps -o comm= -p 1").strip() == "systemd"
    assert re.fullmatch(rf"{titles.listener}: .* \[listener\] \d+ of 10-100 startups",
                        listener["args"]), listener
    assert listener["uid"] == 0
    assert priv["args"] == f"{titles.priv}: {USER} [priv]" and priv["uid"] == 0
    assert session["uid"] == uid
    assert len(shells) == 1, shells
    shell = shells[0]
    assert shell["args"] == "-bash" and shell["uid"] == uid
    assert shell["sid"] == shell["pid"] and shell["tty"] == tty and shell["stat"].startswith("Ss")
    return [init, listener, priv, session, shell]


def check_pstree(vm, listener, priv, session, shell) -> None:
    """``pstree -alpu`` (the README's command) draws the same chain: each
    process one level deeper, the session marked with the user's name."""
    tree = vm.root(f"pstree -alpu {listener['pid']}").splitlines()
    depth = {}
    for line in tree:
        match = re.search(r"[^\s|`-].*?,(\d+)(,\w+)?", line)
        if match:
            depth[int(match.group(1))] = (match.start(), match.group(2))
    assert [depth[p["pid"]][0] for p in (listener, priv, session, shell)] == \
        sorted({depth[p["pid"]][0] for p in (listener, priv, session, shell)}), tree
    assert depth[session["pid"]][1] == f",{USER}", tree


# --- the tests, in order --------------------------------------------------

def test_unit_file_verifies(vm) -> None:
    done = vm.ssh(f"systemd-analyze verify /etc/systemd/system/{UNIT}.service")
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done


def test_installed_active_under_notify(vm) -> None:
    assert "started privsep-sshd.service" in vm.install_output
    assert vm.root(f"systemctl is-enabled {UNIT}").strip() == "enabled"
    assert vm.root(f"systemctl is-active {UNIT}").strip() == "active"
    props = show(vm, "Type", "ActiveState", "SubState", "Result", "MainPID", "KillMode",
                 "NRestarts")
    assert props["Type"] == "notify" and props["SubState"] == "running", props
    assert props["Result"] == "success" and props["KillMode"] == "process", props
    # Type=notify: "Started" is logged only once the daemon sent READY=1,
    # which it does after binding (its "Server listening" lines come first).
    log = vm.root(f"journalctl --no-pager -o cat -u {UNIT}")
    assert log.index("Server listening on 0.0.0.0 port 2222.") < log.index("Started privsep-sshd.service")
    main = int(props["MainPID"])
    assert vm.root(f"ps -o args= -p {main}").strip().startswith(
        "privsep-sshd: /usr/local/sbin/privsep-sshd -D [listener]")
    assert vm.root(f"cat /run/{UNIT}.pid").strip() == str(main)


def logind_sessions(vm, service: str) -> list[dict[str, str]]:
    """logind's sessions of one PAM service, read in one guest command
    (root's own ssh sessions come and go meanwhile)."""
    sessions = vm.root(
        "for s in $(loginctl list-sessions --no-legend | awk '{print $1}'); do "
        "loginctl show-session $s -p Id -p Name -p TTY -p RemoteHost -p Service "
        "-p Leader -p Remote -p State 2>/dev/null; echo; done")
    blocks = [dict(l.split("=", 1) for l in block.splitlines() if "=" in l)
              for block in sessions.split("\n\n")]
    return [info for info in blocks if info.get("Service") == service]


def sshd_logind_tty(vm, key: Path, our_tty: str) -> str:
    """What logind shows as TTY for a pty login through Debian's sshd,
    written as this daemon's login would show it: ``our_tty`` where sshd's
    shows its own pts, else what sshd's shows."""
    theirs = Live(vm, key, vm.ssh_port)
    try:
        (info,) = [i for i in logind_sessions(vm, "sshd") if i["Name"] == USER]
    finally:
        theirs.logout()
    return our_tty if info["TTY"] == theirs.tty else info["TTY"]


def test_login_genealogy_logind_journal_last(vm, alice) -> None:
    since = cursor(vm)
    live = Live(vm, alice, vm.privsep_port)
    try:
        init, listener, priv, session, shell = genealogy(vm, PRIVSEP_TITLES[vm.image.suite], live.tty)
        assert listener["pid"] == int(show(vm, "MainPID")["MainPID"])
        check_pstree(vm, listener, priv, session, shell)
        # pam_systemd: logind's session, and the user's service manager.
        uid = session["uid"]
        found = logind_sessions(vm, UNIT)
        assert len(found) == 1, found
        (info,) = found
        # logind's TTY as for Debian's sshd's pty login: systemd 252 (Debian
        # 12) shows the pts, 257 (Debian 13) none, since both daemons open
        # the PAM session with PAM_TTY "ssh" before the pty exists.
        assert info["Name"] == USER and info["TTY"] == sshd_logind_tty(vm, alice, live.tty), info
        assert info["Remote"] == "yes" and info["RemoteHost"] == "10.0.2.2", info
        assert int(info["Leader"]) == priv["pid"], info
        assert vm.root(f"systemctl is-active user@{uid}.service").strip() == "active"
        table = ps_table(vm)
        user_procs = [p["args"] for p in table.values() if p["uid"] == uid]
        assert SYSTEMD_USER[vm.image.suite] in user_procs and "(sd-pam)" in user_procs, user_procs
        # journald has OpenSSH's Accepted line, tagged privsep-sshd.
        log = journal_since(vm, since, ident="privsep-sshd")
        assert re.search(rf"Accepted publickey for {USER} from 10\.0\.2\.2 port \d+ ssh2: "
                         r"ED25519 SHA256:", log), log
        # last: logged in now, on the pts, once (Debian 13's `last` is
        # wtmpdb's: the monitor's entry, and none from pam_wtmpdb)
        last = vm.root(f"last -w {USER}")
        assert re.search(rf"^{USER}\s+{live.tty}\s+10\.0\.2\.2 .*still logged in",
                         last, re.M), last
        assert not re.search(rf"^{USER}\s+ssh\s", last, re.M), last  # no tty-less entry
        live.alive()
    except BaseException:
        live.kill()
        raise
    live.logout()
    # ... and after logout, the logout time.
    def logged_out():
        last = vm.root(f"last -w {USER}")
        first = next(l for l in last.splitlines()
                     if re.match(rf"{USER}\s+{live.tty}\s", l))
        return re.search(r" - \d\d:\d\d\s+\(\d\d:\d\d\)$", first) and first
    wait_for(logged_out, timeout=60)


def test_openssh_same_shape(vm, alice) -> None:
    """Debian's sshd in the same VM, for the same user, beside this daemon
    in the generation of that sshd (9 on bookworm, 10 on trixie): the same
    genealogy, owners, programs (the kernel's comm, what pstree shows) and
    titles but for the program names' `privsep-` prefix; privsep-tree
    --compare finds the same generation on both sides and no program
    differing."""
    suite = vm.image.suite
    theirs, titles = OPENSSH_TITLES[suite], PRIVSEP_TITLES[suite]
    live = Live(vm, alice, vm.ssh_port)
    try:
        init, listener, priv, session, shell = genealogy(vm, theirs, live.tty)
        assert listener["args"].startswith("sshd: /usr/sbin/sshd -D [listener]")
        check_pstree(vm, listener, priv, session, shell)
        ours = Live(vm, alice, vm.privsep_port)
        try:
            mine = genealogy(vm, titles, ours.tty)
            theirs_chain = (listener, priv, session, shell)
            comm = {p["pid"]: vm.root(f"cat /proc/{p['pid']}/comm").strip()
                    for p in (*mine[2:4], *theirs_chain[1:3])}
            compared = json.loads(vm.root(f"privsep-tree --pid {mine[1]['pid']} --compare "
                                          f"{listener['pid']} --json"))
        finally:
            ours.logout()
    finally:
        live.logout()
    # The same chain, owner by owner and program by program.
    assert [p["uid"] for p in mine[1:]] == [p["uid"] for p in theirs_chain]
    assert ([comm[p["pid"]] for p in mine[2:4]], [comm[p["pid"]] for p in theirs_chain[1:3]]) \
        == COMM[suite], comm
    assert [p["args"] for p in theirs_chain[1:3]] == \
        [f"{theirs.priv}: {USER} [priv]", f"{theirs.session}: {USER}@{live.tty}"]
    assert [p["args"] for p in mine[2:4]] == \
        [f"{titles.priv}: {USER} [priv]", f"{titles.session}: {USER}@{ours.tty}"]
    assert (compared["left"]["generation"], compared["right"]["generation"]) == \
        (GENERATION[suite], GENERATION[suite]), compared["left"]
    assert not [row for row in compared["comparison"] if "program" in row["differences"]], \
        compared["comparison"]


#: The guest's python3 reading utmp or wtmp (glibc's struct utmp on x86-64:
#: 384-byte records, ut_type, ut_pid, ut_line, ut_id, ut_user first): the
#: records of one line as [type, pid, user], oldest first. Read by the
#: guest's own python, not this project's loginrec, and not by `who`, which
#: on Debian 13 asks logind instead.
UTMP_READER = r"""
import json, struct, sys
head = struct.Struct("<h2xi32s4s32s")
data = open(sys.argv[1], "rb").read()
text = lambda raw: raw.split(b"\0", 1)[0].decode(errors="replace")
rows = []
for off in range(0, len(data) - 383, 384):
    kind, pid, line, _id, user = head.unpack_from(data, off)
    if text(line) == sys.argv[2]:
        rows.append([kind, pid, text(user)])
print(json.dumps(rows))
"""
USER_PROCESS, DEAD_PROCESS = 7, 8


def login_records(vm, path: str, line: str) -> list[list]:
    """utmp's or wtmp's records of ``line`` (pts/N) as [type, pid, user]."""
    return json.loads(vm.root(f"python3 - {path} {line}", input=UTMP_READER))


def set_generation(vm, line: str, expected: str) -> None:
    """sshd_config's ProcessGeneration line (or none: "") and a reload, as
    an operator changes it; waits until the daemon listens again and its -T
    shows the ``expected`` generation."""
    config = "/etc/privsep-sshd/sshd_config"
    vm.root(f"sed -i '/^ProcessGeneration /d' {config}"
            + (f" && echo '{line}' >> {config}" if line else ""))
    since = cursor(vm)
    vm.root(f"systemctl reload {UNIT}")
    wait_listening(vm, since)
    assert f"processgeneration {expected}" in vm.root("privsep-sshd -T").splitlines()


def test_the_other_generation(vm, alice) -> None:
    """This daemon in the generation the guest's sshd does NOT have (10 on
    bookworm, 9 on trixie), switched to by ProcessGeneration and a reload in
    the same guest: a pty login works; the genealogy, titles and kernel
    names are that generation's; privsep-tree names the generation; utmp,
    wtmp and `last` record the login and its logout. Then the default comes
    back (the line removed, reloaded) for the tests after this one."""
    suite = vm.image.suite
    other = OTHER_GENERATION[GENERATION[suite]]
    set_generation(vm, f"ProcessGeneration {other}", other)
    try:
        live = Live(vm, alice, vm.privsep_port)
        try:
            chain = genealogy(vm, TITLES[other], live.tty)
            init, listener, priv, session, shell = chain
            assert listener["pid"] == int(show(vm, "MainPID")["MainPID"])  # reloaded in place
            check_pstree(vm, listener, priv, session, shell)
            assert [vm.root(f"cat /proc/{p['pid']}/comm").strip() for p in (priv, session)] \
                == PRIVSEP_COMM[other]
            tree = json.loads(vm.root("privsep-tree --pidfile /run/privsep-sshd.pid --json"))
            assert tree["generation"] == other, tree
            roles = {p["pid"]: p["role"] for p in tree["processes"]}
            assert [roles.get(p["pid"]) for p in chain[1:4]] == \
                ["listener", "monitor", "session"], tree["processes"]
            # The login's records: utmp's live slot and wtmp's entry, both
            # with the monitor's pid; `last` (wtmpdb's on Debian 13).
            assert login_records(vm, "/run/utmp", live.tty) == \
                [[USER_PROCESS, priv["pid"], USER]]
            assert login_records(vm, "/var/log/wtmp", live.tty)[-1:] == \
                [[USER_PROCESS, priv["pid"], USER]]
            assert re.search(rf"^{USER}\s+{live.tty}\s+10\.0\.2\.2 .*still logged in",
                             vm.root(f"last -w {USER}"), re.M)
            live.alive()
        except BaseException:
            live.kill()
            raise
        live.logout()

        # After logout: utmp's slot rewritten as dead (user cleared, pid
        # kept), wtmp's logout appended after the login, `last` showing
        # the logout time.
        def logged_out() -> bool:
            last = vm.root(f"last -w {USER}")
            first = next(l for l in last.splitlines() if re.match(rf"{USER}\s+{live.tty}\s", l))
            return bool(re.search(r" - \d\d:\d\d\s+\(\d\d:\d\d\)$", first)
                        and login_records(vm, "/run/utmp", live.tty)
                        == [[DEAD_PROCESS, priv["pid"], ""]]
                        and login_records(vm, "/var/log/wtmp", live.tty)[-2:]
                        == [[USER_PROCESS, priv["pid"], USER], [DEAD_PROCESS, priv["pid"], ""]])
        wait_for(logged_out, timeout=60)
    finally:
        set_generation(vm, "", GENERATION[suite])
    assert login(vm, alice).check().stdout == "hello\n"


def test_readme_walkthrough(vm, alice) -> None:
    """README's "Try it in a VM" step 4, word for word, while USER is logged
    in to both daemons (steps 2 and 3)."""
    ours = Live(vm, alice, vm.privsep_port)
    theirs = Live(vm, alice, vm.ssh_port)
    try:
        since = cursor(vm)
        outputs = {}
        for line in readme_walkthrough():
            done = vm.ssh(line)
            assert done.returncode == 0, (line, done)
            outputs[line] = done.stdout
        text = "\n".join(outputs.values())
        assert text.count("Active: active (running)") >= 2, text
        assert f"Accepted publickey for {USER} from 10.0.2.2" in text, text
        assert text.count(f"{ours.tty} ") + text.count(f"{theirs.tty} ") >= 2, text
        # Both logins, each on its pts.
        assert re.search(rf"^{USER}\s+{theirs.tty}\s.*still logged in", text, re.M), text
        assert re.search(rf"^{USER}\s+{ours.tty}\s.*still logged in", text, re.M), text
        assert len(re.findall(rf",{USER}\n", text)) >= 2, text  # pstree: user@pts/N
        wait_listening(vm, since)  # its last line was a reload
        ours.alive()
        theirs.alive()
    finally:
        ours.logout()
        theirs.logout()


def password_login(vm, port: int, password: str = PASSWORD,
                   command: str = "id -un") -> subprocess.CompletedProcess:
    """USER's password login by the real client (its askpass answers), one
    password prompt: a wrong ``password`` is one failed attempt, then the
    client gives up."""
    askpass = vm.workdir / f"askpass-{abs(hash(password))}"
    if not askpass.exists():  # made whole, then renamed: threads may share it
        partial = askpass.with_name(f"{askpass.name}.{threading.get_ident()}")
        partial.write_text(f"#!/bin/sh\necho {shlex.quote(password)}\n")
        partial.chmod(0o700)
        os.replace(partial, askpass)
    argv = [*vm.ssh_argv(USER, port=port, connect_timeout=120,
                         options=["BatchMode=no", "PreferredAuthentications=password",
                                  "PubkeyAuthentication=no", "NumberOfPasswordPrompts=1"]),
            command]
    env = dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_password_login(vm, alice) -> None:
    done = password_login(vm, vm.privsep_port)
    assert done.returncode == 0 and done.stdout.strip() == USER, done


# --- PerSourcePenalties beside sshd 10.0 ------------------------------------

#: The two daemons compared, each started as an extra instance on a spare
#: guest port (vmlib.SPARE_PORTS) with one config file: Debian's sshd and
#: this one's installed command.
PENALTY_DAEMONS = {"openssh": ("/usr/sbin/sshd", vmlib.SPARE_PORTS[0]),
                   "privsep": ("/usr/local/sbin/privsep-sshd", vmlib.SPARE_PORTS[1])}
#: Sized for TCG, where one login costs the guest 6 to 15 s: a failed
#: password leaves a deferred 40 s penalty, a second one within 30 s makes
#: it more than min (50 s): active, for max (60 s) at most.
PENALTY_SHORT = ("PerSourcePenalties authfail:40 min:50 max:60", 50, 60)
PENALTY_DIR = "/root/penalties"


def openssh_major(vm) -> int:
    """The guest's OpenSSH major version (openssh-server's Debian version)."""
    version = vm.root("dpkg-query -W -f='${Version}' openssh-server").strip()
    return int(re.match(r"(?:\d+:)?(\d+)\.", version).group(1))


def penalty_config(vm, name: str, *lines: str) -> str:
    """A config file of ``lines`` for both daemons (their defaults for the
    rest: host keys, PAM); its path, the same for both."""
    path = f"{PENALTY_DIR}/{name}.conf"
    vm.root(f"mkdir -p {PENALTY_DIR} && cat > {path}", input="".join(f"{l}\n" for l in lines))
    return path


def penalty_dump(vm, path: str) -> dict[str, dict[str, str]]:
    """Each daemon's ``-T`` values of the two keywords (keyword -> value:
    sshd 10 prints the exempt list among its strings and the penalties
    last, this daemon both after sshd 9.2's keywords)."""
    found = {}
    for name, (command, _) in PENALTY_DAEMONS.items():
        out = vm.root(f"{command} -T -f {path}")
        found[name] = dict(l.split(" ", 1) for l in out.splitlines()
                           if l.startswith("persourcepenalt"))
    return found


def penalty_refusal(vm, path: str) -> dict[str, tuple[int, str]]:
    """Each daemon's ``-t`` exit status and stderr (its program name masked;
    line ends as "\n": sshd's log lines on stderr end "\r\n", this
    daemon's "\n", as tests/test_config.py allows too)."""
    found = {}
    for name, (command, _) in PENALTY_DAEMONS.items():
        done = vm.ssh(f"{command} -t -f {path}")
        found[name] = (done.returncode,
                       done.stderr.replace(command, "DAEMON").replace("\r\n", "\n"))
    return found


def start_penalty_daemons(vm, path: str) -> str:
    """Both daemons (again) as transient units pen-<name>, with ``path``
    and their own pid files; a cursor from before their start, once both
    listen."""
    since = cursor(vm)
    for name, (command, port) in PENALTY_DAEMONS.items():
        vm.root(f"systemctl stop pen-{name}.service 2>/dev/null; "
                f"systemctl reset-failed pen-{name}.service 2>/dev/null; "
                f"systemd-run --quiet --unit=pen-{name} {command} -D -f {path} -p {port} "
                f"-o PidFile=/run/pen-{name}.pid")
    wait_for(lambda: all(f"Server listening on 0.0.0.0 port {port}." in
                         journal_since(vm, since, unit=f"pen-{name}.service")
                         for name, (_, port) in PENALTY_DAEMONS.items()), timeout=180)
    return since


def penalty_lines(vm, since: str, name: str) -> list[str]:
    """The daemon's srclimit_penalise and drop lines since ``since``, its
    ports, connection numbers and the activated penalty's seconds masked
    (they depend on timing), in order, each once."""
    port = PENALTY_DAEMONS[name][1]
    found = []
    for line in journal_since(vm, since, unit=f"pen-{name}.service").splitlines():
        if "srclimit_penalise" not in line and "drop connection" not in line:
            continue
        line = re.sub(r"#\d+ ", "#N ", line)
        line = re.sub(r"\]:\d+ on ", "]:P on ", line).replace(f"]:{port} ", "]:PORT ")
        line = re.sub(r"activating ipv4 penalty of \d+ seconds",
                      "activating ipv4 penalty of S seconds", line)
        if line not in found:
            found.append(line)
    return found


def raw_answer(port: int) -> bytes:
    """What a plain TCP client reads from the host's forwarded ``port``
    before the daemon closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        data = b""
        while chunk := conn.recv(1024):
            data += chunk
    return data


def penalty_run(vm, alice: Path, since: str, name: str) -> dict:
    """Two failed passwords, then what the source meets: the daemon's
    log lines, a plain TCP client's bytes, when a key login works again."""
    host_port = vm.spare_ports[PENALTY_DAEMONS[name][1]]
    _, minimum, maximum = PENALTY_SHORT
    for _ in range(2):
        failed = password_login(vm, host_port, PASSWORD + "-wrong", "true")
        assert failed.returncode == 255 and "Permission denied" in failed.stderr, failed
    failed_at = time.monotonic()
    wait_for(lambda: any("activating" in l for l in penalty_lines(vm, since, name)),
             timeout=30)
    answer = raw_answer(host_port)
    wait_for(lambda: login(vm, alice, port=host_port).returncode == 0,
             timeout=maximum + 60, interval=2)
    return {"lines": penalty_lines(vm, since, name), "answer": answer,
            "reopened": minimum <= time.monotonic() - failed_at <= maximum + 20}


def exempt_run(vm, alice: Path, since: str, name: str) -> dict:
    """Two failed passwords from an exempt source, then a key login at once."""
    host_port = vm.spare_ports[PENALTY_DAEMONS[name][1]]
    for _ in range(2):
        failed = password_login(vm, host_port, PASSWORD + "-wrong", "true")
        assert failed.returncode == 255 and "Permission denied" in failed.stderr, failed
    ok = login(vm, alice, port=host_port)
    return {"lines": penalty_lines(vm, since, name), "login": (ok.returncode, ok.stdout)}


def both(function, *args) -> dict[str, dict]:
    """``function(*args, name)`` for both daemons at once (two threads): the
    guest's minutes go to each penalty's wait only once."""
    with concurrent.futures.ThreadPoolExecutor(len(PENALTY_DAEMONS)) as pool:
        futures = {name: pool.submit(function, *args, name) for name in PENALTY_DAEMONS}
        return {name: future.result() for name, future in futures.items()}


def test_penalties_side_by_side(vm, alice) -> None:
    """PerSourcePenalties (generation 10, on by default) beside sshd 10.0,
    each an extra instance on its own spare port with the same config file,
    field by field: ``-T`` lines, ``-t`` refusals, the penalty log lines and
    drop lines after two failed passwords, the bytes a refused client
    reads, the reopening after the penalty; and an exempt source."""
    if openssh_major(vm) < 10:
        pytest.skip(f"{vm.image.suite}'s sshd is OpenSSH {openssh_major(vm)}, without "
                    "PerSourcePenalties: compared with sshd 10.0 (trixie) only")
    seen: dict[str, dict] = {name: {} for name in PENALTY_DAEMONS}

    def note(topic: str, found: dict) -> None:
        for name, value in found.items():
            seen[name][topic] = value

    dumps = {
        "default": (),
        "no": ("PerSourcePenalties no",),
        "no-then-fields": ("PerSourcePenalties no",
                           "PerSourcePenalties authfail:1m overflow6:deny-all authfail:3"),
        "exempt-list": ("PerSourcePenaltyExemptList 10.0.0.0/8,::1",),
    }
    for case, lines in dumps.items():
        note(f"-T {case}", penalty_dump(vm, penalty_config(vm, f"dump-{case}", *lines)))
    refusals = {
        "crash": "PerSourcePenalties crash:x",
        "max-sources4": "PerSourcePenalties max-sources4:-1",
        "overflow": "PerSourcePenalties overflow:Deny-All",
        "exempt": "PerSourcePenaltyExemptList 10.0.0.0/33",
    }
    for case, line in refusals.items():
        note(f"-t {case}", penalty_refusal(vm, penalty_config(vm, f"bad-{case}", line)))

    try:
        path = penalty_config(vm, "short", "LogLevel VERBOSE", PENALTY_SHORT[0])
        note("penalty", both(penalty_run, vm, alice, start_penalty_daemons(vm, path)))
        path = penalty_config(vm, "exempt", "LogLevel VERBOSE", PENALTY_SHORT[0],
                              "PerSourcePenaltyExemptList 10.0.2.2")
        note("exempt", both(exempt_run, vm, alice, start_penalty_daemons(vm, path)))
    finally:
        vm.root("systemctl stop pen-openssh.service pen-privsep.service 2>/dev/null; true")

    theirs = seen["openssh"]
    # sshd 10.0 itself, as read in its source: the reference is what it is.
    expected = {
        "default -T": theirs["-T default"]["persourcepenalties"].startswith("crash:90 authfail:5 "),
        "no -T": theirs["-T no"]["persourcepenalties"] == "no",
        "-t statuses": all(theirs[f"-t {case}"][0] == 255 for case in refusals),
        "refused bytes": theirs["penalty"]["answer"] == b"Not allowed at this time\r\n",
        "reopened": theirs["penalty"]["reopened"],
        "drop line": any("drop connection" in l for l in theirs["penalty"]["lines"]),
        "exempt": theirs["exempt"] == {"lines": [], "login": (0, "hello\n")},
    }
    # ... and this daemon the same, field by field.
    differing = {topic: {"openssh": value, "privsep": seen["privsep"].get(topic)}
                 for topic, value in theirs.items() if seen["privsep"].get(topic) != value}
    report = json.dumps({"sshd 10.0 not as expected": [k for k, ok in expected.items() if not ok],
                         "differing": differing, "seen": seen}, indent=1, default=repr)
    assert all(expected.values()) and differing == {}, report


def test_reload_and_restart_keep_a_live_session(vm, alice) -> None:
    live = Live(vm, alice, vm.privsep_port)
    try:
        before = int(show(vm, "MainPID")["MainPID"])
        since = cursor(vm)
        vm.root(f"systemctl reload {UNIT}")
        wait_listening(vm, since)
        wait_for(lambda: show(vm, "SubState")["SubState"] == "running")
        log = journal_since(vm, since, ident="privsep-sshd")
        assert "Received SIGHUP; restarting." in log, log
        assert int(show(vm, "MainPID")["MainPID"]) == before  # re-exec in place
        assert vm.root(f"cat /run/{UNIT}.pid").strip() == str(before)
        live.alive()
        assert login(vm, alice).check().stdout == "hello\n"

        since = cursor(vm)
        vm.root(f"systemctl restart {UNIT}")
        after = int(show(vm, "MainPID")["MainPID"])
        assert after != before
        assert vm.root(f"systemctl is-active {UNIT}").strip() == "active"
        assert vm.root(f"cat /run/{UNIT}.pid").strip() == str(after)
        live.alive()  # KillMode=process: the session outlived its listener
        assert login(vm, alice).check().stdout == "hello\n"
    finally:
        live.logout()


def test_stop_then_start(vm, alice) -> None:
    live = Live(vm, alice, vm.privsep_port)
    try:
        vm.root(f"systemctl stop {UNIT}")
        assert vm.ssh(f"systemctl is-active {UNIT}").stdout.strip() == "inactive"
        assert login(vm, alice).returncode == 255  # nobody listens on 2222
        live.alive()
        vm.root(f"systemctl start {UNIT}")
        assert vm.root(f"systemctl is-active {UNIT}").strip() == "active"
        assert login(vm, alice).check().stdout == "hello\n"
        live.alive()
    finally:
        live.logout()


def test_broken_config(vm, alice) -> None:
    config = "/etc/privsep-sshd/sshd_config"
    vm.root(f"cp {config} /root/sshd_config.good && echo 'NoSuchKeyword yes' >> {config}")
    try:
        # reload: refused by ExecReload's -t; the old daemon keeps serving.
        before = int(show(vm, "MainPID")["MainPID"])
        reload = vm.ssh(f"systemctl reload {UNIT}")
        assert reload.returncode != 0, reload
        assert vm.root(f"systemctl is-active {UNIT}").strip() == "active"
        assert int(show(vm, "MainPID")["MainPID"]) == before
        assert login(vm, alice).check().stdout == "hello\n"

        # A SIGHUP straight to the daemon: it checks too, and keeps serving.
        since = cursor(vm)
        vm.root(f"kill -HUP {before}")
        log = wait_for(lambda: (lambda text: "Not restarting" in text and text)(
            journal_since(vm, since, ident="privsep-sshd")), timeout=120)
        assert "NoSuchKeyword" in log, log
        wait_for(lambda: show(vm, "SubState")["SubState"] == "running")
        assert int(show(vm, "MainPID")["MainPID"]) == before
        assert login(vm, alice).check().stdout == "hello\n"

        # restart: the start fails, with the error in status and journal.
        since = cursor(vm)
        restart = vm.ssh(f"systemctl restart {UNIT}")
        assert restart.returncode != 0, restart
        assert vm.ssh(f"systemctl is-active {UNIT}").stdout.strip() == "failed"
        status = vm.ssh(f"systemctl status --no-pager -l -n 20 {UNIT}").stdout
        assert "NoSuchKeyword" in status, status
        assert "NoSuchKeyword" in journal_since(vm, since, unit=f"{UNIT}.service")
        # Exit status 255 (a config error) is not retried by Restart=on-failure.
        time.sleep(2)
        assert show(vm, "NRestarts")["NRestarts"] == "0"
    finally:
        vm.root(f"cp /root/sshd_config.good {config}")
    vm.root(f"systemctl start {UNIT}")
    assert login(vm, alice).check().stdout == "hello\n"


def test_install_twice_changes_nothing(vm) -> None:
    before = show(vm, "MainPID", "ActiveEnterTimestamp")
    digest = "find /etc/privsep-sshd /etc/pam.d/privsep-sshd /etc/systemd/system " \
             "-type f -print0 | sort -z | xargs -0 sha256sum; getent passwd privsep-sshd"
    files_before = vm.root(digest)
    out = vm.root(INSTALL, timeout=1800)
    # Reinstalling the package from the checkout is the one thing done on
    # every run (install.sh's header); nothing else may change.
    lines = [l for l in out.splitlines() if not l.startswith("install.sh: reinstalled privsep-sshd ")]
    assert lines == [], out
    assert vm.root(digest) == files_before
    assert show(vm, "MainPID", "ActiveEnterTimestamp") == before


def test_install_after_an_edit_reloads(vm, alice) -> None:
    """README step 5 (vagrant rsync && vagrant provision): new code is
    installed and the running service reloads into it; sessions stay."""
    live = Live(vm, alice, vm.privsep_port)
    try:
        before = show(vm, "MainPID")["MainPID"]
        since = cursor(vm)
        vm.root("echo '# edited' >> /root/privsep-sshd/privsep/listener/listener.py")
        out = vm.root(INSTALL, timeout=1800)
        assert "install.sh: reloaded privsep-sshd.service" in out, out
        wait_listening(vm, since)
        assert show(vm, "MainPID")["MainPID"] == before
        assert vm.root("tail -n1 /opt/privsep-sshd/lib/python3*/site-packages/privsep/listener/listener.py"
                       ).strip() == "# edited"
        live.alive()
        assert login(vm, alice).check().stdout == "hello\n"
    finally:
        live.logout()


def test_uninstall_leaves_nothing(vm, alice) -> None:
    out = vm.root("cd /root/privsep-sshd && ./install.sh --uninstall", timeout=600)
    assert "stopped and disabled privsep-sshd.service" in out, out
    for path in ("/opt/privsep-sshd", "/usr/local/sbin/privsep-sshd", "/usr/local/bin/privsep-tree",
                 "/etc/privsep-sshd",
                 "/etc/pam.d/privsep-sshd", "/etc/systemd/system/privsep-sshd.service",
                 "/etc/systemd/system/multi-user.target.wants/privsep-sshd.service",
                 "/run/privsep-sshd", "/run/privsep-sshd.pid"):
        assert vm.ssh(f"test -e {path}").returncode == 1, f"{path} left behind"
    assert vm.ssh("getent passwd privsep-sshd").returncode == 2
    assert vm.ssh("getent group privsep-sshd").returncode == 2
    assert vm.ssh(f"systemctl list-unit-files --no-legend {UNIT}.service").stdout.strip() == ""
    assert vm.ssh(f"systemctl status {UNIT}").returncode == 4  # no such unit
    assert vm.root("pgrep -f '^privsep-sshd' || true").strip() == ""
    assert login(vm, alice).returncode == 255
    # Debian's sshd is untouched.
    assert login(vm, alice, port=vm.ssh_port).check().stdout == "hello\n"


# --- the README's commands from a clean clone -------------------------------

#: The README's way to point pip at a wheelhouse without changing the two
#: commands (pip reads its options from the environment); the guest has no
#: business downloading what the host already built.
PIP_ENV = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": vmlib.GUEST_WHEELS}
CLONE = "/root/clone"


@full_only
def test_readme_make_run_from_a_clean_clone(vm, alice) -> None:
    """`make run` word for word, as root, in a git clone of this commit,
    after install.sh --uninstall left nothing: it installs everything and
    serves on 2222 in the foreground; privsep-tree runs by name for root
    and for an ordinary user."""
    vm.root(f"rm -rf {CLONE} && git clone -q /root/privsep-sshd.bundle {CLONE}")
    assert vm.root(f"git -C {CLONE} status --porcelain --ignored") == ""
    since = cursor(vm)
    env = " ".join(f"-E {k}={v}" for k, v in PIP_ENV.items())
    vm.root(f"systemd-run --quiet --unit=readme-make-run --working-directory={CLONE} {env} "
            "make run")
    try:
        wait_for(lambda: "Server listening on 0.0.0.0 port 2222." in
                 journal_since(vm, since, unit="readme-make-run.service"), timeout=1200)
        log = journal_since(vm, since, unit="readme-make-run.service")
        for line in (f"install.sh: reinstalled privsep-sshd", "install.sh: created system user",
                     "install.sh: linked /usr/local/bin/privsep-tree"):
            assert line in log, log
        assert login(vm, alice).check().stdout == "hello\n"
        for who in ("root", USER):
            tree = vm.root(f"su - {who} -c 'privsep-tree --pidfile /run/privsep-sshd.pid'")
            assert re.match(r"privsep-sshd listener \d+:", tree), tree
    finally:
        vm.root("systemctl stop readme-make-run.service")
    assert login(vm, alice).returncode == 255


@full_only
def test_readme_make_test_from_a_clean_clone(vm) -> None:
    """`make test` word for word in the same clone: install.sh --test, the
    import contracts, pytest; narrowed by PYTEST_ADDOPTS to the install
    tests (the whole suite runs in CI, on the host, from a clean clone)."""
    env = " ".join(f"{k}={v}" for k, v in PIP_ENV.items())
    # PRIVSEP_SKIP_VM: this module's own test_install_* are not for a guest.
    done = vm.ssh(f"cd {CLONE} && {env} PRIVSEP_SKIP_VM=1 PYTEST_ADDOPTS='-k test_install' "
                  "make test", timeout=1800)
    assert done.returncode == 0, done
    assert "Contracts: " in done.stdout and " kept, 0 broken." in done.stdout, done.stdout
    assert re.search(r"^=+ 6 passed\b[^=]*deselected", done.stdout, re.M), done.stdout[-3000:]
    out = vm.root(f"cd {CLONE} && ./install.sh --uninstall")
    assert "removed /opt/privsep-sshd" in out, out


# --- the Debian package ------------------------------------------------------

def _build_deb(image: vmlib.Image, dest: Path) -> tuple[Path, float]:
    started = time.monotonic()
    return vmlib.build_deb(image, dest), time.monotonic() - started


@pytest.fixture(scope="module")
def deb(vm, request) -> Path:
    """This release's .deb, made by `make deb` in the release's own tree
    (started by the vm fixture, beside the guest)."""
    started = time.monotonic()
    build = vm.deb_build or concurrent.futures.ThreadPoolExecutor(1).submit(
        _build_deb, vm.image, vm.workdir / "dist")
    path, took = build.result()
    _say(request, f"vm {vm.image.suite}: make deb {took:.0f} s, waited for "
                  f"{time.monotonic() - started:.0f} s ({path.name}, "
                  f"{path.stat().st_size // 1024} KiB)")
    return path


@full_only
def test_deb_name_and_lintian(vm, deb) -> None:
    """privsep-sshd_<version>_<arch>.deb; lintian finds no error."""
    version = re.search(r'^version = "(.*)"$', (vmlib.REPO / "pyproject.toml").read_text(),
                        re.M).group(1)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert deb.name == f"privsep-sshd_{version}_{arch}.deb"
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed")
    done = subprocess.run(["lintian", "--tag-display-limit", "0", str(deb)],
                          capture_output=True, text=True, timeout=600)
    errors = [l for l in done.stdout.splitlines() if l.startswith("E: ")]
    assert errors == [], done.stdout


DEB_PATHS = ("/etc/privsep-sshd", "/etc/pam.d/privsep-sshd", "/usr/lib/privsep-sshd",
             "/usr/sbin/privsep-sshd", "/usr/bin/privsep-tree",
             "/lib/systemd/system/privsep-sshd.service", "/usr/lib/systemd/system/privsep-sshd.service",
             "/etc/systemd/system/multi-user.target.wants/privsep-sshd.service",
             "/run/privsep-sshd", "/run/privsep-sshd.pid")


@full_only
def test_deb_install_upgrade_purge(vm, alice, deb, request) -> None:
    """apt install ./privsep-sshd_*.deb: enabled and serving, host keys made
    on first start; an upgrade over itself keeps the edited conffile and a
    live session; purge leaves nothing."""
    config = "/etc/privsep-sshd/sshd_config"
    for path in DEB_PATHS:  # install.sh --uninstall left a clean machine
        assert vm.ssh(f"test -e {path}").returncode == 1, path
    vm.root(f"mkdir -p /root/debs && cat > /root/debs/{deb.name}", input=deb.read_bytes())
    apt = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300"
    since = cursor(vm)
    mark = time.monotonic()
    vm.root(f"{apt} install /root/debs/{deb.name}", timeout=1200)
    took = {"install": time.monotonic() - mark}
    assert vm.root(f"systemctl is-enabled {UNIT}").strip() == "enabled"
    wait_listening(vm, since)
    assert vm.root(f"systemctl is-active {UNIT}").strip() == "active"
    main = show(vm, "MainPID")["MainPID"]
    assert vm.root(f"ps -o args= -p {main}").strip().startswith(
        "privsep-sshd: /usr/sbin/privsep-sshd -D [listener]")
    assert vm.root("getent passwd privsep-sshd").strip().split(":")[3:] == \
        [vm.root("getent group nogroup").split(":")[2], "", "/nonexistent", "/usr/sbin/nologin"]
    keys = vm.root("ls /etc/privsep-sshd").split()
    assert {"ssh_host_ed25519_key", "ssh_host_ecdsa_key", "ssh_host_rsa_key"} <= set(keys), keys
    conffiles = vm.root("dpkg-query -W -f='${Conffiles}' privsep-sshd")
    assert config in conffiles and "/etc/pam.d/privsep-sshd" in conffiles, conffiles
    assert login(vm, alice).check().stdout == "hello\n"

    vm.root(f"printf '%s\\n' '# edited by the admin' 'LoginGraceTime 90' >> {config}")
    edited = vm.root(f"cat {config}")
    live = Live(vm, alice, vm.privsep_port)
    try:
        since = cursor(vm)
        mark = time.monotonic()
        vm.root(f"{apt} install --reinstall /root/debs/{deb.name}", timeout=1200)
        took["upgrade"] = time.monotonic() - mark
        assert vm.root(f"cat {config}") == edited  # the admin's edit kept
        wait_listening(vm, since)
        assert show(vm, "MainPID")["MainPID"] != main  # restarted into the new files
        assert "logingracetime 90" in vm.root("privsep-sshd -T").splitlines()
        live.alive()  # KillMode=process: the session outlived the upgrade
        assert login(vm, alice).check().stdout == "hello\n"
    finally:
        live.logout()

    mark = time.monotonic()
    vm.root(f"{apt} purge privsep-sshd", timeout=600)
    took["purge"] = time.monotonic() - mark
    _say(request, f"vm {vm.image.suite}: apt-get " + ", ".join(f"{k} {v:.0f} s"
                                                           for k, v in took.items()))
    for path in DEB_PATHS:
        assert vm.ssh(f"test -e {path}").returncode == 1, f"{path} left behind"
    assert vm.ssh("getent passwd privsep-sshd").returncode == 2
    assert vm.ssh("dpkg-query -W -f='${db:Status-Status}' privsep-sshd").stdout in ("", "not-installed")
    assert vm.ssh(f"systemctl status {UNIT}").returncode == 4  # no such unit
    assert vm.root("pgrep -f '^privsep-sshd' || true").strip() == ""
    assert login(vm, alice).returncode == 255
    assert login(vm, alice, port=vm.ssh_port).check().stdout == "hello\n"
