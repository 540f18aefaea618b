"""The child the session process forks for an internal-sftp channel (or
for a session ForceCommand internal-sftp refuses), run as the user and,
with ChrootDirectory, inside the jail: it needs no file of the jail, since
everything it runs was imported before the fork.

Why a child and not the session process itself: paramiko's SFTPServer is
a blocking loop meant for a thread of its own, and the session process is
one thread around one event loop.  A child fed by pipes, as sshd's own
internal-sftp is, keeps the loop free (the channel's data moves through
the same pumps as a command's), makes a slow disk stall only its own
channel, and lets one sftp session fail without touching the others.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import sys
from typing import NoReturn

from privsep.common import proctitle
from privsep.session.sftp import flags as sftpflags
from privsep.session.sftp.server import InternalSFTP, PipeEnds, client_addr
from privsep.shell import spawn

log = logging.getLogger("privsep.sftp")

#: the handlers the session process set, given back their defaults
_RESET_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGINT, signal.SIGQUIT)
#: sshd's text to a session that ForceCommand internal-sftp does not serve
SFTP_ONLY = "This service allows sftp connections only.\n"


def _take_fds(stdin: int, stdout: int, stderr: int, keep: tuple[int, ...]) -> None:
    """Our own session, the pipes as 0, 1 and 2, and nothing else open but
    ``keep`` (the monitor socket, for the log): not the connection, not
    another channel's pipes or pty."""
    os.setsid()
    os.dup2(stdin, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _enter_home(program: spawn.Program) -> None:
    """sshd's do_child: the home directory, silently absent in a jail."""
    try:
        os.chdir(program.home)
    except OSError as exc:
        if not program.quiet_home:
            os.write(2, f"Could not chdir to home directory {program.home}: "
                        f"{exc.strerror}\n".encode())


def serve(program: spawn.Program, pw: pwd.struct_passwd, stdin: int, stdout: int, stderr: int,
          keep: tuple[int, ...]) -> NoReturn:
    """sftp-server's main, in the child: ``program.argv`` is internal-sftp's
    command line.  Exits with sftp-server's status."""
    status = 255
    try:
        _take_fds(stdin, stdout, stderr, keep)
        proctitle.set(f"{pw.pw_name}@internal-sftp")
        os.environ.clear()
        os.environ.update(program.env)
        _enter_home(program)
        status = _main(program.argv, pw)
    except BaseException as exc:  # never a traceback on the user's channel
        log.error("internal-sftp: %s", exc)
    finally:
        sys.stdout.flush()
        os._exit(status)


def _main(argv: list[str], pw: pwd.struct_passwd) -> int:
    log.setLevel(logging.ERROR)
    try:
        options = sftpflags.parse(argv, pw)
    except sftpflags.UsageError as exc:
        os.write(2, exc.text.encode())
        return exc.status
    if options.query:
        os.write(1, sftpflags.requests_text().encode())
        return 0
    log.setLevel(options.log_level)
    for warning in options.warnings:
        log.error("%s", warning)
    if options.umask is not None:
        os.umask(options.umask)
    addr = client_addr()
    log.info("session opened for local user %s from [%s]", pw.pw_name, addr)
    if options.start_dir is not None:
        try:
            os.chdir(options.start_dir)
        except OSError as exc:
            log.error("chdir to \"%s\" failed: %s", options.start_dir, exc.strerror)
    ends = PipeEnds(0, 1)
    server = InternalSFTP(ends, options, pw)
    try:
        server.start_subsystem("sftp", ends, ends)
    finally:
        server.close_all()
        log.info("session closed for local user %s from [%s]", pw.pw_name, addr)
    return 0


def refuse(program: spawn.Program, remote_id: str, stdin: int, stdout: int, stderr: int,
           keep: tuple[int, ...]) -> NoReturn:
    """ForceCommand internal-sftp, and the client asked for a shell or a
    command: sshd's line, its text to the client, status 1."""
    try:
        _take_fds(stdin, stdout, stderr, keep)
        log.error("Connection from %s: refusing non-sftp session", remote_id)
        os.write(1, SFTP_ONLY.encode())
    finally:
        os._exit(1)
