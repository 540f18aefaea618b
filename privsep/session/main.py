"""The session process's first lines and its whole life: forked by the
monitor after the hand-off, as root, it becomes the user for good and
carries the connection on."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import signal
import socket
import time
from typing import NoReturn

import paramiko
import prctl

from privsep.child import hostkey_proxy, transport_setup
from privsep.child.monitor_client import MonitorClient, MonitorLogHandler
from privsep.common import ids, proctitle, roles
from privsep.common.channel import MonitorChannel
from privsep.common.log import verbose
from privsep.common.peer import Peer
from privsep.common.trace import trace
from privsep.config.servconf import ServerOptions
from privsep.session import chroot, parse_fatal
from privsep.session.loop import EventLoop
from privsep.session.packets import WriteError
from privsep.session.policy import SessionPolicy
from privsep.session.session import SessionProcess, SessionServer
from privsep.session.timeouts import ChannelTimeouts, UnusedConnection
from privsep.session.transport import ConnectionClosed, ReadError, SessionTransport
from privsep.wire import messages as wire

log = logging.getLogger("privsep.session")

#: the session process's status when the client went without a DISCONNECT
#: (the socket closed, or a read error): it has written sshd's last lines
#: for that ("Closing connection", "Read error"), hung up its programs, and
#: the monitor adds no "Disconnected from user" (which sshd writes only for
#: a DISCONNECT it read)
EXIT_LOGGED_END = 3


def _client_alive(loop: EventLoop, process: SessionProcess, interval: int, count_max: int) -> None:
    """ClientAliveInterval: a keepalive@openssh.com that wants a reply every
    ``interval`` seconds; ClientAliveCountMax unanswered ones end the connection."""
    transport = process.transport

    def tick() -> None:
        if not transport.is_active():
            return
        if process.alive_unanswered >= count_max:
            log.info("Timeout, client not responding from user %s %s", process.pw.pw_name,
                     process.peer)
            transport.close()
            return
        process.alive_unanswered += 1
        transport.send_global_request("keepalive@openssh.com", want_reply=True)
        loop.call_later(interval, tick)
    loop.call_later(interval, tick)


def _rekey_timer(loop: EventLoop, transport: SessionTransport, seconds: int) -> None:
    """The time half of RekeyLimit: a key exchange once ``seconds`` have passed
    since the last one ended, data or none, as sshd's server loop does."""
    def tick() -> None:
        if not transport.is_active():
            return
        due = transport.kex_done_at + seconds
        if time.monotonic() >= due and transport.start_rekey():
            trace(log, "session", "RekeyLimit %ds: key exchange started by the server", seconds)
            due = time.monotonic() + seconds
        loop.call_later(max(due - time.monotonic(), 1.0), tick)
    loop.call_later(seconds, tick)


