"""Agent forwarding (``ssh -A``), in the session process, as the user.

On the client's ``auth-agent-req@openssh.com`` the session process makes a
directory of its own under /tmp (``ssh-XXXXXXXXXX``, mode 0700, owned by the
user since that is who we are) holding a listening socket ``agent.<pid>``,
as sshd does; SSH_AUTH_SOCK names it in the environment of the programs
started afterwards.  Each connection to it becomes an
``auth-agent@openssh.com`` channel to the client.  Both go at logout.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import string

import paramiko

from privsep.session.loop import EventLoop
from privsep.session.splice import Splice
from privsep.session.transport import SessionTransport

log = logging.getLogger("privsep.session")

_ALPHABET = string.ascii_letters + string.digits


class AgentForwarding:
    def __init__(self, loop: EventLoop, transport: SessionTransport, tmpdir: str = "/tmp") -> None:
        self.loop = loop
        self.transport = transport
        self.tmpdir = tmpdir
        self.directory: str | None = None
        self.path: str | None = None
        self._sock: socket.socket | None = None

    def start(self) -> bool:
        """Listen for the user's programs; False if it cannot (or did already)."""
        if self._sock is not None:
            return False  # one agent socket per connection, as sshd
        for _ in range(100):
            directory = os.path.join(self.tmpdir, "ssh-" + "".join(
                secrets.choice(_ALPHABET) for _ in range(10)))
            try:
                os.mkdir(directory, 0o700)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                log.error("mkdtemp: private socket dir: %s", exc.strerror)
                return False
        else:
            return False
        path = os.path.join(directory, f"agent.{os.getpid()}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            sock.listen(128)
        except OSError as exc:
            log.error("agent forwarding: bind %s: %s", path, exc.strerror)
            sock.close()
            os.rmdir(directory)
            return False
        self.directory, self.path, self._sock = directory, path, sock
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)
        return True

    def _accept(self) -> None:
        """A program connected to the socket: an agent channel to the client."""
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return

        def opened(chan) -> None:
            if chan is None:
                log.info("agent forwarding: client refused the channel")
                conn.close()
                return
            Splice(self.loop, chan, conn)
        try:
            self.transport.open_channel_to_client("auth-agent@openssh.com", b"", opened)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("agent forwarding: client refused the channel: %s", exc)
            conn.close()

    def stop(self) -> None:
        """Remove the socket and its directory (logout)."""
        sock, path, directory = self._sock, self.path, self.directory
        self._sock = None
        if sock is None:
            return
        self.loop.forget(sock.fileno())
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        for remove, target in ((os.unlink, path), (os.rmdir, directory)):
            try:
                remove(target)
            except (OSError, TypeError):
                pass
