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
import threading

import paramiko

from privsep.session.forward import splice
from privsep.session.transport import SessionTransport

log = logging.getLogger("privsep.session")

_ALPHABET = string.ascii_letters + string.digits


class AgentForwarding:
    def __init__(self, transport: SessionTransport, tmpdir: str = "/tmp") -> None:
        self.transport = transport
        self.tmpdir = tmpdir
        self.directory: str | None = None
        self.path: str | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> bool:
        """Listen for the user's programs; False if it cannot (or did already)."""
        with self._lock:
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
        threading.Thread(target=self._accept_loop, args=(sock,), daemon=True,
                         name="agent-listen").start()
        return True

    def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True, name="agent-open").start()

    def _one(self, conn: socket.socket) -> None:
        try:
            chan = self.transport.open_channel_to_client("auth-agent@openssh.com", b"")
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("agent forwarding: client refused the channel: %s", exc)
            conn.close()
            return
        splice(chan, conn)

    def stop(self) -> None:
        """Remove the socket and its directory (logout)."""
        with self._lock:
            sock, path, directory = self._sock, self.path, self.directory
            self._sock = None
        if sock is None:
            return
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
