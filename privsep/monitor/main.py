"""The monitor's life: root, one per connection, from the listener's fork to
the logout.

It forks the sandboxed net-child and serves it until the hand-off, opens the
PAM session, forks the session process (which becomes the user) and serves
it until the connection ends; then, however it ended, it writes the logout
records, closes PAM and leaves no child behind.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
from typing import NoReturn

import paramiko

from privsep.child import transport_setup
from privsep.common import proctitle, roles
from privsep.common.channel import MonitorChannel, make_pair
from privsep.common.log import verbose
from privsep.common.peer import Peer
from privsep.common.trace import trace
from privsep.config.servconf import ServerConfig, ServerOptions
from privsep.monitor import auth_pam, exec_auth, hostkeys, pubkey
from privsep.monitor.exits import AUTH_DONE, EXIT_LOGIN_GRACE, preauth_exit
from privsep.monitor.monitor import Ending, Monitor, serve_phase
from privsep.monitor.policy import Phase
from privsep.netchild import netchild
from privsep.session import main as session_main
from privsep.wire import messages as wire
from privsep.wire import tunnel
from privsep.wire.hostkey_blobs import HostKey

log = logging.getLogger("privsep.monitor")

def run(conn: socket.socket, options: ServerOptions, host_keys: list[HostKey],
        startup_fd: int, config: ServerConfig | None = None,
        close_fds: tuple[int, ...] = (), new_session: bool = True,
        host_publics: list[paramiko.PKey] | None = None) -> NoReturn:
    """The monitor's whole life, from the listener's fork: ``close_fds`` are
    the listener's own (its sockets, pipes and signal wake-up pipe);
    ``host_publics`` the host keys' public halves as paramiko keys, made
    once by the listener (else here).

    Like sshd's [priv] (but not in inetd mode), it leads a session of its
    own, so that nothing aimed at the listener's process group reaches it."""
    signal.set_wakeup_fd(-1)
    if new_session:
        try:
            os.setsid()
        except OSError as exc:
            log.error("setsid: %s", exc.strerror)
    for fd in close_fds:
        os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    peer = Peer.of(conn)
    pubkey.use_fingerprint_hash(options.fingerprint_hash)
    proctitle.set(roles.ACCEPTED_TITLE)
    verbose(log, "Connection from %s port %d on %s port %d%s", peer.addr, peer.port,
            peer.local_addr, peer.local_port,
            "" if peer.rdomain is None else f' rdomain "{peer.rdomain}"')
    monitor = Monitor(options, host_keys, peer, startup_fd, config=config)
    if options.tcp_keep_alive:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    _no_nagle(conn)
    publics = host_publics if host_publics is not None else hostkeys.public_keys(host_keys)
    code = 1
    try:
        code = _preauth_then_session(monitor, conn, publics)
    except Exception:  # never a traceback to the client; one to the log
        log.critical("fatal: monitor error for %s", peer, exc_info=True)
    finally:
        monitor.cleanup()
    sys.stdout.flush()
    os._exit(code)


#: the session process's status after sshd's fatal(): its line is the
#: connection's last, as sshd's post-auth child's (session/main.py)
SESSION_FATAL = 255


def _on_grace_timeout(generation: int):
    """LoginGraceTime's alarm: the monitor ends, writing nothing.

    Debian 12's sshd 9.2 carries the CVE-2024-6387 fix, whose sigdie() no
    longer logs (measured: not a line, even at DEBUG3) and exits 1.  OpenSSH
    10's sshd-session writes nothing either; it exits EXIT_LOGIN_GRACE, and
    its listener, reaping it, writes "Timeout before authentication for
    connection from …"."""
    code = EXIT_LOGIN_GRACE if generation == 10 else 1

    def handler(signum, frame) -> None:
        # pdeathsig takes the net-child with us.
        os._exit(code)
    return handler


