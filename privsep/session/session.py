"""The post-auth session process: the user's uid, carrying the connection.

Forked by the monitor after the hand-off.  It drops to the user for good,
resumes the SSH transport where the net-child left it, and serves session
channels: ptys (allocated by the monitor), shells and commands, window
changes, exit status.  Everything here runs with the user's rights only.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import termios

import paramiko
from paramiko.common import OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
from paramiko.message import Message

from privsep.child.monitor_client import MonitorClient
from privsep.common import proctitle, roles
from privsep.common.log import verbose
from privsep.config.match import match_pattern
from privsep.config.servconf import ServerOptions
from privsep.session import chroot, connopts, parse_fatal, programs, tty
from privsep.session.agent import AgentForwarding
from privsep.session.forward import Forwarding
from privsep.session.loop import EventLoop
from privsep.session.policy import SessionPolicy
from privsep.session.sftp import launch as sftp_launch
from privsep.session.state import Pty, SessionChannel
from privsep.session.timeouts import UnusedConnection
from privsep.session.transport import SessionTransport
from privsep.session.x11 import X11Forwarding
from privsep.session.tunnel import Tunnels
from privsep.shell import spawn
from privsep.wire import hostkey_blobs
from privsep.wire import messages as wire
from privsep.wire import tunnel as wire_tunnel
from privsep.wire.facts import DEFAULT_RSA_ALGORITHM, INTERNAL_SFTP, RSA_ALGORITHMS

log = logging.getLogger("privsep.session")

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The signals a client may send (sshd's name2sig).
SIGNALS = {name: getattr(signal, "SIG" + name)
           for name in ("HUP", "INT", "KILL", "QUIT", "TERM", "USR1", "USR2")}
#: Environment variables a client may set on one session.
MAX_ENV = 128


class SessionServer(paramiko.ServerInterface):
    """Channel requests of the authenticated user."""

    def __init__(self, process: "SessionProcess") -> None:
        self.process = process

    def check_channel_request(self, kind: str, chanid: int) -> int:
        # Sessions and forwards are opened by SessionProcess.channel_open;
        # anything that reaches paramiko is a kind sshd does not serve.
        log.info("refused %s channel open", kind)
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination) -> int:
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_global_request(self, kind, msg) -> bool:
        return False  # what sshd answers to keepalive@openssh.com and the unknown

    def check_port_forward_request(self, address, port) -> bool:
        return False

    def check_channel_subsystem_request(self, channel, name) -> bool:
        return self.process.subsystem(channel, c_string(name))

    def check_channel_forward_agent_request(self, channel) -> bool:
        return self.process.forward_agent(channel)

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth,
                                  pixelheight, modes) -> bool:
        return self.process.open_pty(channel, c_string(term), width, height, pixelwidth,
                                     pixelheight, modes)

    def check_channel_window_change_request(self, channel, width, height, pixelwidth,
                                            pixelheight) -> bool:
        session = self.process.sessions.get(channel.get_id())
        if session is None or session.pty is None:
            return False
        tty.set_size(session.pty.master, width, height, pixelwidth, pixelheight)
        return True

    def check_channel_shell_request(self, channel) -> bool:
        return self.process.start(channel, None)

    def check_channel_exec_request(self, channel, command) -> bool:
        text = command.decode("utf-8", "replace") if isinstance(command, bytes) else command
        return self.process.start(channel, c_string(text))

    def check_channel_env_request(self, channel, name, value) -> bool:
        return self.process.set_env(channel, c_string(name), c_string(value))


def c_string(value: str | bytes) -> str | bytes:
    """What sshd's sshpkt_get_cstring makes of a string: cut at its NUL,
    which check_session_request (parse_fatal.py) allowed only as the last
    byte ("echo hi\\0" runs "echo hi")."""
    return value.split("\0" if isinstance(value, str) else b"\0", 1)[0]


class SessionProcess:
    """The connection: its session channels, forwards, agent socket and the
    connection-level requests (the transport's ``connection``)."""

    def __init__(self, loop: EventLoop, transport: SessionTransport, monitor: MonitorClient,
                 pw: pwd.struct_passwd, pam_env: dict[str, str], peer,
                 login_messages: tuple[str, ...] = (),
                 policy: SessionPolicy | None = None,
                 host_publics: list[paramiko.PKey] | None = None) -> None:
        self.loop = loop
        self.login_messages = login_messages
        self.policy = policy or SessionPolicy(ServerOptions().finish(), ())
        self.transport = transport
        self.monitor = monitor
        self.pw = pw
        self.pam_env = pam_env
        self.peer = peer
        self.options = self.policy.options
        self.host_publics = list(host_publics or [])
        self.sessions: dict[int, SessionChannel] = {}
        #: sessions whose channel is gone but which are not over yet (their
        #: program runs on): sshd keeps them, and their number, until then
        self.closing: list[SessionChannel] = []
        loop.each_pass(self.collect_closed)
        self.no_more_sessions = False
        self.forwarding = Forwarding(loop, transport, self.policy.forward_rules(), pw.pw_name)
        self.agent = AgentForwarding(loop, transport)
        self.x11 = X11Forwarding(loop, transport, self.options)
        #: UnusedConnectionTimeout's clock, when set (main.py)
        self.unused: UnusedConnection | None = None
        self.tunnels = Tunnels(loop, transport, monitor, self.options.permit_tunnel,
                               wire_tunnel.forced_unit(self.policy.key_options))
        #: keepalive@openssh.com requests sent and not answered (ClientAlive*)
        self.alive_unanswered = 0
        #: IPQoS is set once per connection, at the first program
        self.qos_set = False
        #: ChrootDirectory, entered before the uid changed (main._enter_jail)
        self.jail = chroot.Jail()

    def _session(self, channel: paramiko.Channel) -> SessionChannel:
        return self.sessions.setdefault(channel.get_id(), SessionChannel(channel))

    def update_title(self) -> None:
        """user@pts/1,pts/2 or user@notty, as sshd's session_proctitle."""
        ttys = [s.pty.tty.removeprefix("/dev/") for s in self.sessions.values()
                if s.pty is not None and not s.pty_released]
        proctitle.set(roles.session_title(self.pw.pw_name, ttys))

    # --- the transport's questions (session_transport.Connection) -----------------

    def channel_open(self, transport: SessionTransport, kind: str, m: Message, peer) -> bool:
        if kind == "session":
            if self.no_more_sessions:
                log.error("Possible attack: attempt to open a session after additional "
                          "sessions disabled")
                transport.close()
                return True
            if len(self.sessions) >= self.options.max_sessions:
                log.error("no more sessions")
                transport.refuse_channel(peer, OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, "open failed")
                return True
            chan = transport.new_channel(peer)
            taken = {s.number for s in [*self.sessions.values(), *self.closing]}
            number = next(n for n in range(len(taken) + 1) if n not in taken)
            self.sessions[chan.get_id()] = SessionChannel(chan, number=number)
            return True
        if kind == "direct-tcpip":
            self.forwarding.direct_tcpip(peer, m)
            return True
        if kind == "direct-streamlocal@openssh.com":
            self.forwarding.direct_streamlocal(peer, m)
            return True
        if kind == wire_tunnel.CHANNEL_TYPE:
            self.tunnels.open(peer, m)
            return True
        return False

    def global_request(self, kind: str, want_reply: bool, m: Message):
        if kind == "tcpip-forward":
            address, port = m.get_text(), m.get_int()
            bound = self.forwarding.tcpip_forward(address, port, want_reply)
            if bound is None:
                return False
            return bound.to_bytes(4, "big") if port == 0 else True
        if kind == "cancel-tcpip-forward":
            return self.forwarding.cancel_tcpip_forward(m.get_text(), m.get_int())
        if kind == "streamlocal-forward@openssh.com":
            return self.forwarding.streamlocal_forward(m.get_text())
        if kind == "cancel-streamlocal-forward@openssh.com":
            return self.forwarding.cancel_streamlocal_forward(m.get_text())
        if kind == "no-more-sessions@openssh.com":
            self.no_more_sessions = True
            return True
        if kind == hostkey_blobs.HOSTKEYS_PROVE:
            return self.prove_hostkeys(m)
        return False  # keepalive@openssh.com and the unknown: failure, as sshd

    def channel_request(self, chan: paramiko.Channel, kind: str, m: Message) -> bool | None:
        session = self.sessions.get(chan.get_id())
        if session is None:
            verbose(log, "channel %d: %s request refused: not a session channel", chan.get_id(), kind)
            return False
        parse_fatal.check_session_request(kind, m, larval=not session.started)
        if kind == "signal":
            return self.signal(session, m)
        if kind == "x11-req":
            return self.x11_request(session, m)
        if kind == "break":
            m.get_int()
            if session.pty is None:
                return False
            try:
                termios.tcsendbreak(session.pty.master, 0)
            except OSError:
                return False
            return True
        if kind == "eow@openssh.com":
            # The client's stdout is gone: stop reading the program's output
            # so that it gets EPIPE (sshd's chan_rcvd_eow).
            session.eow = True
            if session.runner is not None:
                session.runner.eow()
            return True
        if kind in ("exit-status", "exit-signal", "xon-xoff"):
            return False  # client-to-server, meaningless here
        return None

    def channels_open(self) -> bool:
        """Whether any channel is open, as sshd's channel_still_open counts:
        not one closed on our side, nor a session whose program has not run."""
        for chanid, chan in self.transport.live_channels():
            session = self.sessions.get(chanid)
            if not chan.closed and (session is None or session.started):
                return True
        return False

    def channel_gone(self, chanid: int) -> None:
        if self.unused is not None:
            self.unused.channel_closed()
        session = self.sessions.pop(chanid, None)
        if session is None:
            return
        if session.x11 is not None:
            session.x11.close(self.loop)  # the display goes with its session, as in sshd
        if session.sink is not None:
            if session.pty is None:
                # What the client sent before its CLOSE still goes to the
                # program, then its stdin ends, as sshd drains a channel's
                # output after the peer's CLOSE (CHAN_OUTPUT_WAIT_DRAIN).
                session.sink.client_eof()
            else:
                session.sink.stop()  # the program is hung up below
        if session.pty is not None and session.started and not session.exited and session.pid:
            # The client closed the channel first: hang up the program, as
            # closing sshd's pty master does.
            try:
                os.killpg(session.pid, signal.SIGHUP)
            except (ProcessLookupError, PermissionError):
                pass
        if session.pty is not None and not session.started:
            for fd in (session.pty.master, session.pty.slave):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.release_pty(session)
        self.closing.append(session)
        self.update_title()

    def collect_closed(self) -> None:
        """A session whose channel is closed both ways and whose program
        was reaped (or never ran) is over: sshd's session_close_by_channel,
        at its channel garbage collection.  Run before each wait of the
        loop, so that a client's DISCONNECT read with its CLOSE ends the
        connection first and the line is not written, as with sshd."""
        for session in [s for s in self.closing if s.exited or not s.pid]:
            self.closing.remove(session)
            self._log_close(session)

    def close_all(self) -> None:
        """The client closed the connection without a DISCONNECT: every
        session still held is over (sshd's session_destroy_all, at the end
        of its server loop)."""
        for session in sorted([*self.sessions.values(), *self.closing], key=lambda s: s.number):
            self._log_close(session)
        self.closing.clear()

    def _log_close(self, session: SessionChannel) -> None:
        """sshd's "Close session" line (session.c session_close)."""
        verbose(log, "Close session: user %s from %s port %d id %d", self.pw.pw_name,
                self.peer.addr, self.peer.port, session.number)

    def alive_reply(self) -> None:
        self.alive_unanswered = 0

    def protocol_error(self, text: str) -> None:
        log.info("Disconnecting user %s %s: %s", self.pw.pw_name, self.peer, text)

    # --- session requests ------------------------------------------------------------

    def set_env(self, channel: paramiko.Channel, name, value) -> bool:
        session = self.sessions.get(channel.get_id())
        if session is None:
            return False
        name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if len(session.env) >= MAX_ENV:
            log.debug("Ignoring env request %s: too many env vars", name)
            return False
        if not name or "=" in name or "\0" in name or "\0" in value:
            return False
        for pattern in self.options.accept_env:
            if match_pattern(name, pattern):
                log.debug("Setting env %d: %s=%s", len(session.env), name, value)
                session.env[name] = value
                return True
        log.debug("Ignoring env request %s: disallowed name", name)
        return False

    def signal(self, session: SessionChannel, m: Message) -> bool:
        """The "signal" request, as sshd's session_signal_req: the program's
        process group gets it, unless it is not one of sshd's names, no
        program runs, or the program is a forced command or a subsystem.
        Unlike the other session requests, a malformed one is a failure
        and a line, not the connection's end."""
        try:
            raw = m.get_cstring()
            m.expect_end()
        except parse_fatal.PARSE_ERRORS as exc:
            log.error("session_signal_req: parse: %s", exc)
            return False
        # any byte may come: the line escapes what is not printable
        name = c_string(raw).decode("utf-8", "surrogateescape")
        sig = SIGNALS.get(name)
        if sig is None:
            log.error("session_signal_req: unsupported signal \"%s\"", name)
            return False
        if not session.pid or session.exited:
            log.error("session_signal_req: no pid for session %d", session.number)
            return False
        if session.forced or session.subsystem:
            log.error("session_signal_req: refusing to send signal %s to %s session", name,
                      "forced-command" if session.forced else "subsystem")
            return False
        try:
            os.killpg(session.pid, sig)
        except OSError as exc:
            log.error("session_signal_req: killpg(%d, %d): %s", session.pid, sig, exc.strerror)
            return False
        return True

    def subsystem(self, channel: paramiko.Channel, name: str) -> bool:
        command = self.options.subsystems().get(name)
        if command is None:
            log.info("subsystem request for %s by user %s failed, subsystem not found",
                     name, self.pw.pw_name)
            return False
        program = command.split()[0]
        verbose(log, "subsystem request for %s by user %s", name, self.pw.pw_name)
        if program != INTERNAL_SFTP and not os.path.exists(program):
            log.debug("subsystem: cannot stat %s", program)
        session = self._session(channel)
        session.subsystem = True
        session.subsystem_name = name
        session.xtype = f"session:subsystem:{name}"
        return self.start(channel, command)

    def x11_request(self, session: SessionChannel, m: Message) -> bool:
        """x11-req: a display for this session's programs (x11.py).  Read
        here, not by paramiko, as sshd's session_x11_req reads it: only
        before the program starts (after, sshd leaves it unread and
        fails it); the protocol and cookie as C strings, a trailing NUL
        cut (check_session_request refused one inside); any other byte is
        kept for valid_auth_text to refuse, where paramiko's get_text would
        fail on one that is not UTF-8."""
        if session.started:
            return False
        single = m.get_boolean()
        proto = c_string(m.get_cstring()).decode("utf-8", "surrogateescape")
        cookie = c_string(m.get_cstring()).decode("utf-8", "surrogateescape")
        screen = m.get_int()
        display = self.x11.request(self.policy.x11_key_permitted(), session.x11, single,
                                   proto, cookie, screen)
        if display is None:
            return False
        session.x11 = display
        return True

    def forward_agent(self, channel: paramiko.Channel) -> bool:
        if channel.get_id() not in self.sessions:
            return False
        rules = self.forwarding.rules
        if not self.policy.agent_allowed() or rules.disabled:
            log.debug("auth-agent-req@openssh.com: agent forwarding disabled")
            return False
        return self.agent.start()

    # --- connection requests ---------------------------------------------------------

    def prove_hostkeys(self, m: Message):
        """hostkeys-prove-00@openssh.com: a signature by each named key of ours,
        made by the monitor over (request name, session id, key)."""
        ours = {k.asbytes(): k for k in self.host_publics}
        signatures = Message()
        while m.get_remainder():
            blob = m.get_binary()
            key = ours.get(blob)
            if key is None:
                log.error("hostkeys-prove: unknown host key")
                return False
            algorithm = key.get_name()
            if algorithm == "ssh-rsa":
                kex_alg = getattr(self.transport, "host_key_type", None)
                algorithm = kex_alg if kex_alg in RSA_ALGORITHMS else DEFAULT_RSA_ALGORITHM
            data = hostkey_blobs.hostkeys_prove_data(self.transport.session_id, blob)
            try:
                signatures.add_string(self.monitor.sign(algorithm, data))
            except Exception as exc:
                log.error("hostkeys-prove: signing failed: %s", exc)
                return False
        return signatures.asbytes()

    def notify_hostkeys(self) -> None:
        """hostkeys-00@openssh.com: every host key, so that UpdateHostKeys learns them."""
        fields = Message()
        for key in self.host_publics:
            fields.add_string(key.asbytes())
        self.transport.send_global_request("hostkeys-00@openssh.com", fields.asbytes())

    def open_pty(self, channel, term, cols, rows, width_px, height_px, modes) -> bool:
        if channel.get_id() not in self.sessions:
            return False
        session = self._session(channel)
        if session.pty is not None or session.started:
            return False
        if not self.policy.pty_allowed():
            log.info("PTY allocation disabled for %s", self.pw.pw_name)
            return False
        if isinstance(term, bytes):
            term = term.decode("utf-8", "replace")
        try:
            answer, master, slave = self.monitor.pty(term, cols, rows, width_px, height_px)
        except (wire.ProtocolError, OSError, EOFError) as exc:
            log.error("pty allocation failed: %s", exc)
            return False
        # The size and the modes are ours to set, as in sshd's session_pty_req.
        try:
            tty.set_size(master, cols, rows, width_px, height_px)
        except OSError as exc:
            log.debug("window size not set: %s", exc)
        try:
            tty.apply_modes(slave, modes if isinstance(modes, bytes) else b"")
        except Exception as exc:  # bad modes are the client's problem, not fatal
            log.debug("terminal modes not applied: %s", exc)
        session.pty = Pty(answer.tty, master, slave, term, modes, answer.last_login)
        self.update_title()
        return True

    def environment(self, session: SessionChannel) -> dict[str, str]:
        """OpenSSH's environment for the user's program, in the order of
        session.c's do_setup_env: what comes later wins, so the client's
        variables (AcceptEnv) come first and cannot replace the server's."""
        pw = self.pw
        env = dict(session.env)
        env.update({
            "USER": pw.pw_name,
            "LOGNAME": pw.pw_name,
            "HOME": pw.pw_dir,
            "PATH": ROOT_PATH if pw.pw_uid == 0 else DEFAULT_PATH,
            # no MAIL: Debian's sshd sets none (measured), nor does its pam_mail (noenv)
            "SHELL": pw.pw_shell or "/bin/sh",
        })
        if session.pty is not None:
            env["TERM"] = session.pty.term or "dumb"
        if session.x11 is not None:
            env["DISPLAY"] = session.x11.display
        if self.agent.path is not None:
            env["SSH_AUTH_SOCK"] = self.agent.path
        env.update(self.policy.extra_environment(pw, self.pam_env))
        env["SSH_CLIENT"] = f"{self.peer.addr} {self.peer.port} {self.peer.local_port}"
        env["SSH_CONNECTION"] = (f"{self.peer.addr} {self.peer.port} "
                                 f"{self.peer.local_addr} {self.peer.local_port}")
        if self.tunnels.ifnames:
            env["SSH_TUNNEL"] = ",".join(self.tunnels.ifnames)
        if session.pty is not None:
            env["SSH_TTY"] = session.pty.tty
        return env

    def start(self, channel: paramiko.Channel, command: str | None) -> bool:
        """Fork the user's shell or command for this channel."""
        if channel.get_id() not in self.sessions:
            return False
        session = self._session(channel)
        if session.started:
            return False
        session.started = True
        # sshd's channel_set_xtype, by the request (whatever ForceCommand runs)
        xtype = session.xtype or ("session:shell" if command is None else "session:command")
        shell = self.pw.pw_shell or "/bin/sh"
        name = os.path.basename(shell)
        env = self.environment(session)
        forced = self.policy.forced_command()
        session.forced = forced is not None
        self._log_start(session, command, forced)
        if forced is not None:
            if command is not None:
                env["SSH_ORIGINAL_COMMAND"] = command
            command = forced
        login = command is None
        argv = [f"-{name}"] if login else [name, "-c", command]
        rc = self.policy.user_rc_allowed(session.subsystem)
        if not self.qos_set:  # once, at the first program: sshd's packet_set_interactive
            self.qos_set = True
            # interactive with a pty or an X11 display, as sshd's do_exec_no_pty
            bulk = session.pty is None and session.x11 is None
            connopts.set_ip_qos(self.transport.sock, self.options.ip_qos[bulk])
        quiet_home = self.jail.active
        x11_auth = session.x11.auth if session.x11 is not None else None
        try:
            internal = sftp_launch.runner(self, session, command, forced is not None, env)
            if internal is not None:
                runner = internal
            elif session.pty is not None:
                # a login shell first shows what PAM said (motd) and the last login
                banner = self.policy.login_banner(self.login_messages, session.pty.last_login)
                program = spawn.Program(shell, argv, env, self.pw.pw_dir, banner if login else "",
                                        user_rc=rc, x11=x11_auth, quiet_home=quiet_home)
                runner = programs.PtyRunner(self.loop, session, program, self.release_pty)
            else:
                # a login shell without a pty (ssh -T) shows what PAM said too, as sshd
                banner = "".join(f"{line}\n" for line in self.login_messages)
                program = spawn.Program(shell, argv, env, self.pw.pw_dir, banner if login else "",
                                        user_rc=rc, x11=x11_auth, quiet_home=quiet_home)
                runner = programs.PipeRunner(self.loop, session, program)
        except OSError as exc:
            log.error("session: could not start %s: %s", shell, exc)
            return False
        session.runner = runner
        runner.start()
        self.transport.channel_opened(channel, xtype)  # ChannelTimeout's clock starts
        return True

    def _log_start(self, session: SessionChannel, command: str | None,
                   forced: str | None) -> None:
        """sshd's "Starting session" line (session.c do_exec): what starts,
        on which tty, for whom.  A command the client chose is not named
        (sshd keeps it private); a forced one is."""
        if forced is not None:
            source = "(config)" if self.options.force_command.lower() != "none" else "(key-option)"
            what = f"forced-command {source} '{forced[:900]}'"
        elif session.subsystem:
            what = f"subsystem '{session.subsystem_name[:900]}'"
        else:
            what = "shell" if command is None else "command"
        on = f" on {session.pty.tty.removeprefix('/dev/')}" if session.pty is not None else ""
        verbose(log, "Starting session: %s%s for %s from %s port %d id %d", what, on,
                self.pw.pw_name, self.peer.addr, self.peer.port, session.number)

    def release_pty(self, session: SessionChannel) -> None:
        if session.pty is None or session.pty_released:
            return
        session.pty_released = True
        try:
            self.monitor.pty_cleanup(session.pty.tty)
        except Exception as exc:
            log.error("pty cleanup for %s failed: %s", session.pty.tty, exc)
        self.update_title()
