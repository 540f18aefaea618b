"""privsep-tree, one process at a time: what /proc (and one NETLINK_SOCK_DIAG
dump) say about a process, its rights and its descriptors.  Read-only.

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

import os
import pwd
import grp
import re
import socket
import struct
from dataclasses import dataclass, field

from privsep.common import roles

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
    return roles.role_of(p.title or "", parent.role if parent is not None else None)
