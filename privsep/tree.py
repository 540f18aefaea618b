"""privsep-tree: the annotated genealogy of a running sshd, read from /proc.

    privsep-tree                      # the listener in /run/privsep-sshd.pid
    privsep-tree --pid 4711 --json    # any listener, OpenSSH's sshd too
    privsep-tree --compare 812        # and real sshd's tree beside it
    privsep-tree --watch 2            # redraw every 2 s until Ctrl-C

Read-only and unprivileged: it runs as whoever calls it and shows what /proc
lets that user see, saying what was hidden.  Nothing is written anywhere.

How descriptors are resolved:

- TCP: the socket inode from /proc/PID/fd/N (``socket:[INODE]``) is looked up
  in /proc/PID/net/tcp and tcp6 (the process's own network namespace), which
  give both addresses and the state.
- Unix sockets: the kernel knows each connected socket's peer, but /proc does
  not say it.  We ask the kernel with one NETLINK_SOCK_DIAG dump
  (AF_UNIX, UDIAG_SHOW_PEER | UDIAG_SHOW_NAME), which any user may make, then
  find the process holding the peer inode by scanning the /proc/PID/fd of the
  tree (then of every process, if the peer is outside the tree).  This is what
  ``ss -xp`` does, without running ``ss`` or parsing its output.
- Pipes: the same inode held by two processes of the tree.
- pty master: ``/dev/ptmx`` with ``tty-index`` from /proc/PID/fdinfo/N.
- Controlling tty: ``tty_nr`` from /proc/PID/stat, decoded (major 136-143 is
  /dev/pts).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import grp
import re
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

DEFAULT_PIDFILE = "/run/privsep-sshd.pid"

CAP_NAMES = [
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
    "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
    "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
    "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
]

TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}
UNIX_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}
SECCOMP = {"0": "off", "1": "strict", "2": "filter"}
ROLE_ORDER = ("listener", "monitor", "net-child", "session", "shell", "other")
NO_LOGINUID = 4294967295


class Gone(Exception):
    """The process exited while we were reading it."""


# --- reading /proc ----------------------------------------------------------------

def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace")


def _all_pids() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def _stat_fields(pid: int) -> tuple[str, list[str]]:
    """(comm, fields after comm) of /proc/PID/stat; raises OSError if gone."""
    text = _read(f"/proc/{pid}/stat")
    comm = text[text.index("(") + 1:text.rindex(")")]
    return comm, text[text.rindex(")") + 2:].split()


def parent_map() -> dict[int, int]:
    parents = {}
    for pid in _all_pids():
        try:
            parents[pid] = int(_stat_fields(pid)[1][1])
        except (OSError, ValueError, IndexError):
            continue  # exited while listing
    return parents


def descendants(root: int, parents: dict[int, int]) -> list[tuple[int, int]]:
    """(pid, depth) in tree order: each process followed by its children."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out: list[tuple[int, int]] = []

    def walk(pid: int, depth: int) -> None:
        out.append((pid, depth))
        for child in sorted(children.get(pid, [])):
            walk(child, depth + 1)
    walk(root, 0)
    return out


def decode_tty(tty_nr: int) -> str | None:
    """tty_nr of /proc/PID/stat as a name under /dev ('pts/3'), None if no tty."""
    if tty_nr == 0:
        return None
    major, minor = os.major(tty_nr), os.minor(tty_nr)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    if major == 5 and minor == 1:
        return "console"
    return f"tty({major}:{minor})"


def caps_text(hexmask: str | None, last_cap: int) -> str | None:
    """'none', 'full', or the names (or the missing names) of a capability mask."""
    if hexmask is None:
        return None
    mask = int(hexmask, 16)
    full = (1 << (last_cap + 1)) - 1
    if mask == 0:
        return "none"
    if mask & full == full:
        return "full"
    name = lambda bit: CAP_NAMES[bit] if bit < len(CAP_NAMES) else f"cap{bit}"  # noqa: E731
    have = [name(b) for b in range(last_cap + 1) if mask >> b & 1]
    missing = [name(b) for b in range(last_cap + 1) if not mask >> b & 1]
    if len(missing) < len(have):
        return "all but " + ",".join(missing)
    return ",".join(have)


