"""Process generation 10, the monitor's side: the pre-auth child execs
OpenSSH 10's ``sshd-auth`` (netchild/auth_program.py) instead of running the
net-child in the monitor's image, so it starts from a fresh interpreter that
never held the monitor's memory.  The connection's socket and the child's
end of the monitor socketpair keep their descriptor numbers.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import NoReturn

from privsep.common import exec_program, log as logsetup
from privsep.config.servconf import ServerOptions
from privsep.netchild.auth_program import AuthBundle
from privsep.wire.hostkey_blobs import HostKey

#: the module the exec'd interpreter runs
AUTH_PROGRAM = "privsep.netchild.auth_program"


def auth_options(options: ServerOptions) -> ServerOptions:
    """The global options, less what the pre-auth phase has no use for: the
    key commands and the files only the monitor reads (as sshd-auth gets
    its own copy of the configuration and never opens a file)."""
    return dataclasses.replace(options, authorized_keys_command="none",
                               authorized_principals_command="none",
                               authorized_keys_command_user="none",
                               authorized_principals_command_user="none")


def run(conn: socket.socket, channel_sock: socket.socket, options: ServerOptions,
        host_keys: list[HostKey], banner: str, close_fds: tuple[int, ...]) -> NoReturn:
    """In the monitor's fresh child: exec sshd-auth; never returns."""
    try:
        for fd in close_fds:
            os.close(fd)
        bundle = AuthBundle(auth_options(options), list(host_keys), banner, logsetup.current)
        exec_program.exec_program(AUTH_PROGRAM, bundle,
                                  {"sock": conn.fileno(), "monitor": channel_sock.fileno()})
    finally:
        os._exit(1)
