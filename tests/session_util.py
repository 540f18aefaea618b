"""Helpers for the session tests (issue 4): servers with a session-friendly
config on both daemons, a paramiko client for the requests the OpenSSH client
cannot send (signal, break, raw channel tricks), and a tiny SOCKS5 client."""

from __future__ import annotations

import socket
import struct
import subprocess
import time

import paramiko

from privsep.child.ciphers import CipherTransportMixin
from privsep.child.packetizer import CipherPacketizer
from tests.daemon import Server, ssh_argv

#: Both daemons get the same session settings, OpenSSH's spelling.
SESSION_CONFIG = [
    "Subsystem sftp /usr/lib/openssh/sftp-server",
    "AcceptEnv LANG LC_* PSX_*",
]


class CipherClientTransport(CipherTransportMixin, paramiko.Transport):
    """paramiko's client transport with the daemon's ciphers and packet
    layer (chacha20-poly1305@openssh.com, which paramiko lacks), offering
    only ``cipher`` and, if given, ``mac``.  Its packetizer counts every
    byte it sends as sshd's "Transferred:" does (``total_sent``)."""

    def __init__(self, sock, cipher: str, mac: str | None = None, **kwargs) -> None:
        super().__init__(sock, packetizer_class=CipherPacketizer, **kwargs)
        self._preferred_ciphers = (cipher,)
        if mac is not None:
            self._preferred_macs = (mac,)


def forcing(cipher: str, mac: str | None = None) -> dict:
    """paramiko_client's keyword for a client that offers only ``cipher``
    (and ``mac``)."""
    return {"transport_factory": lambda sock, **kwargs: CipherClientTransport(
        sock, cipher, mac, **kwargs)}


#: id -> (cipher, MAC) for ``forcing``: the three the session process reads
#: on its direct path (privsep/session/inbound.py), then one that goes
#: through paramiko's read_message (MAC-then-encrypt)
CLIENT_CIPHERS = {
    "chacha20-poly1305": ("chacha20-poly1305@openssh.com", None),
    "aes128-gcm": ("aes128-gcm@openssh.com", None),
    "aes128-ctr-etm": ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
    "aes128-ctr-hmac": ("aes128-ctr", "hmac-sha2-256"),
}


def paramiko_client(server: Server, user, **kwargs) -> paramiko.SSHClient:
    """A paramiko client logged in with the user's key; ``forcing(...)``
    among ``kwargs`` picks its cipher."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=server.port, username=user.name,
                   key_filename=str(user.key_path), look_for_keys=False, allow_agent=False,
                   timeout=20, **kwargs)
    return client


def channel_request(chan: paramiko.Channel, kind: str, *fields, want_reply: bool = True,
                    timeout: float = 10, tail: bytes = b"") -> bool | None:
    """Send a channel request paramiko has no method for; its answer if
    wanted.  ``tail``: raw bytes after the fields (a string whose length
    runs past the end, trailing bytes)."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    install_reply_recorder(chan.transport)
    chan.event.clear()
    m = paramiko.Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string(kind)
    m.add_boolean(want_reply)
    for value in fields:
        if isinstance(value, bool):
            m.add_boolean(value)
        elif isinstance(value, int):
            m.add_int(value)
        else:
            m.add_string(value)
    m.add_bytes(tail)
    chan.transport._send_user_message(m)
    if not want_reply:
        return None
    chan.event.wait(timeout)
    if not chan.event.is_set():
        raise TimeoutError(f"no answer to {kind}")
    return chan.last_reply


def install_reply_recorder(transport: paramiko.Transport) -> None:
    """Record CHANNEL_SUCCESS/FAILURE in chan.last_reply without closing the
    channel (paramiko's client closes a channel on any FAILURE)."""
    from paramiko.common import MSG_CHANNEL_FAILURE, MSG_CHANNEL_SUCCESS

    def success(chan, m):
        chan.last_reply = True
        chan.event_ready = True
        chan.event.set()

    def failure(chan, m):
        chan.last_reply = False
        chan.event_ready = True
        chan.event.set()

    table = dict(transport._channel_handler_table)
    table[MSG_CHANNEL_SUCCESS] = success
    table[MSG_CHANNEL_FAILURE] = failure
    transport._channel_handler_table = table


def closed_channel(transport: paramiko.Transport) -> int:
    """The server's id of a session channel that ran ``true`` and is now
    closed on both sides, the server having read our CLOSE: that CLOSE went
    out from this thread, or from paramiko's reader answering the server's,
    maybe after a request sent now; so after one global request's reply it
    is on the wire, and after a second's the server has read it."""
    chan = transport.open_session()
    chan.exec_command("true")
    assert chan.recv_exit_status() == 0
    remote = chan.remote_chanid
    chan.close()
    for _ in range(2):
        transport.global_request("keepalive@openssh.com", wait=True)
    return remote


def record_disconnect(transport: paramiko.Transport) -> list[tuple[int, str, str]]:
    """Every SSH_MSG_DISCONNECT the client's transport reads from now on,
    as (reason code, description, language tag): the list returned."""
    received: list[tuple[int, str, str]] = []

    def parse(m: paramiko.Message) -> None:
        received.append((m.get_int(), m.get_text(), m.get_text()))

    transport._parse_disconnect = parse
    return received


def socks5_connect(proxy_port: int, host: str, port: int, timeout: float = 20) -> socket.socket:
    """A SOCKS5 CONNECT through ``ssh -D``: no auth, domain-name address."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.sendall(b"\x05\x01\x00")
    assert recv_exact(sock, 2) == b"\x05\x00"
    name = host.encode()
    sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
    reply = recv_exact(sock, 4)
    if reply[1] != 0:
        sock.close()
        raise ConnectionRefusedError(f"SOCKS5 reply {reply[1]}")
    kind = reply[3]
    recv_exact(sock, {1: 4, 4: 16}.get(kind, 0) or recv_exact(sock, 1)[0])
    recv_exact(sock, 2)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"got {len(data)} of {n} bytes")
        data += chunk
    return data


def recv_all(sock: socket.socket) -> bytes:
    parts = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def wait_port(port: int, timeout: float = 15, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class EchoServer:
    """A loopback TCP (or Unix) server that echoes, reversed-free, in a thread."""

    def __init__(self, path: str | None = None) -> None:
        import threading
        if path is None:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(path)
            import os
            os.chmod(path, 0o777)
            self.port = 0
        self.path = path
        self.sock.listen(16)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def forwarder(server: Server, user, flags: list[str]) -> subprocess.Popen:
    """``ssh -N`` with forwards, left running; ExitOnForwardFailure, so that
    a refused -R ends it."""
    argv, env = ssh_argv(server, user, flags=["-N", "-o", "ExitOnForwardFailure=yes", *flags])
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def stop_forwarder(proc: subprocess.Popen) -> bytes:
    """End a forwarder; its stderr."""
    proc.terminate()
    try:
        return proc.communicate(timeout=10)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]
