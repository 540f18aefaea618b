"""X11 forwarding (``ssh -X``/``-Y``), in the session process, as the user.

On a session's ``x11-req`` the session process listens on the first free
display from X11DisplayOffset (TCP port 6000+N, on the loopback addresses
with X11UseLocalhost, else on every address), as sshd's
x11_create_display_inet does.  The session's programs get
DISPLAY=localhost:N.S (or hostname:N.S), and before the program runs the
cookie the client sent goes to ~/.ssh/rc or /etc/ssh/sshrc on its stdin,
or else to ``xauth add`` (privsep/shell/spawn.py, sshd's do_rc_files).
Each connection to the display becomes an ``x11`` channel to the client,
naming the connection's address and port; the client checks the cookie
and puts its real one in its place.  A single-connection request stops
listening after the first.  The listeners go with their session.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

import paramiko
from paramiko.message import Message

from privsep.config.servconf import ServerOptions
from privsep.session import connopts
from privsep.session.loop import EventLoop
from privsep.session.splice import Splice
from privsep.session.transport import SessionTransport
from privsep.shell.spawn import X11Auth

log = logging.getLogger("privsep.session")

#: display N listens on TCP port X11_BASE_PORT + N
X11_BASE_PORT = 6000
#: sshd's MAX_DISPLAYS: the last display number tried, plus one
MAX_DISPLAYS = 1000
#: sshd's NUM_SOCKS: at most this many addresses per display
MAX_SOCKETS = 10
_FAMILIES = {"any": socket.AF_UNSPEC, "inet": socket.AF_INET, "inet6": socket.AF_INET6}


def valid_auth_text(text: str) -> bool:
    """sshd's xauth_valid_string: what goes to xauth's and the rc file's
    stdin has no blank, newline or shell character."""
    return all(c.isascii() and (c.isalnum() or c in ".:/-_") for c in text)


@dataclass
class X11Display:
    """One session's forwarded display."""

    number: int
    screen: int
    #: DISPLAY for the session's programs
    display: str
    auth: X11Auth
    single: bool
    socks: list[socket.socket] = field(default_factory=list)
    closed: bool = False

    def close(self, loop: EventLoop) -> None:
        """Stop listening (the session ended, or a single connection came)."""
        if self.closed:
            return
        self.closed = True
        for sock in self.socks:
            loop.forget(sock.fileno())
            sock.close()
        self.socks = []


def bind_display(offset: int, use_localhost: bool,
                 family: int = socket.AF_UNSPEC) -> tuple[int, list[socket.socket]] | None:
    """The first display number from ``offset`` whose port every address
    takes (loopback, or the wildcard without X11UseLocalhost), and its
    listening sockets; None when no display is free."""
    flags = 0 if use_localhost else socket.AI_PASSIVE
    for number in range(offset, MAX_DISPLAYS):
        port = X11_BASE_PORT + number
        try:
            infos = socket.getaddrinfo(None, port, family, socket.SOCK_STREAM, 0, flags)
        except socket.gaierror as exc:
            log.error("getaddrinfo: %.100s", exc.strerror)
            return None
        socks: list[socket.socket] = []
        for af, kind, proto, _, address in infos:
            if af not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                sock = socket.socket(af, kind, proto)
            except OSError:
                log.debug("x11_create_display_inet: Socket family %d not supported", af)
                continue
            if af == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if use_localhost:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                log.debug("x11_create_display_inet: bind port %d: %.100s", port, exc.strerror)
                sock.close()
                for other in socks:
                    other.close()
                socks = []
                break
            socks.append(sock)
            if len(socks) == MAX_SOCKETS:
                break
        if socks:
            for sock in socks:
                sock.listen(128)
                sock.setblocking(False)
            return number, socks
    log.error("Failed to allocate internet-domain X11 display socket.")
    return None


class X11Forwarding:
    """The X11 displays of one connection's sessions."""

    def __init__(self, loop: EventLoop, transport: SessionTransport,
                 options: ServerOptions) -> None:
        self.loop, self.transport, self.options = loop, transport, options

    def request(self, key_permitted: bool, current: X11Display | None, single: bool,
                proto: str, cookie: str, screen: int) -> X11Display | None:
        """An x11-req on a session (sshd's session_x11_req and
        session_setup_x11fwd, their checks and words in their order): the
        display now listened on, or None (refused)."""
        if current is not None:
            log.error("session_x11_req: x11 forwarding already active")
            return None
        if not (valid_auth_text(proto) and valid_auth_text(cookie)):
            log.error("Invalid X11 forwarding data")
            return None
        if not key_permitted:
            connopts.send_debug(self.transport, "X11 forwarding disabled by key options.")
            return None
        if not self.options.x11_forwarding:
            log.debug("X11 forwarding disabled in server configuration file.")
            return None
        xauth = self.options.xauth_location
        if xauth.lower() == "none" or not os.path.exists(xauth):
            connopts.send_debug(self.transport, "No xauth program; cannot forward X11.")
            return None
        bound = bind_display(self.options.x11_display_offset, self.options.x11_use_localhost,
                             _FAMILIES.get(self.options.address_family, socket.AF_UNSPEC))
        if bound is None:
            log.debug("x11_create_display_inet failed.")
            return None
        number, socks = bound
        if self.options.x11_use_localhost:
            # xauth files a localhost display under unix:N, as the X libraries look it up
            display, auth_display = f"localhost:{number}.{screen}", f"unix:{number}.{screen}"
        else:
            display = auth_display = f"{socket.gethostname()}:{number}.{screen}"
        x11 = X11Display(number, screen, display, X11Auth(proto, cookie, auth_display, xauth),
                         single, socks)
        for sock in socks:
            self.loop.add_reader(sock.fileno(), lambda sock=sock: self._accept(x11, sock),
                                 when=lambda: not x11.closed)
        return x11

    def _accept(self, x11: X11Display, sock: socket.socket) -> None:
        """A program connected to the display: an ``x11`` channel to the client."""
        log.debug("X11 connection requested.")
        try:
            conn, origin = sock.accept()
        except (BlockingIOError, InterruptedError):
            conn = None
        except OSError as exc:
            log.error("accept: %.100s", exc.strerror)
            conn = None
        if x11.single:
            log.debug("single_connection: closing X11 listener.")
            x11.close(self.loop)
        if conn is None:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fields = Message()
        fields.add_string(origin[0])
        fields.add_int(origin[1])

        def opened(chan) -> None:
            if chan is None:
                log.debug("X11 connection from %s port %d: refused by the client",
                          origin[0], origin[1])
                conn.close()
                return
            Splice(self.loop, chan, conn)
        try:
            self.transport.open_channel_to_client("x11", fields.asbytes(), opened)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.debug("x11 channel open: %s", exc)
            conn.close()