def _last_cap() -> int:
    try:
        return int(_read("/proc/sys/kernel/cap_last_cap"))
    except (OSError, ValueError):
        return len(CAP_NAMES) - 1


def _user(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


# --- sockets ----------------------------------------------------------------------------

def _hex_addr(text: str) -> str:
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four host-order 32-bit words
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
        ip = ip.removeprefix("::ffff:") if ip.startswith("::ffff:") and "." in ip else ip
        ip = f"[{ip}]" if ":" in ip else ip
    return f"{ip}:{int(port, 16)}"


def tcp_table(pid: int) -> dict[int, dict]:
    """inode -> {local, remote, state} from /proc/PID/net/tcp and tcp6."""
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = _read(f"/proc/{pid}/net/{name}").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            table[int(parts[9])] = {
                "local": _hex_addr(parts[1]), "remote": _hex_addr(parts[2]),
                "state": TCP_STATES.get(parts[3], parts[3]),
            }
    return table


def unix_diag() -> tuple[dict[int, dict], str | None]:
    """inode -> {type, peer_inode, name} for every AF_UNIX socket of this
    network namespace, asked of the kernel with NETLINK_SOCK_DIAG.
    Returns (table, None) or ({}, why it failed)."""
    NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
    NLM_F_REQUEST, NLM_F_DUMP, NLMSG_DONE, NLMSG_ERROR = 1, 0x300, 3, 2
    UDIAG_SHOW_NAME, UDIAG_SHOW_PEER = 1, 4
    UNIX_DIAG_NAME, UNIX_DIAG_PEER = 0, 2
    table: dict[int, dict] = {}
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    except OSError as exc:
        return {}, f"sock_diag unavailable: {exc.strerror}"
    with sock:
        req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0,
                          UDIAG_SHOW_NAME | UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF)
        hdr = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        try:
            sock.sendto(hdr + req, (0, 0))
            done = False
            while not done:
                data = sock.recv(65536)
                if not data:
                    break
                off = 0
                while off + 16 <= len(data):
                    length, kind, _, _, _ = struct.unpack_from("=IHHII", data, off)
                    if length < 16:
                        done = True
                        break
                    if kind == NLMSG_DONE:
                        done = True
                        break
                    if kind == NLMSG_ERROR:
                        errno = -struct.unpack_from("=i", data, off + 16)[0]
                        return {}, f"sock_diag error: {os.strerror(errno)}"
                    body = data[off + 16:off + length]
                    _family, stype, _state, _pad, inode = struct.unpack_from("=BBBBI", body)
                    entry = {"type": UNIX_TYPES.get(stype, str(stype)), "peer_inode": None,
                             "name": None}
                    pos = 16  # struct unix_diag_msg
                    while pos + 4 <= len(body):
                        alen, atype = struct.unpack_from("=HH", body, pos)
                        if alen < 4:
                            break
                        value = body[pos + 4:pos + alen]
                        if atype == UNIX_DIAG_PEER and len(value) >= 4:
                            entry["peer_inode"] = struct.unpack("=I", value[:4])[0] or None
                        elif atype == UNIX_DIAG_NAME and value:
                            entry["name"] = ("@" + value[1:].decode("utf-8", "replace")
                                             if value[0] == 0 else
                                             value.rstrip(b"\0").decode("utf-8", "replace"))
                        pos += (alen + 3) & ~3
                    table[inode] = entry
                    off += (length + 3) & ~3
        except OSError as exc:
            return {}, f"sock_diag failed: {exc.strerror}"
    return table, None


# --- one process ---------------------------------------------------------------------