def _no_nagle(conn: socket.socket) -> None:
    """TCP_NODELAY for the whole connection.  paramiko writes each packet
    as it is made, where sshd gathers a loop's packets into one write; with
    Nagle, a packet that follows another (EOF, exit-status, CLOSE) waits for
    the client's delayed ACK, 40 ms on Linux, every time."""
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # inetd mode on something that is not TCP


def _fork_net_child(monitor: Monitor, conn: socket.socket,
                    publics: list[paramiko.PKey]) -> MonitorChannel:
    ours, theirs = make_pair()
    banner = _read_banner(monitor.options.banner)
    # Our identification line goes out now, as sshd's [priv] sends it before
    # it forks the pre-auth child: a client waits for it under its
    # ConnectTimeout, and on a loaded machine the fork, the sandbox and the
    # child's start could outlast that.  The net-child does not send it again.
    try:
        conn.sendall(f"{transport_setup.identification(monitor.options)}\r\n".encode())
    except OSError:
        pass  # the client is gone: the net-child finds out and says so
    gc.freeze()  # as the listener's: the child's collections leave our pages shared
    pid = os.fork()
    if pid == 0 and monitor.options.process_generation == 10:  # OpenSSH 10's sshd-auth
        exec_auth.run(conn, theirs, monitor.options, monitor.host_keys, banner,
                      close_fds=(ours.fileno(), monitor.startup_fd))
    if pid == 0:
        netchild.run(conn, theirs, monitor.options, publics, banner,
                     close_fds=(ours.fileno(), monitor.startup_fd))
    theirs.close()
    monitor.child_pid = pid
    trace(log, "monitor", "forked net-child %d (uid %s, root %s, caps none)", pid,
          monitor.options.privsep_user, monitor.options.privsep_dir)
    return MonitorChannel(ours)


def _read_banner(path: str) -> str:
    """The Banner file, read here because the net-child cannot open files."""
    if path.lower() == "none":
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()  # all of it, as sshd sends it
    except OSError as exc:
        log.error("Banner %s: %s", path, exc.strerror)
        return ""


def _preauth_then_session(monitor: Monitor, conn: socket.socket,
                          publics: list[paramiko.PKey]) -> int:
    signal.signal(signal.SIGALRM, _on_grace_timeout(monitor.options.process_generation))
    signal.alarm(monitor.options.login_grace_time)
    channel = _fork_net_child(monitor, conn, publics)
    try:
        result = serve_phase(monitor, channel, "preauth")
    finally:
        channel.close()
    signal.alarm(0)
    if result.ending is Ending.CLOSED:
        net_pid, status = monitor.child_pid, monitor.wait_child()
        trace(log, "monitor", "net-child %d exited (wait status %d) before authentication", net_pid, status)
        _log_preauth_end(monitor, status)
        return preauth_exit(monitor.options.process_generation, status,
                            monitor.state.auth_attempted)
    if result.handoff is None:
        return preauth_exit(monitor.options.process_generation, None,
                            monitor.state.auth_attempted)
    handoff = result.handoff
    trace(log, "monitor", "hand-off received: seq in %d out %d, cipher in %s out %s",
          handoff.state.inbound.seqno, handoff.state.outbound.seqno,
          handoff.state.inbound.cipher, handoff.state.outbound.cipher)
    net_pid, status = monitor.child_pid, monitor.wait_child()
    trace(log, "monitor", "net-child %d exited (wait status %d)", net_pid, status)
    try:  # as sshd-session: the listener no longer counts us, nor penalises
        os.write(monitor.startup_fd, AUTH_DONE)
    except OSError:
        pass  # the listener that forked us is gone (a SIGHUP re-exec closes its pipes)
    os.close(monitor.startup_fd)
    monitor.state.phase = Phase.POSTAUTH
    # What a TunRequest may ask for: this login's PermitTunnel and tunnel="N".
    monitor.state.permit_tunnel = monitor.options.permit_tunnel
    monitor.state.forced_tun = tunnel.forced_unit(monitor.key_options)
    if not _open_pam_session(monitor):
        return 1
    return _run_session(monitor, conn, handoff.state, publics)


