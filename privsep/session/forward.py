"""Port and Unix-socket forwarding, in the session process, as the user.

``ssh -L``/``-D`` open ``direct-tcpip`` channels: the session process connects
(without waiting: the loop goes on serving while the connect is under way)
and only then confirms or refuses the channel, as sshd does.
``ssh -R`` asks for ``tcpip-forward``: the session process listens (with the
user's rights, so ports below 1024 are refused by the kernel) and opens a
``forwarded-tcpip`` channel to the client for each connection.  The Unix-socket
twins are ``direct-streamlocal@openssh.com`` and
``streamlocal-forward@openssh.com``.  What is allowed comes from
AllowTcpForwarding, AllowStreamLocalForwarding, DisableForwarding, PermitOpen,
PermitListen and GatewayPorts (``ForwardRules``), with a hook for the
authorized_keys options of the key that logged in.

All of it runs in the session process's event loop: a connect is
non-blocking (only the name lookup waits, as in sshd's connect_to), a
listening socket is read when a connection comes, and the data moves
between a channel and a socket through splice.Splice.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Callable

import paramiko
from paramiko.message import Message

from privsep.common.log import verbose
from privsep.config.match import match_pattern
from privsep.config.servconf import ServerOptions
from privsep.session.loop import EventLoop
from privsep.session.splice import Splice
from privsep.session.transport import (
    OPEN_ADMINISTRATIVELY_PROHIBITED, OPEN_CONNECT_FAILED, SessionTransport,
)

log = logging.getLogger("privsep.session")


# --- who may forward what ------------------------------------------------------


def _split_host_port(spec: str) -> tuple[str, str]:
    """'host:port', '[v6]:port' or a bare 'port' (host '')."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, rest.lstrip(":")
    if ":" not in spec:
        return "", spec
    host, _, port = spec.rpartition(":")
    return host, port


def _port_matches(want: str, port: int) -> bool:
    """A permission's port: '*' for any, else the number (as a2port reads it)."""
    return want == "*" or (want.isdigit() and int(want) == port)


def _open_entry_matches(entry: str, host: str, port: int) -> bool:
    """channels.c open_match(): the host exactly (case and all) or '*'."""
    want_host, want_port = _split_host_port(entry)
    return bool(want_host) and _port_matches(want_port, port) and want_host in ("*", host)


def _listen_entry_matches(entry: str, host: str, port: int) -> bool:
    """channels.c remote_open_match(): a bare port stands for '*:port'; the
    host is an OpenSSH pattern against the lower-cased listen address."""
    want_host, want_port = _split_host_port(entry)
    return _port_matches(want_port, port) and match_pattern(host.lower(), want_host or "*")


def _permitted(entries: list[str], matches: Callable[[str, str, int], bool], host: str,
               port: int) -> bool:
    """PermitOpen/PermitListen: empty or 'any' permits all, 'none' nothing."""
    if not entries or "any" in (e.lower() for e in entries):
        return True
    return any(e.lower() != "none" and matches(e, host, port) for e in entries)


