"""Exec one of the daemon's programs in a fresh interpreter (process
generation 10, OpenSSH 10's model), and, in that program, take what its
parent passed on.

OpenSSH 10's sshd execs ``sshd-session`` for each connection, and
``sshd-session`` execs ``sshd-auth`` for the pre-auth phase; each gets its
descriptors at fixed numbers and its configuration as a buffer from its
parent.  Here the descriptors keep their numbers across the exec and are
named in one environment variable (``sock=5,startup=7,config=9``), and what
the parent passes (the parsed configuration, the host keys' public halves, the
log settings) is pickled into a memfd: a buffer as big as it needs to be,
written before the exec, so nothing waits on a pipe's reader.

The pickle only ever travels from a process to the fresh program it execs,
which has exactly its parent's rights or fewer and trusts it anyway; no
process ever unpickles anything a less privileged process wrote.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import NoReturn

#: the environment variable naming the passed descriptors
FDS_ENV = "PRIVSEP_SSHD_EXEC_FDS"
#: the descriptor that holds the pickled bundle
BUNDLE_FD = "config"

#: The directory that holds the ``privsep`` package, so that the exec'd
#: interpreter loads this very code (an installed venv or a checkout).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: The exec'd interpreter's program: -I (isolated: no environment variables
#: of Python's, no user site, not the current directory on sys.path), then
#: the package's root and the module whose main() is the program.
_BOOT = ("import sys, importlib; sys.path.insert(0, sys.argv[1]); "
         "sys.exit(importlib.import_module(sys.argv[2]).main())")


def exec_program(module: str, bundle: object, fds: dict[str, int]) -> NoReturn:
    """Replace this process with a fresh interpreter running ``module.main()``.
    ``fds`` (name -> number) stay open with the same numbers, and so do 0,
    1 and 2; every other descriptor is closed, as OpenSSH's closefrom."""
    memfd = os.memfd_create("privsep-sshd-exec", 0)
    data = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(data)
    while view:
        view = view[os.write(memfd, view):]
    os.lseek(memfd, 0, os.SEEK_SET)
    passed = {**fds, BUNDLE_FD: memfd}
    keep = {0, 1, 2, *passed.values()}
    for fd in passed.values():
        os.set_inheritable(fd, True)
    _close_except(keep)
    env = dict(os.environ)
    env[FDS_ENV] = ",".join(f"{name}={fd}" for name, fd in passed.items())
    argv = [sys.executable, "-I", "-c", _BOOT, PACKAGE_ROOT, module]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        os.write(2, f"privsep-sshd: fatal: exec of {sys.executable} ({module}) failed: "
                    f"{exc.strerror}\n".encode(errors="replace"))
    os._exit(255)


#: Modules paramiko imports only for an SSH client's own configuration
#: (``Match exec`` in ssh_config, through invoke, which pulls in
#: unittest.mock): a server never uses them, and they cost an exec'd
#: interpreter about 160 ms of a login (measured with -X importtime).
CLIENT_ONLY_MODULES = ("invoke",)


def skip_client_only_modules() -> None:
    """Make their imports fail as if they were not installed (paramiko then
    does without): called by an exec'd program before it imports paramiko."""
    for name in CLIENT_ONLY_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def receive() -> tuple[object, dict[str, int]]:
    """In the exec'd program: the parent's bundle and the descriptors it
    named (the bundle's memfd read and closed).  Raises RuntimeError when
    the program was not started by the daemon."""
    text = os.environ.pop(FDS_ENV, "")
    fds: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        name, _, number = item.partition("=")
        if not number.isdigit():
            raise RuntimeError(f"bad {FDS_ENV}: {text!r}")
        fds[name] = int(number)
    if BUNDLE_FD not in fds:
        raise RuntimeError(f"not started by privsep-sshd (no {FDS_ENV})")
    memfd = fds.pop(BUNDLE_FD)
    chunks = []
    while chunk := os.read(memfd, 1 << 20):
        chunks.append(chunk)
    os.close(memfd)
    for fd in fds.values():
        os.set_inheritable(fd, False)  # nothing this program execs gets them
    return pickle.loads(b"".join(chunks)), fds


def _close_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)