@dataclass
class Proc:
    pid: int
    depth: int = 0
    ppid: int | None = None
    comm: str | None = None
    title: str | None = None
    role: str = "other"
    uid: list[int] | None = None  # real, effective, saved, fs
    gid: list[int] | None = None
    groups: list[int] | None = None
    sid: int | None = None
    pgid: int | None = None
    tty: str | None = None
    root: str | None = None
    no_new_privs: int | None = None
    cap_eff: str | None = None
    cap_bnd: str | None = None
    cap_eff_hex: str | None = None
    cap_bnd_hex: str | None = None
    seccomp: str | None = None
    loginuid: int | None = None
    cgroup: list[str] | None = None
    fds: list[dict] | None = None
    hidden: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["user"] = _user(self.uid[1]) if self.uid else None
        out["loginuid"] = None if self.loginuid in (None, NO_LOGINUID) else self.loginuid
        return out


def read_proc(pid: int, depth: int, last_cap: int) -> Proc:
    """Everything /proc lets us read about ``pid``; raises Gone if it exited."""
    p = Proc(pid, depth)
    try:
        p.comm, fields = _stat_fields(pid)
        p.ppid, p.pgid, p.sid = int(fields[1]), int(fields[2]), int(fields[3])
        p.tty = decode_tty(int(fields[4]))
        status = dict(line.split(":", 1) for line in _read(f"/proc/{pid}/status").splitlines()
                      if ":" in line)
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        raise Gone(pid) from None
    except PermissionError:
        p.hidden.append("status")
        return p
    p.uid = [int(x) for x in status.get("Uid", "").split()] or None
    p.gid = [int(x) for x in status.get("Gid", "").split()] or None
    p.groups = [int(x) for x in status.get("Groups", "").split()]
    nnp = status.get("NoNewPrivs", "").strip()
    p.no_new_privs = int(nnp) if nnp else None
    p.seccomp = SECCOMP.get(status.get("Seccomp", "").strip())
    p.cap_eff_hex = status.get("CapEff", "").strip() or None
    p.cap_bnd_hex = status.get("CapBnd", "").strip() or None
    p.cap_eff = caps_text(p.cap_eff_hex, last_cap)
    p.cap_bnd = caps_text(p.cap_bnd_hex, last_cap)
    try:
        raw = _read(f"/proc/{pid}/cmdline")
        p.title = raw.rstrip("\0").replace("\0", " ") or f"[{p.comm}]"
    except PermissionError:
        p.hidden.append("title")
    except OSError:
        raise Gone(pid) from None
    try:
        p.loginuid = int(_read(f"/proc/{pid}/loginuid"))
    except (OSError, ValueError):
        p.hidden.append("loginuid")
    try:
        lines = _read(f"/proc/{pid}/cgroup").splitlines()
        p.cgroup = [line for line in lines if line]
    except OSError:
        p.hidden.append("cgroup")
    try:
        p.root = os.readlink(f"/proc/{pid}/root")
    except PermissionError:
        p.hidden.append("root")
    except OSError:
        raise Gone(pid) from None
    p.fds = _read_fds(pid, p)
    return p


def _read_fds(pid: int, p: Proc) -> list[dict] | None:
    try:
        names = sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))
    except PermissionError:
        p.hidden.append("fds")
        return None
    except OSError:
        raise Gone(pid) from None
    fds = []
    for fd in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except PermissionError:
            p.hidden.append("fds")
            return None
        except OSError:
            continue  # closed while we looked
        entry: dict = {"fd": fd, "target": target}
        m = re.fullmatch(r"(socket|pipe):\[(\d+)\]", target)
        if m:
            entry["kind"] = m.group(1)
            entry["inode"] = int(m.group(2))
        elif target in ("/dev/ptmx", "/dev/pts/ptmx"):
            entry["kind"] = "ptmx"
            try:
                info = _read(f"/proc/{pid}/fdinfo/{fd}")
                idx = re.search(r"^tty-index:\s*(\d+)", info, re.M)
                entry["pts"] = f"pts/{idx.group(1)}" if idx else None
            except OSError:
                entry["pts"] = None
        elif re.fullmatch(r"/dev/pts/\d+", target):
            entry["kind"] = "pts"
            entry["pts"] = target.removeprefix("/dev/")
        elif target == "/dev/null":
            entry["kind"] = "null"
        elif target.startswith("anon_inode:"):
            entry["kind"] = "anon"
        elif target.startswith("/"):
            entry["kind"] = "file"
        else:
            entry["kind"] = "other"
        fds.append(entry)
    return fds