@dataclass
class ForwardRules:
    """sshd_config's forwarding settings, narrowed by the login's key options."""

    tcp: str = "yes"  # yes, no, local, remote
    streamlocal: str = "yes"
    disabled: bool = False
    permit_open: list[str] = field(default_factory=list)
    permit_listen: list[str] = field(default_factory=list)
    gateway_ports: str = "no"
    bind_mask: int = 0o177
    bind_unlink: bool = False
    #: Hook for authorized_keys options: no-port-forwarding clears it.
    key_permits_forwarding: bool = True
    #: Hook for authorized_keys permitopen="..." / permitlisten="..." lists.
    key_permit_open: list[str] | None = None
    key_permit_listen: list[str] | None = None

    @classmethod
    def from_options(cls, options: ServerOptions) -> "ForwardRules":
        return cls(tcp=options.allow_tcp_forwarding,
                   streamlocal=options.allow_stream_local_forwarding,
                   disabled=options.disable_forwarding,
                   permit_open=list(options.permit_open),
                   permit_listen=list(options.permit_listen),
                   gateway_ports=options.gateway_ports,
                   bind_mask=options.stream_local_bind_mask,
                   bind_unlink=options.stream_local_bind_unlink)

    def _allowed(self, setting: str, direction: str) -> bool:
        return (not self.disabled and self.key_permits_forwarding
                and setting in ("yes", direction))

    def local_tcp(self) -> bool:
        return self._allowed(self.tcp, "local")

    def remote_tcp(self) -> bool:
        return self._allowed(self.tcp, "remote")

    def local_streamlocal(self) -> bool:
        return self._allowed(self.streamlocal, "local")

    def remote_streamlocal(self) -> bool:
        return self._allowed(self.streamlocal, "remote")

    def path_permitted(self) -> bool:
        """A Unix-socket forward (direct-streamlocal): refused whenever a
        PermitOpen list or a key's permitopen= narrows where forwards may go,
        as sshd's channel_connect_to_path() refuses it (a path matches no
        host:port entry, and must not slip past them)."""
        narrowed = bool(self.permit_open) and "any" not in (e.lower() for e in self.permit_open)
        return not narrowed and self.key_permit_open is None

    def open_permitted(self, host: str, port: int) -> bool:
        if not _permitted(self.permit_open, _open_entry_matches, host, port):
            return False
        return self.key_permit_open is None or bool(self.key_permit_open) and \
            _permitted(self.key_permit_open, _open_entry_matches, host, port)

    def listen_permitted(self, host: str, port: int) -> bool:
        if not _permitted(self.permit_listen, _listen_entry_matches, host, port):
            return False
        return self.key_permit_listen is None or bool(self.key_permit_listen) and \
            _permitted(self.key_permit_listen, _listen_entry_matches, host, port)

    def bind_addresses(self, requested: str) -> list[str]:
        """Where a remote forward listens, by GatewayPorts, as sshd's
        channel_fwd_bind_addr() decides it."""
        loopback = ["127.0.0.1", "::1"]
        if self.gateway_ports == "yes":
            return ["0.0.0.0", "::"]
        if self.gateway_ports == "clientspecified":
            if requested in ("", "*"):
                return ["0.0.0.0", "::"]
            if requested == "localhost":
                return loopback
            return [requested]
        # Even with GatewayPorts no, an explicit loopback address is kept so
        # that the client can choose IPv4 or IPv6.
        return [requested] if requested in loopback else loopback


def bind_addresses_for(gateway_ports: str, requested: str) -> list[str]:
    return ForwardRules(gateway_ports=gateway_ports).bind_addresses(requested)


# --- the forwards of one connection -------------------------------------------------


@dataclass
class _Listener:
    key: tuple
    socks: list[socket.socket]
    path: str | None = None
    closed: bool = False

    def close(self, loop: EventLoop) -> None:
        self.closed = True
        for sock in self.socks:
            loop.forget(sock.fileno())
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        # Like sshd, a Unix socket's file stays behind (StreamLocalBindUnlink).


