"""inetd mode (-i): one connection on stdin and stdout, no listener.

Used as ``ssh -o ProxyCommand='privsep-sshd -i -f cfg' host``, as OpenSSH's
own test suite drives sshd.  paramiko needs a socket, so when stdin and stdout
are pipes a small relay process copies them to one end of a socketpair and
the monitor gets the other end.  Runs as root, like the listener it replaces.

The process model follows ProcessGeneration as the listener's does: in
generation 10 the process execs the per-connection program (sshd-session)
in place, as OpenSSH 10's ``sshd -i`` does; in 9 it becomes the monitor.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import stat

from privsep.listener import exec_session
from privsep.monitor import main as monitor_main
from privsep.common import proctitle, roles
from privsep.config.servconf import ServerConfig, ServerOptions
from privsep.wire.hostkey_blobs import HostKey


def _connection_from_stdio() -> socket.socket:
    if stat.S_ISSOCK(os.fstat(0).st_mode):
        return socket.socket(fileno=os.dup(0))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.fork() == 0:
        ours.close()
        _relay(theirs)
    theirs.close()
    for fd in (0, 1):
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    return ours


def _relay(sock: socket.socket) -> None:
    """Copy stdin to the socket and the socket to stdout until both end."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    proctitle.set(roles.INETD_RELAY_TITLE)
    try:
        _copy(sock)
    except OSError:
        pass  # either side went away: the connection is over
    os._exit(0)


def _copy(sock: socket.socket) -> None:
    open_in, open_out = True, True
    while open_in or open_out:
        watched = ([0] if open_in else []) + ([sock] if open_out else [])
        ready, _, _ = select.select(watched, [], [])
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                sock.sendall(data)
            else:
                open_in = False
                sock.shutdown(socket.SHUT_WR)
        if sock in ready:
            data = sock.recv(65536)
            if data:
                os.write(1, data)
            else:
                break


def serve(options: ServerOptions, host_keys: list[HostKey], config: ServerConfig) -> int:
    conn = _connection_from_stdio()
    startup_r, startup_w = os.pipe()
    os.close(startup_r)
    run = exec_session.run if options.process_generation == 10 else monitor_main.run
    run(conn, options, host_keys, startup_w, config, new_session=False)
    return 0  # not reached: the monitor exits