def infer_role(p: Proc, parent: Proc | None) -> str:
    """From the title, as ps shows it (privsep-sshd and OpenSSH use the same words)."""
    title = p.title or ""
    if "[listener]" in title:
        return "listener"
    if title.endswith("[priv]") or title.endswith("[accepted]"):
        return "monitor"
    if title.endswith("[net]") or title.endswith("[preauth]"):
        return "net-child"
    if re.search(r"[^\s:]+@(pts/\d+|notty)$", title):
        return "session"
    if parent is not None and parent.role == "session":
        return "shell"
    return "other"


# --- the whole tree ---------------------------------------------------------------------

@dataclass
class Tree:
    root: int
    procs: list[Proc]
    notes: list[str]
    daemon: str = "?"

    def by_pid(self) -> dict[int, Proc]:
        return {p.pid: p for p in self.procs}

    def to_json(self) -> dict:
        return {"listener": self.root, "daemon": self.daemon, "notes": self.notes,
                "processes": [p.to_json() for p in self.procs]}


def build(root: int) -> Tree:
    """Read ``root`` and its descendants.  Raises LookupError if root does not exist."""
    if root <= 0 or not os.path.exists(f"/proc/{root}"):
        raise LookupError(f"no process with pid {root}")
    last_cap = _last_cap()
    notes: list[str] = []
    procs: list[Proc] = []
    by_pid: dict[int, Proc] = {}
    for pid, depth in descendants(root, parent_map()):
        try:
            p = read_proc(pid, depth, last_cap)
        except Gone:
            if pid == root:
                raise LookupError(f"process {root} exited while being read") from None
            notes.append(f"pid {pid} exited while being read; left out")
            continue
        parent = by_pid.get(p.ppid) if p.ppid is not None else None
        if parent is not None:
            parent.children.append(pid)
        elif pid != root:
            continue  # its parent was left out: so is it
        p.role = infer_role(p, parent)
        procs.append(p)
        by_pid[pid] = p
    tree = Tree(root, procs, notes)
    first = procs[0]
    title = first.title or ""
    tree.daemon = ("privsep-sshd" if title.startswith("privsep-sshd") or "privsep" in title
                   else "sshd" if "sshd" in title or first.comm == "sshd" else "?")
    if first.role != "listener":
        notes.insert(0, f"pid {root} ({first.title or first.comm}) does not look like an sshd "
                        "listener: no '[listener]' in its title; showing its descendants anyway")
    _link_fds(tree)
    _hidden_notes(tree)
    return tree


def _link_fds(tree: Tree) -> None:
    """Fill in TCP addresses, unix peers and pipe ends."""
    holders: dict[int, list[tuple[Proc, int]]] = {}
    for p in tree.procs:
        for entry in p.fds or []:
            if "inode" in entry:
                holders.setdefault(entry["inode"], []).append((p, entry["fd"]))
    tcp = tcp_table(tree.root)
    unix, why = (unix_diag() if any(e.get("kind") == "socket" for p in tree.procs
                                    for e in p.fds or []) else ({}, None))
    if why:
        tree.notes.append(f"unix socket peers unknown ({why})")
    outside: dict[int, tuple[int, str, int]] | None = None

    def owner_outside(inode: int) -> tuple[int, str, int] | None:
        nonlocal outside
        if outside is None:
            outside = _scan_all_sockets({e for e, _ in unix.items()})
        return outside.get(inode)

    def who(proc: Proc, fd: int) -> dict:
        return {"pid": proc.pid, "fd": fd, "role": proc.role, "title": proc.title}

    for p in tree.procs:
        for entry in p.fds or []:
            inode = entry.get("inode")
            if entry["kind"] == "pipe":
                held = holders.get(inode, [])
                entry["peers"] = [who(q, fd) for q, fd in held if q.pid != p.pid]
                entry["both_ends_here"] = sum(q.pid == p.pid for q, _ in held) > 1
            elif entry["kind"] == "socket":
                if inode in tcp:
                    entry.update(kind="tcp", **tcp[inode])
                elif inode in unix:
                    u = unix[inode]
                    entry.update(kind="unix", type=u["type"], name=u["name"],
                                 peer_inode=u["peer_inode"], peer=None)
                    peer = u["peer_inode"]
                    if peer:
                        inside = holders.get(peer)
                        if inside:
                            entry["peer"] = who(*inside[0])
                        else:
                            found = owner_outside(peer)
                            if found:
                                entry["peer"] = {"pid": found[0], "fd": found[2], "role": None,
                                                 "title": found[1]}
                            name = unix.get(peer, {}).get("name")
                            if name:
                                entry["peer_name"] = name


