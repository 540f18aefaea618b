"""The post-auth session process: the user's uid, carrying the connection.

Forked by the monitor after the hand-off.  It drops to the user for good,
resumes the SSH transport where the net-child left it, and serves session
channels: ptys (allocated by the monitor), shells and commands, window
changes, exit status.  Everything here runs with the user's rights only.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import pwd
import select
import signal
import socket
import termios
import threading
import time
from dataclasses import dataclass, field
from typing import NoReturn

import paramiko
import prctl
from paramiko.common import OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from privsep import hostkeys, proctitle, sshpty, transport_setup
from privsep import monitor_wire as wire
from privsep.log import verbose
from privsep.monitor_channel import MonitorChannel
from privsep.monitor_wrap import MonitorClient, MonitorLogHandler
from privsep.servconf import ServerOptions
from privsep.session_agent import AgentForwarding
from privsep.session_forward import Forwarding, ForwardRules
from privsep.session_policy import SessionPolicy
from privsep.session_stdin import StdinSink
from privsep.session_transport import SessionTransport
from privsep.trace import trace

log = logging.getLogger("privsep.session")

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: paramiko keeps 64 bytes of the client's maximum packet for headers.
_PACKET_HEADROOM = 64
#: the most one read of a program's output asks for
_MAX_READ = 256 * 1024

#: The signals a client may send (sshd's name2sig).
SIGNALS = {name: getattr(signal, "SIG" + name)
           for name in ("HUP", "INT", "KILL", "QUIT", "TERM", "USR1", "USR2")}
#: Environment variables a client may set on one session.
MAX_ENV = 128
#: OpenSSH's built-in sftp is ours too: sftp-server as the user.
INTERNAL_SFTP = "internal-sftp"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def drop_privileges(pw: pwd.struct_passwd) -> None:
    """Become the user for good, and prove root cannot be regained."""
    if os.geteuid() == pw.pw_uid != 0:
        return  # an unprivileged daemon already runs as its one user
    os.initgroups(pw.pw_name, pw.pw_gid)
    os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
    os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    if pw.pw_uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise RuntimeError("root could be regained after dropping privileges")


@dataclass
class Pty:
    tty: str
    master: int
    slave: int
    term: str
    modes: bytes
    last_login: str = ""


@dataclass
class SessionChannel:
    """One session channel: at most one pty and one program."""

    chan: paramiko.Channel
    pty: Pty | None = None
    env: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    started: bool = False
    pty_released: bool = False
    subsystem: bool = False
    exited: bool = False
    #: eow@openssh.com: the client can take no more output (its stdout broke)
    eow: threading.Event = field(default_factory=threading.Event)
    #: where the channel's data goes once the program runs
    sink: StdinSink | None = None


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
        return self.process.subsystem(channel, name)

    def check_channel_forward_agent_request(self, channel) -> bool:
        return self.process.forward_agent(channel)

    def check_channel_x11_request(self, channel, single, proto, cookie, screen) -> bool:
        return False

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth,
                                  pixelheight, modes) -> bool:
        return self.process.open_pty(channel, term, width, height, pixelwidth, pixelheight, modes)

    def check_channel_window_change_request(self, channel, width, height, pixelwidth,
                                            pixelheight) -> bool:
        session = self.process.sessions.get(channel.get_id())
        if session is None or session.pty is None:
            return False
        sshpty.set_size(session.pty.master, width, height, pixelwidth, pixelheight)
        return True

    def check_channel_shell_request(self, channel) -> bool:
        return self.process.start(channel, None)

    def check_channel_exec_request(self, channel, command) -> bool:
        text = command.decode("utf-8", "replace") if isinstance(command, bytes) else command
        return self.process.start(channel, text)

    def check_channel_env_request(self, channel, name, value) -> bool:
        return self.process.set_env(channel, name, value)


class SessionProcess:
    """The connection: its session channels, forwards, agent socket and the
    connection-level requests (the transport's ``connection``)."""

    def __init__(self, transport: SessionTransport, monitor: MonitorClient,
                 pw: pwd.struct_passwd, pam_env: dict[str, str], peer,
                 login_messages: tuple[str, ...] = (),
                 policy: SessionPolicy | None = None,
                 host_publics: list[paramiko.PKey] | None = None) -> None:
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
        self.lock = threading.Lock()
        self.no_more_sessions = False
        self.forwarding = Forwarding(transport, self.policy.forward_rules(), pw.pw_name)
        self.agent = AgentForwarding(transport)
        #: keepalive@openssh.com requests sent and not answered (ClientAlive*)
        self.alive_unanswered = 0

    def _session(self, channel: paramiko.Channel) -> SessionChannel:
        with self.lock:
            return self.sessions.setdefault(channel.get_id(), SessionChannel(channel))

    def update_title(self) -> None:
        """user@pts/1,pts/2 or user@notty, as sshd's session_proctitle."""
        with self.lock:
            ttys = [s.pty.tty.removeprefix("/dev/") for s in self.sessions.values()
                    if s.pty is not None and not s.pty_released]
        proctitle.set(f"{self.pw.pw_name}@{','.join(ttys) or 'notty'}")

    # --- the transport's questions (session_transport.Connection) -----------------

    def channel_open(self, transport: SessionTransport, kind: str, m: Message, peer) -> bool:
        if kind == "session":
            if self.no_more_sessions:
                log.error("Possible attack: attempt to open a session after additional "
                          "sessions disabled")
                transport.close()
                return True
            with self.lock:
                count = len(self.sessions)
            if count >= self.options.max_sessions:
                log.error("no more sessions")
                transport.refuse_channel(peer, OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, "open failed")
                return True
            chan = transport.new_channel(peer)
            with self.lock:
                self.sessions[chan.get_id()] = SessionChannel(chan)
            return True
        if kind == "direct-tcpip":
            self.forwarding.direct_tcpip(peer, m)
            return True
        if kind == "direct-streamlocal@openssh.com":
            self.forwarding.direct_streamlocal(peer, m)
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
        if kind == hostkeys.HOSTKEYS_PROVE:
            return self.prove_hostkeys(m)
        return False  # keepalive@openssh.com and the unknown: failure, as sshd

    def channel_request(self, chan: paramiko.Channel, kind: str, m: Message) -> bool | None:
        session = self.sessions.get(chan.get_id())
        if session is None:
            verbose(log, "channel %d: %s request refused: not a session channel", chan.get_id(), kind)
            return False
        if kind == "signal":
            return self.signal(session, m.get_text())
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
            session.eow.set()
            return True
        if kind in ("exit-status", "exit-signal", "xon-xoff"):
            return False  # client-to-server, meaningless here
        return None

    def channel_gone(self, chanid: int) -> None:
        with self.lock:
            session = self.sessions.pop(chanid, None)
        if session is None:
            return
        if session.sink is not None:
            session.sink.stop()
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
        self.update_title()

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
            if fnmatch.fnmatchcase(name, pattern.replace("[", "[[]")):
                log.debug("Setting env %d: %s=%s", len(session.env), name, value)
                session.env[name] = value
                return True
        log.debug("Ignoring env request %s: disallowed name", name)
        return False

    def signal(self, session: SessionChannel, name: str) -> bool:
        sig = SIGNALS.get(name)
        if sig is None:
            log.error("session_signal_req: unsupported signal \"%s\"", name)
            return False
        if not session.pid or session.exited:
            log.error("session_signal_req: no pid for session %d", session.chan.get_id())
            return False
        if session.subsystem:
            log.error("session_signal_req: refusing to send signal %s to subsystem session", name)
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
        if program == INTERNAL_SFTP:
            command = SFTP_SERVER + command[len(INTERNAL_SFTP):]
            program = SFTP_SERVER
        verbose(log, "subsystem request for %s by user %s", name, self.pw.pw_name)
        if not os.path.exists(program):
            log.debug("subsystem: cannot stat %s", program)
        session = self._session(channel)
        session.subsystem = True
        return self.start(channel, command)

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
                algorithm = kex_alg if kex_alg in hostkeys.RSA_ALGORITHMS else "rsa-sha2-512"
            data = hostkeys.hostkeys_prove_data(self.transport.session_id, blob)
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
            tty = answer.tty
        except (wire.ProtocolError, OSError, EOFError) as exc:
            log.error("pty allocation failed: %s", exc)
            return False
        try:
            sshpty.apply_modes(slave, modes if isinstance(modes, bytes) else b"")
        except Exception as exc:  # bad modes are the client's problem, not fatal
            log.debug("terminal modes not applied: %s", exc)
        session.pty = Pty(tty, master, slave, term, modes, answer.last_login)
        self.update_title()
        return True

    def environment(self, session: SessionChannel) -> dict[str, str]:
        """OpenSSH's environment for the user's program."""
        pw = self.pw
        env = dict(session.env)  # the client's (AcceptEnv); ours win over them
        env.update({
            "USER": pw.pw_name,
            "LOGNAME": pw.pw_name,
            "HOME": pw.pw_dir,
            "SHELL": pw.pw_shell or "/bin/sh",
            "PATH": ROOT_PATH if pw.pw_uid == 0 else DEFAULT_PATH,
            "MAIL": f"/var/mail/{pw.pw_name}",
            "SSH_CLIENT": f"{self.peer.addr} {self.peer.port} {self.peer.local_port}",
            "SSH_CONNECTION": f"{self.peer.addr} {self.peer.port} "
                              f"{self.peer.local_addr} {self.peer.local_port}",
        })
        if session.pty is not None:
            env["TERM"] = session.pty.term or "dumb"
            env["SSH_TTY"] = session.pty.tty
        env.update(session.env)
        env.update(self.policy.extra_environment(pw))
        if self.agent.path is not None:
            env["SSH_AUTH_SOCK"] = self.agent.path
        env.update(self.pam_env)
        return env

    def start(self, channel: paramiko.Channel, command: str | None) -> bool:
        """Fork the user's shell or command for this channel."""
        if channel.get_id() not in self.sessions:
            return False
        session = self._session(channel)
        if session.started:
            return False
        session.started = True
        shell = self.pw.pw_shell or "/bin/sh"
        name = os.path.basename(shell)
        env = self.environment(session)
        forced = self.policy.forced_command()
        if forced is not None:
            if command is not None:
                env["SSH_ORIGINAL_COMMAND"] = command
            command = forced
        argv = [f"-{name}"] if command is None else [name, "-c", command]
        try:
            if session.pty is not None:
                runner = _PtyRunner(self, session, shell, argv, env)
            else:
                runner = _PipeRunner(self, session, shell, argv, env)
        except OSError as exc:
            log.error("session: could not start %s: %s", shell, exc)
            return False
        runner.start()
        return True

    def release_pty(self, session: SessionChannel) -> None:
        with self.lock:
            if session.pty is None or session.pty_released:
                return
            session.pty_released = True
        try:
            self.monitor.pty_cleanup(session.pty.tty)
        except Exception as exc:
            log.error("pty cleanup for %s failed: %s", session.pty.tty, exc)
        self.update_title()


def _exec_child(shell: str, argv: list[str], env: dict[str, str], home: str) -> NoReturn:
    """In the forked child, after its fds are in place: become the program."""
    try:
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                    signal.SIGHUP, signal.SIGCHLD, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.closerange(3, 65536)
        try:
            os.chdir(home)
        except OSError:
            os.write(2, f"Could not chdir to home directory {home}: No such file or directory\n".encode())
            os.chdir("/")
        os.execve(shell, argv, env)
    except BaseException:
        pass
    os._exit(127)


def _send_exit(chan: paramiko.Channel, status: int) -> None:
    """exit-status, or exit-signal with the core flag, as sshd sends them."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name.removeprefix("SIG")
        except ValueError:
            name = f"SIG{sig}@openssh.com"
        m = paramiko.Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("exit-signal")
        m.add_boolean(False)
        m.add_string(name)
        m.add_boolean(os.WCOREDUMP(status))
        m.add_string("")
        m.add_string("")
        chan.transport._send_user_message(m)
    else:
        chan.send_exit_status(os.WEXITSTATUS(status))


def _output_read_size(chan: paramiko.Channel) -> int:
    """Two of the largest data packets paramiko sends on ``chan``: a full
    64 KiB pipe then leaves in two full packets, where a read of 65536
    bytes would add a third packet of 128 bytes and its whole cost.  The
    packet size is the client's word: kept between 1 KiB and 256 KiB."""
    payload = chan.out_max_packet_size - _PACKET_HEADROOM
    return 2 * min(max(payload, 1024), _MAX_READ // 2)


def _pump_out(fd: int, send, read_size: int, stop_fd: int | None = None, owned: bool = False,
              eow: threading.Event | None = None) -> None:
    """Copy ``fd`` to the channel until EOF.  If ``stop_fd`` becomes readable
    (the program exited), drain what is already buffered and stop.  An
    ``owned`` fd is closed at the end, so that a program still writing after
    the channel went away gets EPIPE/SIGPIPE, as with sshd (``yes | head``)."""
    draining = False
    try:
        while True:
            if stop_fd is not None and not draining:
                ready, _, _ = select.select([fd, stop_fd], [], [])
                if stop_fd in ready and fd not in ready:
                    draining = True
                    os.set_blocking(fd, False)
            try:
                data = os.read(fd, read_size)
            except BlockingIOError:  # drained; or a pty master's spurious wake-up
                if draining or stop_fd is None:
                    return
                continue
            except OSError:  # EIO: the pty's last slave fd closed
                return
            if not data or (eow is not None and eow.is_set()):
                return
            try:
                send(data)
            except (OSError, EOFError, paramiko.SSHException):
                return
    finally:
        if owned:
            os.close(fd)


class _PtyRunner:
    """A program on a pty: session leader with the pts as controlling tty."""

    def __init__(self, process: SessionProcess, session: SessionChannel, shell: str,
                 argv: list[str], env: dict[str, str]) -> None:
        self.process, self.session = process, session
        pty = session.pty
        assert pty is not None
        self.exited_r, self.exited_w = os.pipe()
        banner = process.policy.login_banner(process.login_messages, pty.last_login) \
            if argv[0][0] == "-" else ""
        pid = os.fork()
        if pid == 0:
            os.close(pty.master)
            sshpty.make_controlling(pty.slave)
            for fd in (0, 1, 2):
                os.dup2(pty.slave, fd)
            if banner:  # a login shell first shows what PAM said (motd)
                os.write(1, banner.encode("utf-8", "replace"))
            _exec_child(shell, argv, env, process.pw.pw_dir)
        session.pid = pid
        trace(log, "session", "started %s (pid %d): session leader (sid %d), controlling tty %s",
              argv[0], pid, pid, pty.tty)
        os.close(pty.slave)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        pty, chan = self.session.pty, self.session.chan
        # (the sink makes the master non-blocking, for the reader too)
        self.session.sink = StdinSink(chan, pty.master, close_on_eof=False)
        chan.attach_sink(self.session.sink)
        reader = threading.Thread(target=_pump_out, daemon=True, args=(
            pty.master, chan.sendall, _output_read_size(chan), self.exited_r))
        reader.start()
        _, status = os.waitpid(self.session.pid, 0)
        trace(log, "session", "%d on %s exited (wait status %d)", self.session.pid, pty.tty, status)
        self.session.exited = True
        os.write(self.exited_w, b"x")
        reader.join()
        os.close(self.exited_r)
        os.close(self.exited_w)
        self.session.sink.stop()
        self.process.release_pty(self.session)
        os.close(pty.master)
        _finish(chan, status)


class _PipeRunner:
    """A program without a pty: stdin, stdout and stderr on separate pipes."""

    def __init__(self, process: SessionProcess, session: SessionChannel, shell: str,
                 argv: list[str], env: dict[str, str]) -> None:
        self.session = session
        in_r, self.stdin = os.pipe()
        self.stdout, out_w = os.pipe()
        self.stderr, err_w = os.pipe()
        # A login shell without a pty (ssh -T) shows what PAM said too, as sshd.
        banner = "".join(f"{line}\n" for line in process.login_messages) if argv[0][0] == "-" else ""
        pid = os.fork()
        if pid == 0:
            os.setsid()
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            if banner:
                os.write(1, banner.encode("utf-8", "replace"))
            _exec_child(shell, argv, env, process.pw.pw_dir)
        session.pid = pid
        trace(log, "session", "started %s (pid %d): session leader (sid %d), no tty, pipes",
              argv[0], pid, pid)
        for fd in (in_r, out_w, err_w):
            os.close(fd)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        chan = self.session.chan
        self.session.sink = StdinSink(chan, self.stdin, close_on_eof=True)
        chan.attach_sink(self.session.sink)
        read_size = _output_read_size(chan)
        out = threading.Thread(target=_pump_out, daemon=True, args=(
            self.stdout, chan.sendall, read_size, None, True, self.session.eow))
        err = threading.Thread(target=_pump_out, daemon=True, args=(
            self.stderr, chan.sendall_stderr, read_size, None, True, self.session.eow))
        out.start()
        err.start()
        _, status = os.waitpid(self.session.pid, 0)
        self.session.exited = True
        out.join()
        err.join()
        self.session.sink.stop()
        _finish(chan, status)


def _finish(chan: paramiko.Channel, status: int) -> None:
    """All output delivered: exit status, EOF, close, in sshd's order; the
    client closes the connection.  The exit status goes first: a client
    whose input is done answers our EOF with its CLOSE at once, the
    transport thread answers that with ours, and an exit status sent after
    the EOF could then arrive after our CLOSE (a mux client reported 255)."""
    if chan.closed:  # the client closed it first: its id may name another channel soon
        return
    try:
        _send_exit(chan, status)
        chan.shutdown_write()
        chan.close()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("channel %d: exit status not delivered: %s", chan.get_id(), exc)


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


def run(conn: socket.socket, channel_sock: socket.socket, state: wire.TransportState,
        pw: pwd.struct_passwd, pam_env: dict[str, str], options: ServerOptions,
        host_publics: list[paramiko.PKey], peer,
        login_messages: tuple[str, ...] = (), key_options: tuple = ()) -> NoReturn:
    """The session process's whole life, right after the monitor forked it."""
    drop_privileges(pw)
    # Without its monitor the session cannot clean up or get a pty: end with
    # it.  (Set after the uid change, which clears it.)
    prctl.set_pdeathsig(signal.SIGTERM)
    if os.getppid() == 1:
        os._exit(1)
    proctitle.set(f"{pw.pw_name}@notty")
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    monitor = MonitorClient(MonitorChannel(channel_sock))
    logging.getLogger().handlers[:] = [MonitorLogHandler(monitor)]
    trace(log, "session", "dropped to uid %d gid %d groups %s; resuming the transport at seq in %d out %d",
          os.getuid(), os.getgid(), ",".join(map(str, os.getgroups())) or "none",
          state.inbound.seqno, state.outbound.seqno)
    transport = SessionTransport(conn, state, pw.pw_name)
    transport.peer_text = str(peer)
    transport_setup.configure(transport, options)
    hostkeys.install_on(transport, host_publics, monitor.sign)
    configure_rekey(transport, options)
    process = SessionProcess(transport, monitor, pw, pam_env, peer, login_messages,
                             SessionPolicy(options, key_options), host_publics)
    transport.connection = process
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
    os._exit(0)
