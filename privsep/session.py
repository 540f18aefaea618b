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
import select
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import NoReturn

import paramiko
import prctl
from paramiko.common import OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, OPEN_SUCCEEDED, cMSG_CHANNEL_REQUEST

from privsep import hostkeys, proctitle, sshpty, transport_setup
from privsep import monitor_wire as wire
from privsep.handoff import ResumedTransport
from privsep.monitor_channel import MonitorChannel
from privsep.monitor_wrap import MonitorClient, MonitorLogHandler
from privsep.servconf import ServerOptions
from privsep.session_policy import SessionPolicy
from privsep.trace import trace

log = logging.getLogger("privsep.session")

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READ_SIZE = 32768  # one full SSH data packet per read


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


class SessionServer(paramiko.ServerInterface):
    """Channel requests of the authenticated user."""

    def __init__(self, process: "SessionProcess") -> None:
        self.process = process

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

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
        return False  # AcceptEnv comes with the configuration work


class SessionProcess:
    def __init__(self, transport: paramiko.Transport, monitor: MonitorClient,
                 pw: pwd.struct_passwd, pam_env: dict[str, str], peer,
                 login_messages: tuple[str, ...] = (),
                 policy: SessionPolicy | None = None) -> None:
        self.login_messages = login_messages
        self.policy = policy or SessionPolicy(ServerOptions().finish(), ())
        self.transport = transport
        self.monitor = monitor
        self.pw = pw
        self.pam_env = pam_env
        self.peer = peer
        self.sessions: dict[int, SessionChannel] = {}
        self.lock = threading.Lock()

    def _session(self, channel: paramiko.Channel) -> SessionChannel:
        with self.lock:
            return self.sessions.setdefault(channel.get_id(), SessionChannel(channel))

    def open_pty(self, channel, term, cols, rows, width_px, height_px, modes) -> bool:
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
        proctitle.set(f"{self.pw.pw_name}@{tty.removeprefix('/dev/')}")
        return True

    def environment(self, session: SessionChannel) -> dict[str, str]:
        """OpenSSH's environment for the user's program."""
        pw = self.pw
        env = {
            "USER": pw.pw_name,
            "LOGNAME": pw.pw_name,
            "HOME": pw.pw_dir,
            "SHELL": pw.pw_shell or "/bin/sh",
            "PATH": ROOT_PATH if pw.pw_uid == 0 else DEFAULT_PATH,
            "MAIL": f"/var/mail/{pw.pw_name}",
            "SSH_CLIENT": f"{self.peer.addr} {self.peer.port} {self.peer.local_port}",
            "SSH_CONNECTION": f"{self.peer.addr} {self.peer.port} "
                              f"{self.peer.local_addr} {self.peer.local_port}",
        }
        if session.pty is not None:
            env["TERM"] = session.pty.term or "dumb"
            env["SSH_TTY"] = session.pty.tty
        env.update(session.env)
        env.update(self.policy.extra_environment(pw))
        env.update(self.pam_env)
        return env

    def start(self, channel: paramiko.Channel, command: str | None) -> bool:
        """Fork the user's shell or command for this channel."""
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


def _pump_out(fd: int, send, stop_fd: int | None = None) -> None:
    """Copy ``fd`` to the channel until EOF.  If ``stop_fd`` becomes readable
    (the program exited), drain what is already buffered and stop."""
    draining = False
    while True:
        if stop_fd is not None and not draining:
            ready, _, _ = select.select([fd, stop_fd], [], [])
            if stop_fd in ready and fd not in ready:
                draining = True
                os.set_blocking(fd, False)
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last slave fd closed
            return
        if not data:
            return
        try:
            send(data)
        except (OSError, EOFError, paramiko.SSHException):
            return


def _pump_in(chan: paramiko.Channel, fd: int, close_on_eof: bool) -> None:
    """Copy the channel's data to ``fd`` until the client's EOF."""
    try:
        while True:
            data = chan.recv(_READ_SIZE)
            if not data:
                break
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
    except OSError:
        pass
    finally:
        if close_on_eof:
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
        writer = threading.Thread(target=_pump_in, args=(chan, pty.master, False), daemon=True)
        writer.start()
        reader = threading.Thread(target=_pump_out, args=(pty.master, chan.sendall, self.exited_r),
                                  daemon=True)
        reader.start()
        _, status = os.waitpid(self.session.pid, 0)
        trace(log, "session", "%d on %s exited (wait status %d)", self.session.pid, pty.tty, status)
        os.write(self.exited_w, b"x")
        reader.join()
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
        pid = os.fork()
        if pid == 0:
            os.setsid()
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
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
        threading.Thread(target=_pump_in, args=(chan, self.stdin, True), daemon=True).start()
        out = threading.Thread(target=_pump_out, args=(self.stdout, chan.sendall), daemon=True)
        err = threading.Thread(target=_pump_out, args=(self.stderr, chan.sendall_stderr), daemon=True)
        out.start()
        err.start()
        _, status = os.waitpid(self.session.pid, 0)
        out.join()
        err.join()
        os.close(self.stdout)
        os.close(self.stderr)
        _finish(chan, status)


def _finish(chan: paramiko.Channel, status: int) -> None:
    """All output delivered: EOF, exit status, close; the client closes the connection."""
    try:
        chan.shutdown_write()
        _send_exit(chan, status)
        chan.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass


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
    transport = ResumedTransport(conn, state, pw.pw_name)
    transport.peer_text = str(peer)
    transport_setup.configure(transport, options)
    hostkeys.install_on(transport, host_publics, monitor.sign)
    process = SessionProcess(transport, monitor, pw, pam_env, peer, login_messages,
                             SessionPolicy(options, key_options))
    transport.resume(SessionServer(process))
    transport.join()
    # The connection is gone: hang up the programs still running on ptys.
    for session in process.sessions.values():
        if session.pid:
            try:
                os.killpg(session.pid, signal.SIGHUP)
            except (ProcessLookupError, PermissionError):
                pass
        process.release_pty(session)
    os._exit(0)
