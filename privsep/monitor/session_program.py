"""The exec'd per-connection program of process generation 10: OpenSSH 10's
``sshd-session``.  The listener forks, and the child execs this module in a
fresh interpreter (listener/exec_session.py) with the connection's socket,
the MaxStartups pipe and the parsed configuration; from there on it is the
monitor of generation 9 (monitor/main.py), titled ``privsep-sshd-session:``
and named ``sshd-session`` in the kernel, and so is the session process it
forks.
"""

from __future__ import annotations

from dataclasses import dataclass

from privsep.common import proctitle, roles


@dataclass
class SessionBundle:
    """What the listener passes across the exec (OpenSSH's config buffer)."""

    options: object  # ServerOptions
    config: object  # ServerConfig | None: the Match blocks
    host_keys: list  # list[HostKey]: public halves and paths only
    log: tuple  # common/log.py's setup arguments
    #: False in inetd mode (-i): the monitor keeps the session it was started in
    new_session: bool = True


def main() -> int:
    proctitle.use_program(roles.SESSION_PROGRAM_PREFIX, roles.SESSION_PROGRAM_COMM)
    proctitle.set(roles.REEXECED_TITLE)
    from privsep.common import exec_program

    exec_program.skip_client_only_modules()
    # Everything the monitor, the net-child and the session process will
    # need is imported now, as the listener of generation 9 does before it
    # forks (the session process may chroot).
    import socket

    from privsep.common import log as logsetup
    from privsep.monitor import main as monitor_main

    bundle, fds = exec_program.receive()
    assert isinstance(bundle, SessionBundle)
    logsetup.setup(*bundle.log)
    conn = socket.socket(fileno=fds["sock"])
    monitor_main.run(conn, bundle.options, bundle.host_keys, fds["startup"],  # type: ignore[arg-type]
                     bundle.config, new_session=bundle.new_session)  # type: ignore[arg-type]
