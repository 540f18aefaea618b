"""privsep.loginrec against real files, read back by utmpdump and who (util-linux, coreutils).

The expected shapes are the ones Debian's OpenSSH 9.2 sshd left in /run/utmp,
/var/log/wtmp and /var/log/lastlog on this machine (see privsep/monitor/loginrec.py).
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from privsep.monitor import loginrec, wtmpdb
from privsep.monitor.loginrec import (
    DEAD_PROCESS, EMPTY, LOGIN_PROCESS, USER_PROCESS, LoginRecord, UtmpEntry, ensure_utmp,
    read_records, record_login, record_logout, user_processes,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
needs_utmpdump = pytest.mark.skipif(shutil.which("utmpdump") is None,
                                    reason="utmpdump (util-linux) not installed")

T0 = 1_700_000_000.25  # 2023-11-14T22:13:20.250000Z


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    paths = {}
    for name in ("utmp", "wtmp", "lastlog"):
        p = tmp_path / name
        p.touch()
        paths[name] = str(p)
    paths["wtmpdb"] = str(tmp_path / "wtmp.db")  # made by libwtmpdb where it exists
    return paths


def login(files: dict[str, str], line: str = "pts/3", pid: int = 4242,
          user: str = "alice", host: str = "client.example",
          addr: str = "192.0.2.7", uid: int | None = None,
          when: float | None = T0) -> None:
    record_login(LoginRecord(user=user, line=line, pid=pid, host=host,
                             addr=addr, time=when),
                 utmp_path=files["utmp"], wtmp_path=files["wtmp"],
                 lastlog_path=files["lastlog"], uid=uid, wtmpdb_path=files["wtmpdb"])


def logout(files: dict[str, str], line: str = "pts/3", pid: int = 4242) -> None:
    record_logout(line, pid, utmp_path=files["utmp"], wtmp_path=files["wtmp"],
                  wtmpdb_path=files["wtmpdb"])


_DUMP_LINE = re.compile(r"^\[(\d+)\] \[(\d+)\] \[(.*?)\] \[(.*?)\] \[(.*?)\] "
                        r"\[(.*?)\] \[(.*?)\] \[(.*?)\]$")


def utmpdump(path: str) -> list[dict[str, str | int]]:
    """Parse `utmpdump` output into type, pid, id, user, line, host, addr, time."""
    out = subprocess.run(["utmpdump", path], check=True, capture_output=True,
                         text=True, env={**os.environ, "TZ": "UTC"}).stdout
    rows = []
    for text in out.splitlines():
        m = _DUMP_LINE.match(text)
        assert m, f"unexpected utmpdump line: {text!r}"
        typ, pid, id_, user, line, host, addr, when = m.groups()
        rows.append(dict(type=int(typ), pid=int(pid), id=id_.strip(),
                         user=user.strip(), line=line.strip(), host=host.strip(),
                         addr=addr.strip(), time=when))
    return rows


def test_struct_is_glibc_utmpx() -> None:
    assert loginrec.UTMP_RECORD_SIZE == 384
    assert loginrec.LASTLOG_RECORD_SIZE == 292
    e = UtmpEntry(type=USER_PROCESS, pid=7, line="pts/1", id="ts/1", user="u",
                  host="h", exit_termination=1, exit_status=2, session=3,
                  tv_sec=4, tv_usec=5, addr="2001:db8::5")
    raw = e.to_bytes()
    assert len(raw) == 384
    # Offsets of glibc's x86-64 layout, checked field by field.
    assert raw[0:2] == (7).to_bytes(2, "little") and raw[2:4] == b"\0\0"
    assert raw[4:8] == (7).to_bytes(4, "little")
    assert raw[8:13] == b"pts/1" and raw[40:44] == b"ts/1"
    assert raw[44:45] == b"u" and raw[76:77] == b"h"
    assert raw[332:336] == struct.pack("<hh", 1, 2)
    assert raw[336:348] == struct.pack("<iii", 3, 4, 5)
    assert raw[348:364] == bytes.fromhex("20010db8000000000000000000000005")
    assert raw[364:] == bytes(20)
    assert UtmpEntry.from_bytes(raw) == e


@needs_utmpdump
def test_login_record(files: dict[str, str]) -> None:
    login(files, line="/dev/pts/3", pid=4242)

    [u] = read_records(files["utmp"])
    assert (u.type, u.pid, u.line, u.id, u.user, u.host, u.addr) == (
        USER_PROCESS, 4242, "pts/3", "ts/3", "alice", "client.example", "192.0.2.7")
    assert (u.tv_sec, u.tv_usec) == (1_700_000_000, 250_000)
    assert read_records(files["wtmp"]) == [u]

    for path in (files["utmp"], files["wtmp"]):
        [d] = utmpdump(path)
        assert d == dict(type=7, pid=4242, id="ts/3", user="alice", line="pts/3",
                         host="client.example", addr="192.0.2.7",
                         time="2023-11-14T22:13:20,250000+00:00")


@needs_utmpdump
def test_logout_overwrites_login_slot(files: dict[str, str]) -> None:
    login(files, pid=4242)
    logout(files, pid=4242)

    # utmp: the same single slot, now dead; like glibc's logout() it keeps
    # the slot's pid, id and address and clears only user and host.
    [u] = read_records(files["utmp"])
    assert (u.type, u.pid, u.line, u.id, u.user, u.host, u.addr) == (
        DEAD_PROCESS, 4242, "pts/3", "ts/3", "", "", "192.0.2.7")
    assert u.tv_sec > T0
    [d] = utmpdump(files["utmp"])
    assert (d["type"], d["pid"], d["line"], d["id"], d["user"], d["host"]) == (
        8, 4242, "pts/3", "ts/3", "", "")

    # wtmp: login then a bare logout record, in that order.
    w = read_records(files["wtmp"])
    assert [(r.type, r.pid, r.line) for r in w] == [
        (USER_PROCESS, 4242, "pts/3"), (DEAD_PROCESS, 4242, "pts/3")]
    assert (w[1].id, w[1].user, w[1].host, w[1].addr) == ("", "", "", "0.0.0.0")
    dumped = utmpdump(files["wtmp"])
    assert [(d["type"], d["pid"], d["line"], d["id"], d["user"], d["host"], d["addr"])
            for d in dumped] == [
        (7, 4242, "pts/3", "ts/3", "alice", "client.example", "192.0.2.7"),
        (8, 4242, "pts/3", "", "", "", "0.0.0.0")]


def test_logout_without_login_leaves_utmp_alone(files: dict[str, str]) -> None:
    login(files, line="pts/1")
    before = Path(files["utmp"]).read_bytes()
    logout(files, line="pts/2", pid=99)
    assert Path(files["utmp"]).read_bytes() == before
    assert [(r.type, r.line, r.pid) for r in read_records(files["wtmp"])][-1] == (
        DEAD_PROCESS, "pts/2", 99)
    # A second logout of an already dead line does not touch its slot either.
    logout(files, line="pts/1")
    after = Path(files["utmp"]).read_bytes()
    logout(files, line="pts/1")
    assert Path(files["utmp"]).read_bytes() == after


def test_logout_touches_only_its_own_login(files: dict[str, str]) -> None:
    """Issue 11.2: another login now on the same line (another monitor's
    pid) keeps its USER_PROCESS entry when this monitor logs out."""
    login(files, line="pts/3", pid=5555, user="bob")
    logout(files, line="pts/3", pid=4242)
    [u] = read_records(files["utmp"])
    assert (u.type, u.pid, u.user) == (USER_PROCESS, 5555, "bob")
    [d] = utmpdump(files["utmp"])
    assert (d["type"], d["pid"], d["user"]) == (7, 5555, "bob")


def test_user_processes_are_the_login_entries_of_that_pid(files: dict[str, str]) -> None:
    """What the listener reads after each monitor: only USER_PROCESS entries
    naming that pid, the same as decoding every record and filtering, and
    not a logout record or another monitor's login that shares the pid
    field by accident of type."""
    login(files, line="pts/1", pid=4242)
    login(files, line="pts/2", pid=5555, user="bob")
    login(files, line="pts/3", pid=4242, user="carol")
    logout(files, line="pts/3", pid=4242)  # DEAD_PROCESS, pid 4242, same slot
    with open(files["utmp"], "ab") as handle:
        handle.write(_entry(LOGIN_PROCESS, line="tty1", id_="1", pid=4242))
    decoded = [e for e in read_records(files["utmp"])
               if e.type == USER_PROCESS and e.pid == 4242]
    assert user_processes(files["utmp"], 4242) == decoded
    assert [(e.line, e.user) for e in decoded] == [("pts/1", "alice")]
    assert [e.user for e in user_processes(files["utmp"], 5555)] == ["bob"]
    assert user_processes(files["utmp"], 1) == []


def _entry(type_: int, line: str = "", id_: str = "", user: str = "",
           pid: int = 0) -> bytes:
    return UtmpEntry(type=type_, pid=pid, line=line, id=id_, user=user, host="",
                     exit_termination=0, exit_status=0, session=0, tv_sec=1,
                     tv_usec=0, addr="").to_bytes()


def test_slot_choice(files: dict[str, str]) -> None:
    Path(files["utmp"]).write_bytes(
        _entry(2, "~", "~~", "reboot")                        # BOOT_TIME: never reused
        + _entry(USER_PROCESS, "pts/1", "ts/1", "stale", 1)   # a crashed session
        + _entry(EMPTY)
        + _entry(DEAD_PROCESS, "pts/5", "ts/5", "", 5))

    login(files, line="pts/1", user="a")   # same id: replaces the stale entry
    login(files, line="pts/2", user="b")   # new line: first EMPTY slot
    login(files, line="pts/5", user="c")   # old dead entry for that line
    login(files, line="pts/6", user="d")   # nothing free: appended
    assert [(r.type, r.line, r.user) for r in read_records(files["utmp"])] == [
        (2, "~", "reboot"),
        (USER_PROCESS, "pts/1", "a"),
        (USER_PROCESS, "pts/2", "b"),
        (USER_PROCESS, "pts/5", "c"),
        (USER_PROCESS, "pts/6", "d"),
    ]

    # Log out and in again on pts/2: still one slot for it, the same one.
    logout(files, line="pts/2")
    login(files, line="pts/2", user="e")
    recs = read_records(files["utmp"])
    assert len(recs) == 5
    assert (recs[2].type, recs[2].line, recs[2].user) == (USER_PROCESS, "pts/2", "e")
    assert [r.type for r in read_records(files["wtmp"])] == [7, 7, 7, 7, 8, 7]


def test_slot_matched_by_id_across_lines(files: dict[str, str]) -> None:
    # glibc's rule: when both records carry an id, the id decides, so pts/1101
    # and pts/11101 (both id "1101") share a slot; the newer login wins it.
    login(files, line="pts/1101", user="a")
    login(files, line="pts/11101", user="b")
    assert [(r.line, r.id, r.user) for r in read_records(files["utmp"])] == [
        ("pts/11101", "1101", "b")]


@needs_utmpdump
def test_ipv6_address(files: dict[str, str]) -> None:
    login(files, line="pts/4", addr="2001:db8::1", host="2001:db8::1")
    login(files, line="pts/5", addr="::ffff:192.0.2.9", host="192.0.2.9")
    login(files, line="pts/6", addr="fe80::1%eth0", host="fe80::1%eth0")
    recs = read_records(files["utmp"])
    assert [r.addr for r in recs] == ["2001:db8::1", "192.0.2.9", "fe80::1"]
    raw = Path(files["utmp"]).read_bytes()
    assert raw[348:364] == bytes.fromhex("20010db8000000000000000000000001")
    assert raw[384 + 348:384 + 364] == bytes([192, 0, 2, 9]) + bytes(12)
    assert [d["addr"] for d in utmpdump(files["utmp"])] == [
        "2001:db8::1", "192.0.2.9", "fe80::1"]


def test_bad_address_writes_nothing(files: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        login(files, addr="not-an-ip", uid=5)
    with pytest.raises(ValueError):
        login(files, uid=-1)
    for name in ("utmp", "wtmp", "lastlog"):
        assert os.path.getsize(files[name]) == 0


def test_lastlog_bytes(files: dict[str, str]) -> None:
    uid = 1234
    login(files, line="pts/7", host="client.example", uid=uid)
    data = Path(files["lastlog"]).read_bytes()
    assert len(data) == (uid + 1) * 292
    assert data[:uid * 292] == bytes(uid * 292)
    expected = ((1_700_000_000).to_bytes(4, "little")
                + b"pts/7".ljust(32, b"\0")
                + b"client.example".ljust(256, b"\0"))
    assert data[uid * 292:] == expected

    # A later login of another uid leaves this one alone.
    login(files, line="pts/8", host="other", uid=3)
    data2 = Path(files["lastlog"]).read_bytes()
    assert data2[uid * 292:] == expected
    assert data2[3 * 292 + 4:3 * 292 + 9] == b"pts/8"


def test_torn_wtmp_tail_is_cut_like_glibc(files: dict[str, str]) -> None:
    Path(files["wtmp"]).write_bytes(_entry(USER_PROCESS, "pts/0", "ts/0", "x")
                                    + b"\x07" * 100)
    login(files)
    assert os.path.getsize(files["wtmp"]) == 2 * 384
    assert [r.user for r in read_records(files["wtmp"])] == ["x", "alice"]


def test_missing_wtmp_raises_but_utmp_and_lastlog_are_written(
        files: dict[str, str]) -> None:
    os.unlink(files["wtmp"])
    with pytest.raises(FileNotFoundError):
        login(files, uid=2)
    assert [r.user for r in read_records(files["utmp"])] == ["alice"]
    assert os.path.getsize(files["lastlog"]) == 3 * 292
    assert not os.path.exists(files["wtmp"])  # never created


def test_concurrent_monitors(files: dict[str, str]) -> None:
    # Separate processes, as real monitors are: the POSIX locks keep slots
    # whole and give each line exactly one slot.
    procs, rounds = 6, 25
    pids = []
    for n in range(procs):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for _ in range(rounds):
                    login(files, line=f"pts/{n}", pid=os.getpid(), when=None)
                    logout(files, line=f"pts/{n}", pid=os.getpid())
                login(files, line=f"pts/{n}", pid=os.getpid(), when=None)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    assert os.path.getsize(files["utmp"]) == procs * 384
    assert sorted(r.line for r in read_records(files["utmp"])) == [
        f"pts/{n}" for n in range(procs)]
    assert all(r.type == USER_PROCESS for r in read_records(files["utmp"]))
    assert os.path.getsize(files["wtmp"]) == procs * (2 * rounds + 1) * 384


@needs_root
def test_ensure_utmp(tmp_path: Path) -> None:
    p = str(tmp_path / "utmp")
    old = os.umask(0o022)
    try:
        assert ensure_utmp(p) is True
    finally:
        os.umask(old)
    st = os.stat(p)
    try:
        gid = grp.getgrnam("utmp").gr_gid
    except KeyError:
        gid = 0
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size) == (
        0o664, 0, gid, 0)

    os.chmod(p, 0o644)
    Path(p).write_bytes(_entry(USER_PROCESS, "pts/1", "ts/1", "x"))
    assert ensure_utmp(p) is False
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    assert os.path.getsize(p) == 384


def _who_lines(line: str) -> list[list[str]]:
    out = subprocess.run(["who"], check=True, capture_output=True, text=True).stdout
    return [f for f in (t.split() for t in out.splitlines()) if len(f) > 1 and f[1] == line]


@needs_root
@pytest.mark.skipif(shutil.which("who") is None, reason="who not installed")
def test_real_utmp_seen_by_who(tmp_path: Path) -> None:
    ensure_utmp(loginrec.UTMP_PATH)
    line, user = "pts/987", "lrtest"
    wtmp = tmp_path / "wtmp"
    wtmp.touch()
    assert _who_lines(line) == []
    try:
        # who only lists entries whose pid is alive: use ours.
        record_login(LoginRecord(user=user, line=line, pid=os.getpid(),
                                 host="192.0.2.77", addr="192.0.2.77"),
                     wtmp_path=str(wtmp), wtmpdb_path=str(tmp_path / "wtmp.db"))
        seen = _who_lines(line)
        assert len(seen) == 1
        assert seen[0][0] == user and seen[0][-1] == "(192.0.2.77)"
    finally:
        record_logout(line, os.getpid(), wtmp_path=str(wtmp), wtmpdb_path=str(tmp_path / "wtmp.db"))
    assert _who_lines(line) == []
    mine = [r for r in read_records(loginrec.UTMP_PATH) if r.line == line]
    assert [(r.type, r.user, r.pid) for r in mine] == [(DEAD_PROCESS, "", os.getpid())]
    assert [r.type for r in read_records(str(wtmp))] == [USER_PROCESS, DEAD_PROCESS]


# --- wtmpdb (Debian 13) ----------------------------------------------------------

needs_wtmpdb = pytest.mark.skipif(not wtmpdb.available() or shutil.which("wtmpdb") is None,
                                  reason="libwtmpdb0 and wtmpdb not installed (Debian 13 has "
                                         "them; tests/test_vm.py checks `last` in its trixie guest)")


@needs_wtmpdb
def test_wtmpdb_login_and_logout_read_back_by_wtmpdb_last(files: dict[str, str]) -> None:
    """The entry sshd 10.0 writes: user, pts, host; closed by line at logout.
    Read back by wtmpdb's own `last` (the `last` of Debian 13)."""
    def last() -> list[str]:
        done = subprocess.run(["wtmpdb", "last", "-f", files["wtmpdb"], "-w"],
                              capture_output=True, text=True, check=True)
        return [l for l in done.stdout.splitlines() if l.startswith("alice ")]
    login(files, when=time.time())
    (open_line,) = last()
    assert open_line.split()[:3] == ["alice", "pts/3", "client.example"], open_line
    assert "still logged in" in open_line
    logout(files)
    logout(files)  # a second logout finds no open entry and changes nothing
    (closed,) = last()
    assert closed.split()[:3] == ["alice", "pts/3", "client.example"], closed
    assert "still logged in" not in closed and re.search(r" - \d\d:\d\d ", closed), closed