def configure_rekey(loop: EventLoop, transport: SessionTransport, options: ServerOptions) -> None:
    """RekeyLimit's byte half on our side of the packetizer (paramiko counts
    both directions against it and asks for the key exchange itself), and
    its time half as a timer of the loop."""
    amount, seconds = options.rekey_limit
    if amount:
        transport.packetizer.REKEY_BYTES = amount
        transport.packetizer.REKEY_PACKETS = max(amount // 16, 1)
    if seconds:
        _rekey_timer(loop, transport, seconds)


def configure_timeouts(loop: EventLoop, process: SessionProcess, options: ServerOptions) -> None:
    """ChannelTimeout's clocks on every channel, and UnusedConnectionTimeout
    counted from now (the login), as timers of the loop (timeouts.py)."""
    process.transport.channel_timeouts = ChannelTimeouts(loop, options.channel_timeout)
    if not options.unused_connection_timeout:
        return
    transport = process.transport

    def expire() -> None:
        if not transport.is_active():
            return
        log.info("terminating inactive connection from user %s %s", process.pw.pw_name,
                 process.peer)
        transport.close()
    process.unused = UnusedConnection(loop, options.unused_connection_timeout,
                                      process.channels_open, expire)


def _announce_hostkeys(process: SessionProcess) -> None:
    """hostkeys-00 before anything the client sent is read, as sshd sends it
    before serving channels: the client's prove request then comes ahead of
    its exec, and is answered before a quick command's exit-status."""
    try:
        process.notify_hostkeys()
    except Exception as exc:
        log.debug("hostkeys-00@openssh.com not sent: %s", exc)


def _on_monitor_gone(process: SessionProcess):
    """SIGTERM, the parent-death signal: the monitor vanished, and nobody
    will hang up our programs.  Hang them all up (SIGHUP, then SIGCONT for
    a stopped one, to each program's process group) and end."""
    def handler(signum, frame) -> None:
        try:
            for session in list(process.sessions.values()):
                if session.pid and not session.exited:
                    for sig in (signal.SIGHUP, signal.SIGCONT):
                        try:
                            os.killpg(session.pid, sig)
                        except OSError:
                            pass
        finally:
            os._exit(1)
    return handler


def _enter_jail(options: ServerOptions, pw: pwd.struct_passwd) -> chroot.Jail:
    """ChrootDirectory, still as root and before the uid changes (sshd's
    do_setusercontext); a jail sshd would refuse ends the session process
    with sshd's line and status 255, as its fatal() does."""
    try:
        jail = chroot.enter(options.chroot_directory, pw)
    except chroot.ChrootRefused as exc:
        log.critical("%s", exc)  # sshd's fatal(): there even at LogLevel FATAL
        os._exit(255)
    if jail.active:
        verbose(log, "Changed root directory to \"%s\"", jail.path)
    return jail


def run(conn: socket.socket, channel_sock: socket.socket, state: wire.TransportState,
        pw: pwd.struct_passwd, pam_env: dict[str, str], options: ServerOptions,
        host_publics: list[paramiko.PKey], peer: Peer,
        login_messages: tuple[str, ...] = (), key_options: tuple = (),
        close_fds: tuple[int, ...] = (), monitor_pid: int = 0) -> NoReturn:
    """The session process's whole life, from the monitor's fork (still root)
    to its exit: ``close_fds`` are the monitor's own, closed first;
    ``monitor_pid`` is the monitor's pid (by default our parent's now)."""
    monitor_pid = monitor_pid or os.getppid()
    try:
        for fd in close_fds:
            os.close(fd)
        code = _serve(conn, channel_sock, state, pw, pam_env, options, host_publics, peer,
                      login_messages, key_options, monitor_pid)
    except BaseException:
        log.critical("session process failed", exc_info=True)
        os._exit(1)
    os._exit(code)


def _serve(conn: socket.socket, channel_sock: socket.socket, state: wire.TransportState,
           pw: pwd.struct_passwd, pam_env: dict[str, str], options: ServerOptions,
           host_publics: list[paramiko.PKey], peer: Peer,
           login_messages: tuple[str, ...], key_options: tuple, monitor_pid: int) -> int:
    """Serve the connection as the user; the process's exit status."""
    jails: list[chroot.Jail] = []
    ids.become_user(pw, before_uid=lambda: jails.append(_enter_jail(options, pw)))
    jail = jails[0] if jails else chroot.Jail()
    # Without its monitor the session cannot clean up or get a pty: end with
    # it.  (Set after the uid change, which clears it.)  An orphan goes to
    # the listener (a subreaper), not to init: compare with the monitor's pid.
    prctl.set_pdeathsig(signal.SIGTERM)
    if os.getppid() != monitor_pid:
        os._exit(1)
    proctitle.set(roles.session_title(pw.pw_name, []))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    monitor = MonitorClient(MonitorChannel(channel_sock))
    logging.getLogger().handlers[:] = [MonitorLogHandler(monitor)]
    trace(log, "session", "dropped to uid %d gid %d groups %s; resuming the transport at seq in %d out %d",
          os.getuid(), os.getgid(), ",".join(map(str, os.getgroups())) or "none",
          state.inbound.seqno, state.outbound.seqno)
    transport = SessionTransport(conn, state, pw.pw_name)
    transport.peer_text = str(peer)
    transport_setup.configure(transport, options, monitor.gex_group)
    hostkey_proxy.install_on(transport, host_publics, monitor.sign)
    loop = EventLoop()
    configure_rekey(loop, transport, options)
    process = SessionProcess(loop, transport, monitor, pw, pam_env, peer, login_messages,
                             SessionPolicy(options, key_options), host_publics)
    process.jail = jail
    transport.connection = process
    signal.signal(signal.SIGTERM, _on_monitor_gone(process))
    configure_timeouts(loop, process, options)
    if options.client_alive_interval > 0:
        _client_alive(loop, process, options.client_alive_interval,
                      options.client_alive_count_max)
    # The connection, its channels, programs, forwards and timers: one loop,
    # this thread, until the connection ends.
    transport.serve(loop, SessionServer(process), first=lambda: _announce_hostkeys(process))
    loop.run(until=lambda: not transport.is_active())
    failure = transport.saved_exception
    if failure is not None and not isinstance(failure, (EOFError, OSError, paramiko.SSHException)):
        # the dispatch caught it; say what it was, as sshd's fatal does
        log.error("ssh_dispatch_run_fatal: Connection from user %s %s: %s", pw.pw_name, peer,
                  transport_setup.failure_text(failure))
    fatal = parse_fatal.fatal_line(failure, pw.pw_name, peer) if failure is not None else None
    if fatal is not None:  # a message sshd could not parse: its logdie or fatal
        log.log(fatal.level, "%s", fatal.text)
    if isinstance(failure, ConnectionClosed):  # serverloop.c's process_input
        verbose(log, "Connection closed by %s port %d", peer.addr, peer.port)
    if isinstance(failure, ReadError):  # there too, and then sshd's cleanup_exit
        verbose(log, "Read error from remote host %s port %d: %s", peer.addr, peer.port,
                failure.strerror)
    if isinstance(failure, WriteError):  # process_output's sshpkt_fatal, then cleanup_exit
        _log_write_error(failure, pw.pw_name, peer)
    if isinstance(failure, EOFError) and not isinstance(failure, WriteError):
        process.close_all()  # the client closed the socket without a DISCONNECT
    process.forwarding.close_all()
    process.agent.stop()
    # The connection is gone: hang up the programs still running on ptys.
    for session in list(process.sessions.values()):
        if session.pid:
            try:
                os.killpg(session.pid, signal.SIGHUP)
            except (ProcessLookupError, PermissionError):
                pass
        process.release_pty(session)
    if isinstance(failure, (ReadError, WriteError)) or fatal is not None:
        return EXIT_LOGGED_END
    if not isinstance(failure, ConnectionClosed):
        return 0
    _log_transferred(transport, peer)
    return EXIT_LOGGED_END


def _log_write_error(failure: WriteError, user: str, peer: Peer) -> None:
    """sshpkt_fatal's line (packet.c) for a write to the client that failed,
    at INFO as its logdie writes it: a reset has a line of its own, anything
    else names the call and the system's error.  (A reset that came before
    the loop's wait is a read's error instead, "Read error": the loop reads
    the socket first, as sshd's.)"""
    if failure.errno == errno.ECONNRESET:
        log.info("Connection reset by user %s %s", user, peer)
    else:
        log.info("process_output: ssh_packet_write_poll: Connection from user %s %s: %s",
                 user, peer, failure.strerror)


def _log_transferred(transport: SessionTransport, peer: Peer) -> None:
    """sshd's last two lines once its server loop has ended (sshd.c, after
    do_authenticated): the packet bytes of the whole connection, then the
    goodbye."""
    packetizer = transport.packetizer
    verbose(log, "Transferred: sent %d, received %d bytes", packetizer.total_sent,
            packetizer.total_received)
    verbose(log, "Closing connection to %s port %d", peer.addr, peer.port)
