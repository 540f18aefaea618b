"""The session process's first lines and its whole life: forked by the
monitor after the hand-off, as root, it becomes the user for good and
carries the connection on."""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import threading
import time
from typing import NoReturn

import paramiko
import prctl

from privsep.child import hostkey_proxy, transport_setup
from privsep.child.monitor_client import MonitorClient, MonitorLogHandler
from privsep.common import ids, proctitle, roles
from privsep.common.channel import MonitorChannel
from privsep.common.peer import Peer
from privsep.common.trace import trace
from privsep.config.servconf import ServerOptions
from privsep.session.policy import SessionPolicy
from privsep.session.session import SessionProcess, SessionServer
from privsep.session.transport import SessionTransport
from privsep.wire import messages as wire

log = logging.getLogger("privsep.session")


def _client_alive(process: SessionProcess, interval: int, count_max: int) -> None:
    """ClientAliveInterval: a keepalive@openssh.com that wants a reply every
    ``interval`` seconds; ClientAliveCountMax unanswered ones end the connection."""
    transport = process.transport
    while transport.is_active():
        time.sleep(interval)
        if process.alive_unanswered >= count_max:
            log.info("Timeout, client not responding from user %s %s", process.pw.pw_name,
                     process.peer)
            transport.close()
            return
        process.alive_unanswered += 1
        try:
            transport.send_global_request("keepalive@openssh.com", want_reply=True)
        except Exception:
            return


def _rekey_timer(transport: SessionTransport, seconds: int) -> None:
    """The time half of RekeyLimit: a key exchange every ``seconds``."""
    while transport.is_active():
        time.sleep(seconds)
        try:
            if transport.is_active() and not transport.in_kex:
                transport.renegotiate_keys()
        except Exception:
            return


def configure_rekey(transport: SessionTransport, options: ServerOptions) -> None:
    """RekeyLimit's byte half on our side of the packetizer (paramiko counts
    both directions against it and starts the key exchange itself)."""
    amount, seconds = options.rekey_limit
    if amount:
        transport.packetizer.REKEY_BYTES = amount
        transport.packetizer.REKEY_PACKETS = max(amount // 16, 1)
    if seconds:
        threading.Thread(target=_rekey_timer, args=(transport, seconds), daemon=True,
                         name="rekey-timer").start()


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
        _serve(conn, channel_sock, state, pw, pam_env, options, host_publics, peer,
               login_messages, key_options, monitor_pid)
    except BaseException:
        log.exception("session process failed")
        os._exit(1)
    os._exit(0)


def _serve(conn: socket.socket, channel_sock: socket.socket, state: wire.TransportState,
           pw: pwd.struct_passwd, pam_env: dict[str, str], options: ServerOptions,
           host_publics: list[paramiko.PKey], peer: Peer,
           login_messages: tuple[str, ...], key_options: tuple, monitor_pid: int) -> None:
    ids.become_user(pw)
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
    configure_rekey(transport, options)
    process = SessionProcess(transport, monitor, pw, pam_env, peer, login_messages,
                             SessionPolicy(options, key_options), host_publics)
    transport.connection = process
    signal.signal(signal.SIGTERM, _on_monitor_gone(process))
    # hostkeys-00 before anything the client sent is read, as sshd sends it
    # before serving channels: the client's prove request then comes ahead
    # of its exec, and is answered before a quick command's exit-status.
    try:
        process.notify_hostkeys()
    except Exception as exc:
        log.debug("hostkeys-00@openssh.com not sent: %s", exc)
    transport.resume(SessionServer(process))
    if options.client_alive_interval > 0:
        threading.Thread(target=_client_alive, daemon=True, name="client-alive",
                         args=(process, options.client_alive_interval,
                               options.client_alive_count_max)).start()
    transport.join()
    failure = transport.saved_exception
    if failure is not None and not isinstance(failure, (EOFError, OSError, paramiko.SSHException)):
        # paramiko's run loop caught it and (its logger being quiet) said nothing
        log.error("ssh_dispatch_run_fatal: Connection from user %s %s: %s", pw.pw_name, peer,
                  transport_setup.failure_text(failure))
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
    # A release a program's thread began must finish before this process
    # exits, or the monitor's answer meets a closed socket.
    with process.release_lock:
        pass
