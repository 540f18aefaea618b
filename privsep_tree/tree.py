"""privsep-tree: the annotated genealogy of a running sshd, read from /proc.

    privsep-tree                      # the listener in /run/privsep-sshd.pid
    privsep-tree --pid 4711 --json    # any listener, OpenSSH's sshd too
    privsep-tree --compare 812        # and real sshd's tree beside it
    privsep-tree --watch 2            # redraw every 2 s until Ctrl-C

Read-only and unprivileged: it runs as whoever calls it and shows what /proc
lets that user see, saying what was hidden.  Nothing is written anywhere.
One process at a time is read by proc.py; here the tree is assembled, its
descriptors linked across processes, and it is printed or compared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass

from privsep.common import roles
from privsep.wire.facts import DEFAULT_PID_FILE
from privsep_tree.proc import (
    NO_LOGINUID, Gone, Proc, _all_pids, _group, _last_cap, _read, _user, descendants,
    infer_role, parent_map, read_proc, tcp_table, unix_diag,
)


# --- the whole tree ---------------------------------------------------------------------

@dataclass
class Tree:
    root: int
    procs: list[Proc]
    notes: list[str]
    daemon: str = "?"
    #: the OpenSSH process model the tree shows: "9" (forks only, every
    #: process sshd), "10" (exec'd sshd-session and sshd-auth), "?" (no
    #: connection yet)
    generation: str = "?"

    def by_pid(self) -> dict[int, Proc]:
        return {p.pid: p for p in self.procs}

    def to_json(self) -> dict:
        return {"listener": self.root, "daemon": self.daemon, "generation": self.generation,
                "notes": self.notes,
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
    tree.generation = generation_of(procs)
    if first.role != "listener":
        notes.insert(0, f"pid {root} ({first.title or first.comm}) does not look like an sshd "
                        "listener: no '[listener]' in its title; showing its descendants anyway")
    _link_fds(tree)
    _hidden_notes(tree)
    return tree


def generation_of(procs: list[Proc]) -> str:
    """OpenSSH 10's model when a process below the listener is an exec'd
    sshd-session or sshd-auth (by its title, or its comm name when the title
    is hidden); 9's when a monitor is titled as sshd itself."""
    programs = set()
    for p in procs[1:]:
        program = roles.program_of(p.title or "")[0]
        programs.add(program or (p.comm if p.comm in ("sshd-session", "sshd-auth") else ""))
    if programs & {"sshd-session", "sshd-auth"}:
        return "10"
    return "9" if "sshd" in programs else "?"


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


COMPARED = ("program", "title", "uid", "groups", "session", "tty", "root", "no_new_privs", "seccomp",
            "CapEff", "CapBnd", "loginuid", "fds")


def shape(p: Proc, tree: Tree) -> dict[str, str]:
    """What should match between two sshds, with pids, names and numbers taken out."""
    # the program a title names (sshd, sshd-session, sshd-auth: privsep-sshd's
    # own prefixes say which OpenSSH program they stand for), then the rest
    program, title = roles.program_of(p.title or "")
    title = re.sub(r"pts/\d+", "pts/N", title)
    if p.role == "listener":
        title = re.sub(r"^.*\[listener\]", "... [listener]", title)
    login = ("unset" if p.loginuid in (None, NO_LOGINUID) else
             "root" if p.loginuid == 0 else "login user")
    return {
        "program": program or "none",
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
    def name(tree: Tree) -> str:
        model = f" (OpenSSH {tree.generation} model)" if tree.generation != "?" else ""
        return f"{tree.daemon} {tree.root}{model}"
    out = [f"{'left: ' + name(left):<{width}} | right: {name(right)}", "-" * (width * 2 + 3)]
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
                 "program": None,
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
    ap.add_argument("--pidfile", default=DEFAULT_PID_FILE,
                    help=f"the listener's PidFile (default {DEFAULT_PID_FILE})")
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
