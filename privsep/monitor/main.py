"""The monitor's life: root, one per connection, from the listener's fork to
the logout.

It forks the sandboxed net-child and serves it until the hand-off, opens the
PAM session, forks the session process (which becomes the user) and serves
it until the connection ends; then, however it ended, it writes the logout
records, closes PAM and leaves no child behind.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from typing import NoReturn

from privsep.common import proctitle, roles
from privsep.common.channel import MonitorChannel, make_pair
from privsep.common.log import verbose
from privsep.common.peer import Peer
from privsep.common.trace import trace
from privsep.config.servconf import ServerConfig, ServerOptions
from privsep.monitor import auth_pam, hostkeys, pubkey
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
        close_fds: tuple[int, ...] = (), new_session: bool = True) -> NoReturn:
    """The monitor's whole life, from the listener's fork: ``close_fds`` are
    the listener's own (its sockets, pipes and signal wake-up pipe).

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
    verbose(log, "Connection from %s port %d on %s port %d", peer.addr, peer.port,
            peer.local_addr, peer.local_port)
    monitor = Monitor(options, host_keys, peer, startup_fd, config=config)
    if options.tcp_keep_alive:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    _no_nagle(conn)
    code = 1
    try:
        code = _preauth_then_session(monitor, conn)
    except Exception:  # never a traceback to the client; one to the log
        log.exception("fatal: monitor error for %s", peer)
    finally:
        monitor.cleanup()
    sys.stdout.flush()
    os._exit(code)


def _on_grace_timeout(peer: Peer):
    def handler(signum, frame) -> None:
        log.info("Timeout before authentication for %s", peer)
        # pdeathsig takes the net-child with us.
        os._exit(1)
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


def _fork_net_child(monitor: Monitor, conn: socket.socket) -> MonitorChannel:
    ours, theirs = make_pair()
    publics = hostkeys.public_keys(monitor.host_keys)
    banner = _read_banner(monitor.options.banner)
    pid = os.fork()
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


def _preauth_then_session(monitor: Monitor, conn: socket.socket) -> int:
    signal.signal(signal.SIGALRM, _on_grace_timeout(monitor.peer))
    signal.alarm(monitor.options.login_grace_time)
    channel = _fork_net_child(monitor, conn)
    try:
        result = serve_phase(monitor, channel, "preauth")
    finally:
        channel.close()
    signal.alarm(0)
    if result.ending is Ending.CLOSED:
        net_pid, status = monitor.child_pid, monitor.wait_child()
        trace(log, "monitor", "net-child %d exited (wait status %d) before authentication", net_pid, status)
        if monitor.state.user is None:
            log.info("Connection closed by %s [preauth]", monitor.peer)
        else:
            who = ("authenticating user " + monitor.state.user if monitor.state.user_valid
                   else "invalid user " + monitor.state.user)
            log.info("Connection closed by %s %s [preauth]", who, monitor.peer)
        return 0 if os.WIFEXITED(status) else 1
    if result.handoff is None:
        return 1
    handoff = result.handoff
    trace(log, "monitor", "hand-off received: seq in %d out %d, cipher in %s out %s",
          handoff.state.inbound.seqno, handoff.state.outbound.seqno,
          handoff.state.inbound.cipher, handoff.state.outbound.cipher)
    net_pid, status = monitor.child_pid, monitor.wait_child()
    trace(log, "monitor", "net-child %d exited (wait status %d)", net_pid, status)
    os.close(monitor.startup_fd)
    monitor.state.phase = Phase.POSTAUTH
    # What a TunRequest may ask for: this login's PermitTunnel and tunnel="N".
    monitor.state.permit_tunnel = monitor.options.permit_tunnel
    monitor.state.forced_tun = tunnel.forced_unit(monitor.key_options)
    if not _open_pam_session(monitor):
        return 1
    return _run_session(monitor, conn, handoff.state)


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


def _run_session(monitor: Monitor, conn: socket.socket, state: wire.TransportState) -> int:
    assert monitor.pw is not None
    env = monitor.pam.getenvlist() if monitor.pam is not None else {}
    auth_info_path = monitor.write_auth_info()
    if auth_info_path is not None:  # ExposeAuthInfo: handed to the session with PAM's
        env["SSH_USER_AUTH"] = auth_info_path
    ours, theirs = make_pair()
    publics = hostkeys.public_keys(monitor.host_keys)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        session_main.run(conn, theirs, state, monitor.pw, env, monitor.options, publics,
                         monitor.peer, monitor.login_messages, monitor.key_options,
                         close_fds=(ours.fileno(),), monitor_pid=parent)
    theirs.close()
    # The connection stays open here too, as in sshd's [priv]: the kernel's
    # TCP socket belongs to the login until its monitor is done.
    monitor.child_pid = pid
    monitor.session_unfinished = True
    trace(log, "monitor", "forked session process %d (uid %d)", pid, monitor.pw.pw_uid)
    channel = MonitorChannel(ours)
    try:
        result = serve_phase(monitor, channel, "session")
    finally:
        channel.close()
    if result.ending is not Ending.CLOSED:
        return 1
    session_pid, status = monitor.child_pid, monitor.wait_child()
    trace(log, "monitor", "session process %d exited (wait status %d): logout", session_pid, status)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        monitor.session_unfinished = False  # it hung up its programs itself
    # The logout records and PAM's close before the last word, as with sshd:
    # whoever reads "Disconnected" finds the login closed.
    monitor.cleanup()
    log.info("Disconnected from user %s %s", monitor.state.user, monitor.peer)
    return 0