class Forwarding:
    def __init__(self, loop: EventLoop, transport: SessionTransport, rules: ForwardRules,
                 user: str) -> None:
        self.loop = loop
        self.transport = transport
        self.rules = rules
        self.user = user
        self.listeners: dict[tuple, _Listener] = {}

    # -- direct-tcpip / direct-streamlocal: the client asks us to connect ----------

    def direct_tcpip(self, peer, m: Message) -> None:
        host, port = m.get_text(), m.get_int()
        origin, origin_port = m.get_text(), m.get_int()
        if not self.rules.local_tcp():
            log.info("refused local port forward: originator %s port %d, target %s port %d",
                     origin, origin_port, host, port)
            self.transport.refuse_channel(peer, OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed")
            return
        if not self.rules.open_permitted(host, port):
            log.info("Received request from %s port %d to connect to host %s port %d, "
                     "but the request was denied.", origin, origin_port, host, port)
            self.transport.refuse_channel(peer, OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed")
            return
        self._connect_tcp(peer, host, port)

    def _connect_tcp(self, peer, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            log.error("connect_to %s: unknown host (%s)", host, exc.strerror)
            self._refuse_quietly(peer, OPEN_CONNECT_FAILED, exc.strerror or "unknown host")
            return
        except (UnicodeError, ValueError, OverflowError) as exc:
            # a name IDNA cannot encode (a label over 63 characters), a NUL,
            # a port over 65535: this thread died with a traceback on the
            # log's stderr and the open was never answered.  Found by tests/fuzz.py.
            log.error("connect_to %s: unknown host (%s)", host, exc)
            self._refuse_quietly(peer, OPEN_CONNECT_FAILED, "unknown host")
            return
        self._try_addresses(peer, host, port, list(infos), "Connection refused")

    def _try_addresses(self, peer, host: str, port: int, infos: list, error: str) -> None:
        """Connect to the first address that answers, without waiting for any."""
        while infos:
            family, kind, proto, _, address = infos.pop(0)
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                error = os.strerror(exc.errno) if exc.errno else str(exc)
                continue
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code == 0:
                self._confirm(peer, sock, "direct-tcpip")
                return
            if code == errno.EINPROGRESS:
                def connected(sock=sock) -> None:
                    self.loop.forget(sock.fileno())
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code == 0:
                        self._confirm(peer, sock, "direct-tcpip")
                        return
                    sock.close()
                    self._try_addresses(peer, host, port, infos, os.strerror(code))
                self.loop.add_writer(sock.fileno(), connected)
                return
            error = os.strerror(code)
            sock.close()
        log.error("connect_to %s port %d: failed.", host, port)
        self._refuse_quietly(peer, OPEN_CONNECT_FAILED, error)

    def direct_streamlocal(self, peer, m: Message) -> None:
        path = m.get_text()
        if not self.rules.local_streamlocal():
            log.info("refused streamlocal port forward: originator %s port %d, target %s",
                     "", 0, path)
            self.transport.refuse_channel(peer, OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed")
            return
        if not self.rules.path_permitted():
            log.info("Received request to connect to path %s, but the request was denied.",
                     path[:100])
            self.transport.refuse_channel(peer, OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed")
            return
        self._connect_unix(peer, path)

    def _connect_unix(self, peer, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            log.error("connect_to path %s: failed.", path)
            self._refuse_quietly(peer, OPEN_CONNECT_FAILED, os.strerror(exc.errno or errno.EIO))
            return
        self._confirm(peer, sock, "direct-streamlocal@openssh.com")

    def _confirm(self, peer, sock: socket.socket, ctype: str) -> None:
        try:
            chan = self.transport.new_channel(peer, ctype)
        except Exception:
            sock.close()
            return
        Splice(self.loop, chan, sock)

    def _refuse_quietly(self, peer, reason: int, text: str) -> None:
        try:
            self.transport.refuse_channel(peer, reason, text)
        except Exception:
            pass

    # -- tcpip-forward: the client asks us to listen ------------------------------------

    def tcpip_forward(self, address: str, port: int, want_reply: bool) -> int | None:
        """The port now listened on, or None (refused or failed)."""
        verbose(log, "tcpip-forward listen %s port %d", address, port)
        if not self.rules.remote_tcp() or (port == 0 and not want_reply):
            log.info("refused remote port forward: listen %s port %d", address or "*", port)
            return None
        if not self.rules.listen_permitted(address, port):
            # sshd's line for a forward that PermitListen/permitlisten= refuse
            client, client_port = self._client()
            log.info("Received request from %s port %d to remote forward to host %s port %d, "
                     "but the request was denied.", client, client_port, address, port)
            return None
        socks: list[socket.socket] = []
        bound = port
        for host in self.rules.bind_addresses(address):
            try:
                infos = socket.getaddrinfo(host, bound, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
            except socket.gaierror as exc:
                log.error("channel_setup_fwd_listener_tcpip: getaddrinfo(%s): %s", host, exc.strerror)
                continue
            except (UnicodeError, ValueError, OverflowError) as exc:  # as in _connect_tcp
                log.error("channel_setup_fwd_listener_tcpip: getaddrinfo(%s): %s", host, exc)
                continue
            for family, kind, proto, _, addr in infos[:1]:
                sock = socket.socket(family, kind, proto)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(addr)
                    sock.listen(128)
                except OSError as exc:
                    verbose(log, "bind [%s]:%d: %s", host, bound, exc.strerror)
                    sock.close()
                    continue
                bound = sock.getsockname()[1]
                socks.append(sock)
        if not socks:
            log.error("cannot listen to port: %d", port)
            return None
        listener = _Listener(("tcp", address, port), socks)
        old = self.listeners.pop(listener.key, None)
        if port == 0:
            listener.key = ("tcp", address, bound)
        self.listeners[listener.key] = listener
        if old is not None:
            old.close(self.loop)
        for sock in socks:
            self._listen(listener, sock, "forwarded-tcpip", address, bound)
        return bound

    def _client(self) -> tuple[str, int]:
        """The client's address and port, for log lines."""
        try:
            peer = self.transport.getpeername()
            return str(peer[0]), int(peer[1])
        except (OSError, AttributeError, TypeError, IndexError):
            return "UNKNOWN", 0

    def cancel_tcpip_forward(self, address: str, port: int) -> bool:
        listener = self.listeners.pop(("tcp", address, port), None)
        if listener is None:
            verbose(log, "cancel-tcpip-forward: no forward for %s port %d", address, port)
            return False
        listener.close(self.loop)
        return True

    def streamlocal_forward(self, path: str) -> bool:
        verbose(log, "streamlocal-forward listen path %s", path)
        if not self.rules.remote_streamlocal():
            log.info("refused streamlocal remote forward: listen path %s", path)
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if self.rules.bind_unlink:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            sock.bind(path)
            os.chmod(path, 0o666 & ~self.rules.bind_mask)
            sock.listen(128)
        except OSError as exc:
            log.error("bind(%s): %s", path, exc.strerror)
            sock.close()
            return False
        listener = _Listener(("unix", path), [sock], path=path)
        old = self.listeners.pop(listener.key, None)
        if old is not None:
            old.close(self.loop)
        self.listeners[listener.key] = listener
        self._listen(listener, sock, "forwarded-streamlocal@openssh.com", path, 0)
        return True

    def cancel_streamlocal_forward(self, path: str) -> bool:
        listener = self.listeners.pop(("unix", path), None)
        if listener is None:
            return False
        listener.close(self.loop)
        return True

    def _listen(self, listener: _Listener, sock: socket.socket, kind: str, address: str,
                port: int) -> None:
        """Each connection to ``sock`` becomes a ``kind`` channel to the client."""
        sock.setblocking(False)

        def accept() -> None:
            try:
                conn, origin = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                verbose(log, "accept on forward %s port %d: %s", address, port, exc.strerror)
                return
            self._forward_one(conn, origin, kind, address, port)
        self.loop.add_reader(sock.fileno(), accept, when=lambda: not listener.closed)

    def _forward_one(self, conn: socket.socket, origin, kind: str, address: str, port: int) -> None:
        fields = Message()
        if kind == "forwarded-tcpip":
            fields.add_string(address)
            fields.add_int(port)
            fields.add_string(origin[0])
            fields.add_int(origin[1])
        else:
            fields.add_string(address)
            fields.add_string("")

        def opened(chan) -> None:
            if chan is None:
                verbose(log, "%s to %s port %d: refused by the client", kind, address, port)
                conn.close()
                return
            Splice(self.loop, chan, conn)
        try:
            self.transport.open_channel_to_client(kind, fields.asbytes(), opened)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            verbose(log, "%s to %s port %d: %s", kind, address, port, exc)
            conn.close()

    def close_all(self) -> None:
        listeners = list(self.listeners.values())
        self.listeners.clear()
        for listener in listeners:
            listener.close(self.loop)