def _scan_all_sockets(wanted: set[int]) -> dict[int, tuple[int, str, int]]:
    """inode -> (pid, title, fd) over every process we may read."""
    found = {}
    for pid in _all_pids():
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m and int(m.group(1)) in wanted and int(m.group(1)) not in found:
                try:
                    title = _read(f"/proc/{pid}/cmdline").rstrip("\0").replace("\0", " ")
                except OSError:
                    title = "?"
                found[int(m.group(1))] = (pid, title, int(name))
    return found


def _hidden_notes(tree: Tree) -> None:
    hidden: dict[str, list[int]] = {}
    for p in tree.procs:
        for what in dict.fromkeys(p.hidden):
            hidden.setdefault(what, []).append(p.pid)
    for what, pids in hidden.items():
        tree.notes.append(f"hidden: {what} of pid {', '.join(map(str, pids))} "
                          f"(/proc refuses uid {os.geteuid()}; run as root to see them)")


# --- text -----------------------------------------------------------------------------------

def _ids(values: list[int] | None, name=_user) -> str:
    if not values:
        return "?"
    r, e, s, f = (values + values[-1:] * 4)[:4]
    if r == e == s == f:
        return f"{r}({name(r)})"
    return f"{r}/{e}/{s}/{f}"


def fd_text(entry: dict) -> str:
    kind = entry["kind"]
    if kind == "tcp":
        if entry["state"] == "LISTEN":
            return f"tcp listen {entry['local']}"
        return f"tcp {entry['local']} <-> {entry['remote']} {entry['state']}"
    if kind == "unix":
        text = f"unix {entry['type']}"
        if entry.get("name"):
            text += f" {entry['name']}"
        peer = entry.get("peer")
        if peer:
            role = f" {peer['role']}" if peer.get("role") else ""
            text += f" <-> pid {peer['pid']}{role} fd {peer['fd']}"
            if not peer.get("role"):
                text += f" ({peer['title']})"
        elif entry.get("peer_name"):
            text += f" <-> {entry['peer_name']}"
        elif entry.get("peer_inode"):
            text += f" <-> socket {entry['peer_inode']} (owner not visible)"
        else:
            text += " (no peer)" if entry.get("name") is None else ""
        return text
    if kind == "pipe":
        peers = entry.get("peers") or []
        if peers:
            return "pipe <-> " + ", ".join(f"pid {q['pid']} {q['role']} fd {q['fd']}" for q in peers)
        return f"pipe:[{entry['inode']}]" + (" (both ends here)" if entry.get("both_ends_here") else "")
    if kind == "socket":
        return f"socket:[{entry['inode']}] (not tcp or unix)"
    if kind == "ptmx":
        return f"pty master (/dev/ptmx) of {entry.get('pts') or 'pts/?'}"
    if kind == "pts":
        return f"/dev/{entry['pts']}"
    if kind == "null":
        return "/dev/null"
    return entry["target"]