def _log_preauth_end(monitor: Monitor, status: int) -> None:
    """sshd's last line for a connection that ended before authentication,
    chosen by how the net-child ended (netchild.EXIT_*): nothing when it
    wrote its own fatal line; the banner exchange's words, unmarked, when
    the client left before its identification string (sshd's [priv] reads
    that itself); else "Connection closed by", as sshd's net-child writes
    it when the client hangs up."""
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code == netchild.EXIT_LOGGED:
        return
    if code == netchild.EXIT_NO_BANNER:
        log.error("kex_exchange_identification: Connection closed by remote host")
        log.info("Connection closed by %s", monitor.peer)
        return
    # sshd's logdie writes at INFO whatever its caller's level
    if monitor.state.user is None:
        log.info("Connection closed by %s [preauth]", monitor.peer)
    else:
        log.info("Connection closed by %s %s [preauth]", monitor.connection_id(), monitor.peer)


def _open_pam_session(monitor: Monitor) -> bool:
    if monitor.pam is None:
        return True
    result = monitor.pam.setcred(auth_pam.PAM_ESTABLISH_CRED)
    if not result.ok:
        log.error("PAM: pam_setcred(): %s", result.message)
        return False
    result = monitor.pam.open_session()
    if not result.ok:
        log.error("PAM: pam_open_session(): %s", result.message)
        return False
    monitor.pam_session_open = True
    monitor.login_messages = result.info
    return True


def _run_session(monitor: Monitor, conn: socket.socket, state: wire.TransportState,
                 publics: list[paramiko.PKey]) -> int:
    assert monitor.pw is not None
    env = monitor.pam.getenvlist() if monitor.pam is not None else {}
    auth_info_path = monitor.write_auth_info()
    if auth_info_path is not None:  # ExposeAuthInfo: handed to the session with PAM's
        env["SSH_USER_AUTH"] = auth_info_path
    ours, theirs = make_pair()
    parent = os.getpid()
    gc.freeze()  # as the listener's: the child's collections leave our pages shared
    # The child waits for this pipe's EOF, so that "User child is on pid"
    # precedes whatever it logs first (a refused chroot), as in sshd's log.
    logged, after_log = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(after_log)
        os.read(logged, 1)
        os.close(logged)
        session_main.run(conn, theirs, state, monitor.pw, env, monitor.options, publics,
                         monitor.peer, monitor.login_messages, monitor.key_options,
                         close_fds=(ours.fileno(),), monitor_pid=parent)
    os.close(logged)
    theirs.close()
    # The connection stays open here too, as in sshd's [priv]: the kernel's
    # TCP socket belongs to the login until its monitor is done.
    monitor.child_pid = pid
    monitor.session_unfinished = True
    trace(log, "monitor", "forked session process %d (uid %d)", pid, monitor.pw.pw_uid)
    verbose(log, "User child is on pid %d", pid)
    os.close(after_log)
    channel = MonitorChannel(ours)
    try:
        result = serve_phase(monitor, channel, "session")
    finally:
        channel.close()
    if result.ending is not Ending.CLOSED:
        return 1
    session_pid, status = monitor.child_pid, monitor.wait_child()
    trace(log, "monitor", "session process %d exited (wait status %d): logout", session_pid, status)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code in (0, session_main.EXIT_LOGGED_END):
        monitor.session_unfinished = False  # it hung up its programs itself
    # The logout records and PAM's close before the last word, as with sshd:
    # whoever reads "Disconnected" finds the login closed.
    monitor.cleanup()
    # No last word of ours after sshd's fatal() or after the session's own
    # last lines (a client gone without a DISCONNECT).
    if code not in (SESSION_FATAL, session_main.EXIT_LOGGED_END):
        log.info("Disconnected from user %s %s", monitor.state.user, monitor.peer)
    return 0
