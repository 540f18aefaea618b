"""The net-child's sandbox, entered by the freshly forked child while still root.

After ``enter()`` the process has the privsep user's uid and gid, no
supplementary groups, an empty directory as its root, no capabilities in any
set (the bounding set included), no_new_privs, a parent-death signal, rlimits
that forbid new files, processes and core dumps, and a seccomp allow-list.
Everything the net-child will need must be imported before this: nothing can
be loaded from disk afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import resource
import signal
import termios

import prctl
import pyseccomp as seccomp

from privsep.common import ids

#: System calls the net-child needs to run paramiko's transport on a socket it
#: already holds and to talk to the monitor.  Nothing that opens, forks,
#: executes, connects or changes identity.
ALLOWED_SYSCALLS = (
    "read", "write", "readv", "writev", "pread64", "recvfrom", "recvmsg",
    "sendto", "sendmsg", "poll", "ppoll", "select", "pselect6",
    "epoll_wait", "epoll_pwait", "epoll_ctl", "close", "shutdown", "lseek",
    "fcntl", "getsockopt", "setsockopt", "getsockname", "getpeername",
    "fstat", "newfstatat", "futex", "mmap", "munmap", "mremap", "brk",
    "madvise", "mprotect", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
    "sigaltstack", "clock_gettime", "clock_getres", "clock_nanosleep",
    "gettimeofday", "nanosleep", "getrandom", "getpid", "gettid",
    "getppid", "getuid", "geteuid", "getgid", "getegid", "sched_yield",
    "restart_syscall", "exit", "exit_group", "prctl", "sysinfo",
)

#: Calls answered with EACCES rather than death: Python's error paths (a
#: traceback reading a source file) try them, and failing is the right answer.
DENIED_SYSCALLS = (
    "open", "openat", "stat", "lstat", "access", "faccessat", "faccessat2",
    "readlink", "readlinkat", "getcwd", "statx", "getdents64",
)


def _drop_bounding_set() -> None:
    for cap in prctl.ALL_CAPS:
        prctl.capbset_drop(cap)


def _set_rlimits() -> None:
    for limit in (resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC, resource.RLIMIT_CORE):
        resource.setrlimit(limit, (0, 0))
    # Not 0: poll() refuses more descriptors than RLIMIT_NOFILE, and paramiko
    # polls its one socket.  1 still forbids opening or receiving any new fd.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1, 1))


#: The allow-list compiled to classic BPF by ``prepare``, in the listener
#: before it forks: libseccomp's compilation cost every net-child about 2 ms
#: of CPU (docs/DESIGN.md, "CPU per login").  None: compile in the child.
_compiled: bytes | None = None

#: from <linux/prctl.h> and <linux/seccomp.h>
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_BPF_INSTRUCTION_SIZE = 8  # struct sock_filter

_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    """struct sock_fprog: the instruction count and the instructions."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def prepare() -> None:
    """Compile the filter once, so that each net-child only loads it."""
    global _compiled
    _compiled = compile_filter()


def compile_filter() -> bytes:
    """The allow-list as the BPF program seccomp_load() would install (its
    own export, read back through a pipe)."""
    reader, writer = os.pipe()
    try:
        with os.fdopen(writer, "wb") as out:
            _build_filter().export_bpf(out)
        chunks = []
        while chunk := os.read(reader, 65536):
            chunks.append(chunk)
    finally:
        os.close(reader)
    program = b"".join(chunks)
    if not program or len(program) % _BPF_INSTRUCTION_SIZE:
        raise RuntimeError(f"libseccomp exported {len(program)} bytes of BPF")
    return program


def _load(program: bytes) -> None:
    """Install ``program`` as seccomp_load() does when libseccomp's
    attributes are its defaults (no_new_privs is already set): prctl
    PR_SET_SECCOMP with SECCOMP_MODE_FILTER."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _BPF_INSTRUCTION_SIZE,
                       ctypes.cast(buffer, ctypes.c_void_p))
    if _libc.prctl(ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER),
                   ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


def _install_seccomp() -> None:
    if _compiled is not None:
        _load(_compiled)
    else:
        _build_filter().load()


def _build_filter() -> seccomp.SyscallFilter:
    flt = seccomp.SyscallFilter(seccomp.KILL_PROCESS)
    for name in ALLOWED_SYSCALLS:
        try:
            flt.add_rule(seccomp.ALLOW, name)
        except Exception:  # a name this kernel's architecture lacks
            pass
    # Python's socket.settimeout() toggles O_NONBLOCK with this ioctl; no other.
    flt.add_rule(seccomp.ALLOW, "ioctl", seccomp.Arg(1, seccomp.EQ, termios.FIONBIO))
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(seccomp.ERRNO(errno.EACCES), name)
        except Exception:
            pass
    return flt


def enter(user: str, chroot_dir: str, keep_fds: set[int]) -> None:
    """Become the sandboxed net-child.  Raises if any step fails: never run half-sandboxed.

    Without root (the daemon started by an ordinary user, ``user`` empty)
    there is no chroot or uid change to make; the rest still applies."""
    parent = os.getppid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep_fds:
            os.dup2(devnull, fd)
    _close_except(keep_fds | {0, 1, 2})
    if user:
        pw = pwd.getpwnam(user)
        os.chroot(chroot_dir)
        os.chdir("/")
        _drop_bounding_set()
        ids.become_sandbox_user(pw)
    else:
        os.chdir("/")
    # setuid cleared any parent-death signal: set it now, then make sure the
    # monitor did not die before it took effect.
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    prctl.set_no_new_privs(True)
    if prctl.cap_effective.setuid or prctl.cap_permitted.setuid:
        raise RuntimeError("capabilities survived the uid change")
    _set_rlimits()
    _install_seccomp()


def _close_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)