def _cgroup_text(lines: list[str] | None) -> str:
    if lines is None:
        return "(hidden)"
    unified = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    others = [line.split(":", 2)[1] + ":" + line.split(":", 2)[2] for line in lines
              if not line.startswith("0::") and line.count(":") >= 2
              and line.split(":", 2)[2] not in ("/", *unified)]
    return " ".join(unified + others) or "/"


def proc_lines(p: Proc) -> list[str]:
    """A process as a header line and its detail lines (no tree drawing)."""
    lines = [f"{p.pid} {p.role}  {p.title if p.title is not None else '(title hidden)'}"]
    if "status" in p.hidden:
        return lines + ["(status hidden)"]
    groups = ",".join(_group(g) for g in p.groups) if p.groups else "none"
    lines.append(f"uid {_ids(p.uid)} gid {_ids(p.gid, _group)} groups {groups}")
    own = " (leader)" if p.sid == p.pid else ""
    lines.append(f"sid {p.sid}{own} pgid {p.pgid} tty {p.tty or 'none'} ppid {p.ppid}")
    root = p.root if p.root is not None else "(hidden)"
    login = ("unset" if p.loginuid == NO_LOGINUID else
             f"{p.loginuid}({_user(p.loginuid)})" if p.loginuid is not None else "(hidden)")
    lines.append(f"root {root} no_new_privs {p.no_new_privs} seccomp {p.seccomp} "
                 f"loginuid {login}")
    lines.append(f"CapEff {p.cap_eff} CapBnd {p.cap_bnd}")
    lines.append(f"cgroup {_cgroup_text(p.cgroup)}")
    if p.fds is None:
        lines.append("fds (hidden)")
    else:
        grouped: list[tuple[list[int], str]] = []
        for entry in p.fds:
            text = fd_text(entry)
            if grouped and grouped[-1][1] == text:
                grouped[-1][0].append(entry["fd"])
            else:
                grouped.append(([entry["fd"]], text))
        for fds, text in grouped:
            lines.append(f"fd {','.join(map(str, fds))}: {text}")
    return lines


def render(tree: Tree) -> list[str]:
    """The indented tree: each child's block under its parent, with lines."""
    by_pid = tree.by_pid()
    out = [f"{tree.daemon} listener {tree.root}:" if tree.procs[0].role == "listener"
           else f"pid {tree.root}:"]

    def walk(p: Proc, prefix: str, last: bool, top: bool) -> None:
        body = proc_lines(p)
        head_branch = "" if top else ("└─ " if last else "├─ ")
        cont = "" if top else ("   " if last else "│  ")
        kids = [by_pid[c] for c in p.children if c in by_pid]
        out.append(prefix + head_branch + body[0])
        detail_bar = "│  " if kids else "   "
        for line in body[1:]:
            out.append(prefix + cont + detail_bar + line)
        for i, kid in enumerate(kids):
            walk(kid, prefix + cont, i == len(kids) - 1, False)
    walk(tree.procs[0], "", True, True)
    for note in tree.notes:
        out.append(f"note: {note}")
    return out


# --- comparison ---------------------------------------------------------------------------

def _uid_kind(p: Proc, tree: Tree) -> str:
    if not p.uid:
        return "?"
    users = {q.uid[1] for q in tree.procs if q.role in ("session", "shell") and q.uid}
    kinds = []
    for uid in dict.fromkeys(p.uid[:2]):
        kinds.append("root" if uid == 0 else "login user" if uid in users
                     else "privsep user")
    return "/".join(kinds)


def _fd_shape(p: Proc) -> str:
    """The descriptors that show the design: connections, socketpairs to
    other processes of the tree, ptys; each kind once (dups and the stdio
    that -e or -D left behind are not the design)."""
    if p.fds is None:
        return "(hidden)"
    kinds = set()
    for e in p.fds:
        kind = e["kind"]
        if kind == "tcp":
            kinds.add("tcp listen" if e["state"] == "LISTEN" else "tcp conn")
        elif kind == "unix" and (e.get("peer") or {}).get("role"):
            kinds.add(f"unix<->{e['peer']['role']}")
        elif kind in ("ptmx", "pts"):
            kinds.add(kind)
    return ", ".join(sorted(kinds)) or "none"


