"""Process generation 10, the listener's side: the child forked for a
connection execs the per-connection program (monitor/session_program.py,
OpenSSH 10's ``sshd-session``) instead of running the monitor in the
listener's image.  The connection's socket and the MaxStartups pipe keep
their descriptor numbers; the parsed configuration and the host keys'
public halves travel in a memfd (common/exec_program.py).
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn

from privsep.common import exec_program, log as logsetup
from privsep.config.servconf import ServerConfig, ServerOptions
from privsep.monitor.session_program import SessionBundle
from privsep.wire.hostkey_blobs import HostKey

#: the module the exec'd interpreter runs
SESSION_PROGRAM = "privsep.monitor.session_program"


def run(conn: socket.socket, options: ServerOptions, host_keys: list[HostKey],
        startup_fd: int, config: ServerConfig | None = None,
        close_fds: tuple[int, ...] = (), host_publics: list | None = None,
        new_session: bool = True) -> NoReturn:
    """In the listener's fresh child (or, in inetd mode, in the process
    itself, as OpenSSH 10's ``sshd -i`` execs sshd-session in place): close
    the listener's descriptors and exec sshd-session; never returns.  The
    same arguments as monitor.main.run (``host_publics`` unused: the fresh
    interpreter makes its own)."""
    for fd in close_fds:
        os.close(fd)
    bundle = SessionBundle(options, config, list(host_keys), logsetup.current, new_session)
    exec_program.exec_program(SESSION_PROGRAM, bundle,
                              {"sock": conn.fileno(), "startup": startup_fd})