COMPARED = ("title", "uid", "groups", "session", "tty", "root", "no_new_privs", "seccomp",
            "CapEff", "CapBnd", "loginuid", "fds")


def shape(p: Proc, tree: Tree) -> dict[str, str]:
    """What should match between two sshds, with pids, names and numbers taken out."""
    title = p.title or ""
    title = re.sub(r"^(privsep-sshd|sshd): ", "", title)
    title = re.sub(r"pts/\d+", "pts/N", title)
    if p.role == "listener":
        title = re.sub(r"^.*\[listener\]", "... [listener]", title)
    login = ("unset" if p.loginuid in (None, NO_LOGINUID) else
             "root" if p.loginuid == 0 else "login user")
    return {
        "title": title,
        "uid": _uid_kind(p, tree),
        "groups": "none" if not p.groups else "some",
        "session": "leader" if p.sid == p.pid else "inherited",
        "tty": re.sub(r"\d+", "N", p.tty) if p.tty else "none",
        "root": "/" if p.root == "/" else "chroot" if p.root else "(hidden)",
        "no_new_privs": str(p.no_new_privs),
        "seccomp": str(p.seccomp),
        "CapEff": str(p.cap_eff),
        "CapBnd": str(p.cap_bnd),
        "loginuid": login,
        "fds": _fd_shape(p),
    }


def _role_paths(tree: Tree) -> list[tuple[str, Proc]]:
    """Each process keyed by its chain of roles from the listener, numbered
    among siblings of the same role: 'listener/monitor#1/session#1/shell#1'."""
    by_pid = tree.by_pid()
    keys: dict[int, str] = {}
    out = []
    for p in tree.procs:
        parent = by_pid.get(p.ppid) if p.pid != tree.root else None
        base = (keys[parent.pid] + "/" if parent else "") + p.role
        n = sum(1 for k in keys.values() if k.rsplit("#", 1)[0] == base) + 1
        keys[p.pid] = f"{base}#{n}"
        out.append((keys[p.pid], p))
    return out


def compare(left: Tree, right: Tree) -> list[dict]:
    """Rows aligned by role path, with the differing fields of each."""
    lpaths, rpaths = dict(_role_paths(left)), dict(_role_paths(right))
    order = list(lpaths) + [k for k in rpaths if k not in lpaths]
    rows = []
    for key in order:
        lp, rp = lpaths.get(key), rpaths.get(key)
        ls = shape(lp, left) if lp else None
        rs = shape(rp, right) if rp else None
        if ls and rs:
            diffs = [f for f in COMPARED if ls[f] != rs[f]]
        else:
            diffs = ["only in " + ("left" if lp else "right")]
        rows.append({"path": key, "left": lp.pid if lp else None, "right": rp.pid if rp else None,
                     "left_shape": ls, "right_shape": rs, "differences": diffs})
    return rows


def render_compare(left: Tree, right: Tree, width: int = 72) -> list[str]:
    rows = compare(left, right)
    out = [f"{'left: ' + left.daemon + ' ' + str(left.root):<{width}} | "
           f"right: {right.daemon} {right.root}", "-" * (width * 2 + 3)]
    lmap, rmap = left.by_pid(), right.by_pid()
    for row in rows:
        depth = row["path"].count("/")
        pad = "  " * depth
        lp, rp = lmap.get(row["left"]), rmap.get(row["right"])
        llines = [pad + line for line in proc_lines(lp)] if lp else [pad + "(none)"]
        rlines = [pad + line for line in proc_lines(rp)] if rp else [pad + "(none)"]
        ls, rs = row["left_shape"], row["right_shape"]
        # mark a detail line when the field it shows differs
        marks = {"uid": "uid ", "groups": "uid ", "session": "sid ", "tty": "sid ",
                 "root": "root ", "no_new_privs": "root ", "seccomp": "root ",
                 "loginuid": "root ", "CapEff": "CapEff ", "CapBnd": "CapEff ", "title": None,
                 "fds": "fd "}
        diffs = row["differences"]
        for i in range(max(len(llines), len(rlines))):
            lt = llines[i] if i < len(llines) else ""
            rt = rlines[i] if i < len(rlines) else ""
            stripped = (lt.strip() or rt.strip())
            mark = " "
            for f in diffs:
                start = marks.get(f)
                if (start is None and i == 0) or (start and stripped.startswith(start)):
                    mark = "*"
            if len(lt) > width:
                lt = lt[:width - 1] + "…"
            out.append(f"{lt:<{width}} {mark} {rt}")
        out.append("")
    out.append("differences (* above; pids, names and numbers left out):")
    any_diff = False
    for row in rows:
        for f in row["differences"]:
            any_diff = True
            if f.startswith("only in"):
                out.append(f"  {row['path']}: {f}")
            else:
                out.append(f"  {row['path']}: {f}: {row['left_shape'][f]!r} vs "
                           f"{row['right_shape'][f]!r}")
    if not any_diff:
        out.append("  none")
    for note in left.notes:
        out.append(f"note (left): {note}")
    for note in right.notes:
        out.append(f"note (right): {note}")
    return out


# --- command line --------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="privsep-tree",
                                 description="The annotated process tree of a running sshd.")
    ap.add_argument("--pidfile", default=DEFAULT_PIDFILE,
                    help=f"the listener's PidFile (default {DEFAULT_PIDFILE})")
    ap.add_argument("--pid", type=int, help="any sshd listener's pid (OpenSSH's too)")
    ap.add_argument("--compare", type=int, metavar="PID",
                    help="a second listener (real sshd) to put beside it, differences marked")
    ap.add_argument("--json", action="store_true", help="JSON for scripts")
    ap.add_argument("--watch", type=float, metavar="SECONDS", nargs="?", const=2.0,
                    help="redraw every SECONDS (default 2) until Ctrl-C")
    ap.add_argument("--count", type=int, help="with --watch: stop after this many redraws")
    return ap.parse_args(argv)


def _listener_pid(args: argparse.Namespace) -> int:
    if args.pid is not None:
        return args.pid
    try:
        text = _read(args.pidfile).strip()
    except FileNotFoundError:
        raise LookupError(f"no pid file {args.pidfile}: is privsep-sshd running? "
                          "(or give --pid PID)") from None
    except OSError as exc:
        raise LookupError(f"cannot read {args.pidfile}: {exc.strerror}") from None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        raise LookupError(f"{args.pidfile} does not hold a pid: {text[:40]!r}") from None


def snapshot(args: argparse.Namespace) -> tuple[str, list[str]]:
    """One drawing (text or JSON), and what is wrong with the input (for stderr):
    a pid that is not an sshd listener."""
    tree = build(_listener_pid(args))
    other = build(args.compare) if args.compare is not None else None
    problems = [t.notes[0] for t in (tree, other)
                if t is not None and t.procs[0].role != "listener"]
    if args.json:
        data = tree.to_json()
        if other is not None:
            data = {"left": data, "right": other.to_json(), "comparison": compare(tree, other)}
        return json.dumps(data, indent=2), problems
    lines = render_compare(tree, other) if other is not None else render(tree)
    return "\n".join(lines), problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    draws = 0
    status = 0
    try:
        while True:
            try:
                text, problems = snapshot(args)
                status = 1 if problems else 0
                for problem in problems:
                    print(f"privsep-tree: {problem}", file=sys.stderr)
            except LookupError as exc:
                text, status = f"privsep-tree: {exc}", 1
                if args.watch is None:
                    print(text, file=sys.stderr)
                    return status
            if args.watch is not None and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text, flush=True)
            draws += 1
            if args.watch is None or (args.count is not None and draws >= args.count):
                return status
            print(f"--- {time.strftime('%H:%M:%S')}, every {args.watch:g}s; Ctrl-C stops",
                  flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return status
    except BrokenPipeError:
        return status


if __name__ == "__main__":
    sys.exit(main())
