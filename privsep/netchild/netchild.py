"""The pre-authentication net-child: paramiko's transport, no privileges at all.

It runs in the sandbox (netchild/sandbox.py), speaks SSH to the client, and turns every
credential into a question for the monitor.  It never decides anything: a
"yes" from paramiko here is only the monitor's answer passed through.  After
USERAUTH_SUCCESS it stops reading, sends the transport state to the monitor
and exits, leaving the rest of the connection to the session process.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import NoReturn

import paramiko
from paramiko.auth_handler import AuthHandler
from paramiko.common import AUTH_FAILED, AUTH_PARTIALLY_SUCCESSFUL, AUTH_SUCCESSFUL
from paramiko.server import InteractiveQuery

from privsep.common import proctitle, roles
from privsep.common.log import verbose
from privsep.common.peer import Peer
from privsep.netchild import hostbound, negotiation, sandbox
from privsep.child.packetizer import CipherPacketizer, pkt_get
from privsep.netchild.capture import CapturingTransport
from privsep.common.channel import MonitorChannel
from privsep.child.monitor_client import MonitorClient, MonitorLogHandler
from privsep.config import algorithms
from privsep.config.servconf import ServerOptions
from privsep.child import hostkey_proxy, transport_setup
from privsep.common.trace import trace
from privsep.wire import banner as identification
from privsep.wire import keyblob as keyblob_check
from privsep.wire import messages as wire
from privsep.wire.facts import MAX_USER_LEN
from privsep.wire.userauth import hostbased_signed_data

log = logging.getLogger("privsep.net")

#: sshd's limit on keyboard-interactive answers in one INFO_RESPONSE
MAX_KBDINT_ANSWERS = 100

#: The net-child's exit status before authentication tells the monitor which
#: last line is still to be written (monitor/main._log_preauth_end): 1, the
#: client hung up ("Connection closed by"); EXIT_LOGGED, the net-child wrote
#: its own fatal line; EXIT_NO_BANNER, the client left before sending its
#: identification string, which sshd's [priv] reads and logs unmarked.
EXIT_CLOSED = 1
EXIT_LOGGED = 2
EXIT_NO_BANNER = 3

#: reads of up to 64 KiB the net-child makes of what is left in the socket
#: as it closes (ThreadlessPacketizer.close): one packet's bound, at most
DRAIN_READS = 4


class MonitorVerifiedKey:
    """A client public key whose signature check is the monitor's to make."""

    #: paramiko signs the blob itself when this is None (_get_key_type_and_bits)
    public_blob = None

    def __init__(self, algorithm: str, keyblob: bytes, monitor: MonitorClient,
                 server: "NetServer") -> None:
        self.algorithm = algorithm
        self.keyblob = keyblob
        self._monitor = monitor
        self._server = server

    def asbytes(self) -> bytes:
        """The blob exactly as the client sent it: the monitor parses it."""
        return self.keyblob

    def get_name(self) -> str:
        return self.algorithm

    def verify_ssh_sig(self, data: bytes, msg: paramiko.Message) -> bool:
        trace(log, "net-child", "asks the monitor to verify a %s signature", self.algorithm)
        self._server.take_key_query()  # a signed request: no PK_OK follows
        answer = self._monitor.key_verify(self.algorithm, self.keyblob, data, msg.asbytes())
        return self._server.monitor_said(answer.verified, answer.partial, answer.methods)


class NetFatal(paramiko.SSHException):
    """A fatal() of sshd's net-child: the connection ends with its text
    as the whole line (describe_failure), not the dispatch's."""


class NetAuthHandler(AuthHandler):
    """Routes publickey checks to the monitor and hands off on success."""

    #: The host key a host-bound request in progress names (hostbound.py).
    _hostbound_key: bytes | None = None

    def _parse_userauth_request(self, m):
        """A publickey request for an algorithm PubkeyAcceptedAlgorithms does
        not name fails as with sshd (paramiko would end the connection); a
        publickey-hostbound-v00@openssh.com request goes through paramiko's
        publickey code as a plain one, naming our host key; hostbased is
        ours to read (_hostbased)."""
        if self._hostbased(m):
            return
        self._hostbound_key = None
        asked = hostbound.publickey_algorithm(m) if self.transport.server_mode else None
        if asked and asked[1] not in self.transport.preferred_pubkeys and not self.authenticated:
            # sshd fails this attempt; paramiko would end the connection
            log.info("userauth_pubkey: signature algorithm %s not in PubkeyAcceptedAlgorithms",
                     asked[1])
            self._send_auth_result(asked[0], "publickey", AUTH_FAILED)
            return
        if self.transport.server_mode and not self.authenticated and hostbound.is_hostbound(m):
            request = hostbound.HostboundRequest(m)
            # sshd parses the host key blob (sshkey_fromb), then compares it
            # with its own; either failure is a fatal() of its net-child
            error = keyblob_check.sshkey_error(request.hostkey)
            if error is not None:
                raise NetFatal(f"userauth_pubkey: parse {request.method} hostkey: {error}")
            if request.hostkey != self.transport.get_server_key().asbytes():
                raise NetFatal(f"userauth_pubkey: {request.method} packet "
                               "contained wrong host key")
            self._hostbound_key = request.hostkey
            m = request.as_publickey
        super()._parse_userauth_request(m)

    def _get_session_blob(self, key, service, username, algorithm):
        if self._hostbound_key is None:
            return super()._get_session_blob(key, service, username, algorithm)
        return hostbound.signed_data(self.transport.session_id, username, service, algorithm,
                                     key.asbytes(), self._hostbound_key)

    def _generate_key_from_request(self, algorithm, keyblob):
        """No key parsing here: the blob goes to the monitor as it came
        (certificates and security keys included), for an algorithm that
        PubkeyAcceptedAlgorithms lists; paramiko refuses the others.  The
        monitor reads it strictly (wire/keyblob.py) and refuses one that
        does not read as a key as sshd's net-child does."""
        if algorithm not in self.transport.preferred_pubkeys:
            return super()._generate_key_from_request(algorithm, keyblob)
        return MonitorVerifiedKey(algorithm, keyblob, self.transport.monitor,
                                  self.transport.server_object)

    def _hostbased(self, m) -> bool:
        """paramiko's server knows no "hostbased": read that method's
        fields here (RFC 4252 section 9) and let the monitor decide.  False,
        with ``m`` rewound, for every other request."""
        if not self.transport.server_mode or self.authenticated:
            return False
        username, service, method = m.get_text(), m.get_text(), m.get_text()
        if method != "hostbased" or service != "ssh-connection" or (
                self.auth_username not in (None, username)):
            m.rewind()  # paramiko's own refusals for the service and the user
            return False
        self.auth_username = username
        request = hostbased_request(m, self.transport.session_id, username)
        result = self.transport.server_object.check_auth_hostbased(username, request)
        self._send_auth_result(username, method, result)
        return True

    def _parse_userauth_info_response(self, m):
        """Only an answer to the questions asked, as sshd's
        input_userauth_info_response: paramiko would read as many answers as
        the count says (up to 2^32 empty strings, a core and all memory)."""
        count = m.get_int()
        m.rewind()
        expected = self.transport.server_object.pending_prompts
        if expected is None:
            raise paramiko.SSHException("input_userauth_info_response: no keyboard-interactive "
                                        "conversation")
        if count > MAX_KBDINT_ANSWERS:
            raise paramiko.SSHException("input_userauth_info_response: too many replies")
        if count != expected:
            raise paramiko.SSHException("input_userauth_info_response: wrong number of replies")
        super()._parse_userauth_info_response(m)

    def _send_auth_result(self, username, method, result):
        # A method the monitor called a partial success (AuthenticationMethods):
        # USERAUTH_FAILURE with partial success true and the monitor's method
        # list (get_allowed_auths), never USERAUTH_SUCCESS.
        if self.transport.server_object.take_partial() and result == AUTH_SUCCESSFUL:
            result = AUTH_PARTIALLY_SUCCESSFUL
        super()._send_auth_result(username, method, result)
        if result == AUTH_SUCCESSFUL:
            self.transport.hand_off()


def _cstring(m: paramiko.Message, what: str) -> str:
    """A UTF-8 string without NUL, as sshd's sshpkt_get_cstring wants it;
    anything else ends the connection, as it does sshd's."""
    raw = m.get_string()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise paramiko.SSHException(f"userauth_hostbased: parse packet: invalid format ({what})")
    return text


def hostbased_request(m: paramiko.Message, session_id: bytes,
                      username: str) -> wire.HostbasedRequest:
    """The rest of a hostbased USERAUTH_REQUEST, and the data its signature
    covers, built from the packet as the client built it."""
    algorithm = _cstring(m, "algorithm")
    keyblob = m.get_binary()
    client_host, client_user = _cstring(m, "client host"), _cstring(m, "client user")
    signature = m.get_binary()
    signed = hostbased_signed_data(session_id, username, algorithm, keyblob, client_host,
                                   client_user)
    return wire.HostbasedRequest(algorithm, keyblob, client_host, client_user, signature, signed)


class ThreadlessPacketizer(CipherPacketizer):
    """No handshake timer: the net-child may not start a thread (RLIMIT_NPROC
    is 0), and the monitor enforces LoginGraceTime anyway.

    And an immediate ACK for what it reads.  The OpenSSH client writes its
    NEWKEYS and then its SERVICE_REQUEST; with Nagle on its side, the second
    waits until the first is acknowledged, and a delayed ACK costs 40 ms, a
    third of a whole login.  sshd's kex reply and NEWKEYS leave in one write,
    which makes the client answer in one too; paramiko's leave in two."""

    #: Our identification line, which the monitor already sent (as sshd's
    #: [priv] does, before it forks the pre-auth child): paramiko's run()
    #: writes it again as its first write, which is dropped.
    already_sent: bytes | None = None

    def start_handshake(self, timeout) -> None:
        pass

    def write_all(self, out) -> None:
        if self.already_sent is not None:
            sent, self.already_sent = self.already_sent, None
            if bytes(out) == sent:
                return
        super().write_all(out)

    def read_message(self):
        """paramiko's, after sshd's checks of the packet's framing (the
        chacha20-poly1305 path makes its own)."""
        if self._chacha_in is None:
            self.check_ahead()
        return super().read_message()

    def close(self) -> None:
        """Read what the client sent and we did not (up to a bound) before
        closing: sshd's reads take all the socket holds, so by its end
        nothing is left unread and its close is a FIN; ours reads a block at
        a time, and unread bytes would make the close a reset ("Connection
        reset by peer" at the client, where sshd's says "closed")."""
        sock = pkt_get(self, "socket")
        for _ in range(DRAIN_READS):
            try:
                if not sock.recv(65536, socket.MSG_DONTWAIT):
                    break
            except OSError:  # nothing more now (EAGAIN), or reset
                break
        super().close()

    def read_all(self, n, check_rekey=False):
        data = super().read_all(n, check_rekey)
        try:
            pkt_get(self, "socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass  # inetd mode on something that is not TCP
        return data


class NetTransport(CapturingTransport):
    def __init__(self, sock: socket.socket, monitor: MonitorClient) -> None:
        super().__init__(sock, packetizer_class=ThreadlessPacketizer)
        self.monitor = monitor

    #: the client's identification was refused (the monitor wrote why)
    banner_refused = False
    #: the OpenSSH generation imitated (ProcessGeneration): its server-sig-algs
    process_generation = 9

    def _check_banner(self):
        """sshd permits no line before a client's identification: the first
        line must be it, in SSH-2.0 (or 1.99), or the client is told so and
        the connection ends (wire/banner.py; the monitor writes sshd's
        lines).  paramiko's own check then reads the same line."""
        read_line = self.packetizer.readline

        def first_line(timeout):
            line = read_line(timeout)
            self.packetizer.readline = read_line
            refusal = identification.judge(line)
            if refusal is not None:
                self.banner_refused = True
                self.monitor.banner_refused(refusal.reason, refusal.detail)
                self.packetizer.write_all(refusal.reply())
                raise paramiko.SSHException("banner: identification refused")
            return line

        self.packetizer.readline = first_line
        try:
            super()._check_banner()
        finally:
            self.packetizer.readline = read_line

    def _parse_kex_init(self, m):
        """sshd's words when nothing is in common: which kind, and the
        client's offer (netchild/negotiation.py)."""
        try:
            super()._parse_kex_init(m)
        except paramiko.IncompatiblePeer as exc:
            raise negotiation.explain(exc, self, m.asbytes()) from None

    def _send_message(self, data):
        """sshd's net-child logs "Postponed publickey" as it answers a key
        query with PK_OK (auth2.c's userauth_finish, postponed)."""
        # PK_OK shares its number (60) with keyboard-interactive's INFO_REQUEST
        if (data.asbytes()[:1] == bytes([paramiko.common.MSG_USERAUTH_PK_OK])
                and self.server_object.take_key_query()):
            self.server_object.log_postponed("publickey")
        super()._send_message(data)

    def _parse_debug(self, m):
        transport_setup.parse_debug(m)

    def _activate_outbound(self):
        """sshd 9.2's EXT_INFO after the first NEWKEYS: server-sig-algs and
        publickey-hostbound@openssh.com; paramiko's would lack the second."""
        wanted = self.server_sig_algs
        send = wanted and self._remote_ext_info == "ext-info-c"
        self.server_sig_algs = False
        try:
            super()._activate_outbound()
        finally:
            self.server_sig_algs = wanted
        if send and not self.initial_kex_done:
            transport_setup.send_ext_info(self, {
                "server-sig-algs": algorithms.server_sig_algs(self.process_generation),
                hostbound.EXT_INFO_NAME: hostbound.EXT_INFO_VALUE})

    def _parse_ext_info(self, m):
        transport_setup.check_ext_info(m)
        super()._parse_ext_info(m)

    def _parse_newkeys(self, m):
        transport_setup.check_newkeys(self)
        if self.auth_handler is None:
            self.auth_handler = NetAuthHandler(self)
        kex = next((n for n, c in self._kex_info.items() if type(self.kex_engine) is c), "?")
        super()._parse_newkeys(m)
        trace(log, "net-child", "key exchange done: kex %s, host key %s, ciphers %s/%s, MACs %s/%s",
              kex, self.host_key_type, self.remote_cipher, self.local_cipher,
              self.remote_mac or "(implicit)", self.local_mac or "(implicit)")

    def hand_off(self) -> NoReturn:
        """Give the connection to the monitor and leave without reading another byte."""
        trace(log, "net-child", "handing off the transport at seq in %d out %d, then exiting",
              pkt_get(self.packetizer, "sequence_number_in"),
              pkt_get(self.packetizer, "sequence_number_out"))
        self.monitor.handoff(self.capture_state())
        os._exit(0)


class NetServer(paramiko.ServerInterface):
    """Every answer here comes from the monitor."""

    def __init__(self, monitor: MonitorClient, options: ServerOptions, banner: str,
                 peer: Peer) -> None:
        self._monitor = monitor
        self._options = options
        self._banner = banner
        self._user: str | None = None
        self._valid = False
        self._peer = peer
        #: a key the monitor allowed, not yet signed with or answered by PK_OK
        self._key_query = False
        self._methods = ",".join(options.auth_methods())
        #: how many answers the INFO_REQUEST we sent asks for; None: none pending
        self.pending_prompts: int | None = None
        #: the monitor's last verdict was a partial success
        self._partial = False

    def monitor_said(self, complete: bool, partial: bool, methods: str) -> bool:
        """Record a verdict of the monitor's: the methods the next
        USERAUTH_FAILURE names, and whether the method succeeded only in
        part.  True if the method succeeded at all."""
        self._methods = methods
        self._partial = partial and not complete
        return complete or partial

    def take_key_query(self) -> bool:
        """Whether the last publickey request the monitor allowed is still
        unanswered: a query, which PK_OK answers (asked once)."""
        pending, self._key_query = self._key_query, False
        return pending

    def take_partial(self) -> bool:
        """Whether the result being sent is a partial success (asked once)."""
        partial, self._partial = self._partial, False
        return partial

    def remote_id(self, peer: Peer) -> str:
        """sshd's sshpkt_fmt_connection_id: "authenticating user alice
        127.0.0.1 port 40000", "invalid user bob ...", or just the peer."""
        if self._user is None:
            return str(peer)
        kind = "authenticating user" if self._valid else "invalid user"
        return f"{kind} {self._user.partition(':')[0]} {peer}"

    def log_postponed(self, method: str) -> None:
        """sshd's auth_log for a method that awaits the client's next
        message (a key query answered, a keyboard-interactive prompt)."""
        if self._user is not None:
            verbose(log, "Postponed %s for %s%s from %s ssh2", method,
                    "" if self._valid else "invalid user ", self._user.partition(":")[0],
                    self._peer)

    def _name_user(self, username: str) -> None:
        if self._user is None:
            if not username or len(username) > MAX_USER_LEN or "\0" in username:
                # The monitor would take the question for a hostile child's.
                # Found by tests/fuzz.py.
                raise paramiko.SSHException("invalid format (user name empty, too long or "
                                            "with a NUL)")
            self._user = username
            trace(log, "net-child", "asks the monitor about user %s", username)
            answer = self._monitor.pwnam(username)
            self._valid = answer.valid
            self._methods = answer.methods  # the user's Match blocks may change them
            account = username.partition(":")[0]  # sshd's title drops a ":style"
            proctitle.set(roles.net_title(account if answer.valid else None))

    def get_allowed_auths(self, username: str) -> str:
        return self._methods

    def get_banner(self):
        return (self._banner, "") if self._banner else (None, None)

    def check_auth_interactive(self, username: str, submethods):
        self.pending_prompts = None
        self._name_user(username)
        if "keyboard-interactive" not in self._methods.split(","):
            return AUTH_FAILED
        return self._kbdint_step(self._monitor.kbdint(True, []), "keyboard-interactive")

    def check_auth_interactive_response(self, responses):
        answers = [r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r)
                   for r in responses]
        return self._kbdint_step(self._monitor.kbdint(False, answers),
                                 "keyboard-interactive/pam")

    def _kbdint_step(self, answer, method: str):
        """``method`` names the step as sshd's Postponed line does: the
        first prompt before the device (pam) is chosen, the later ones after."""
        self.pending_prompts = None
        if answer.done:
            succeeded = self.monitor_said(answer.success, answer.partial, answer.methods)
            return AUTH_SUCCESSFUL if succeeded else AUTH_FAILED
        query = InteractiveQuery("", answer.instruction)
        for text, echo in zip(answer.prompts, answer.echo):
            query.add_prompt(text, bool(echo))
        self.pending_prompts = len(query.prompts)
        self.log_postponed(method)
        return query

    def check_auth_none(self, username: str) -> int:
        self._name_user(username)
        return AUTH_FAILED

    def check_auth_password(self, username: str, password) -> int:
        self._name_user(username)
        if "password" not in self._methods.split(","):
            return AUTH_FAILED
        raw = password if isinstance(password, bytes) else password.encode("utf-8")
        trace(log, "net-child", "asks the monitor to check a password for %s", username)
        answer = self._monitor.auth_password(raw)
        succeeded = self.monitor_said(answer.accepted, answer.partial, answer.methods)
        return AUTH_SUCCESSFUL if succeeded else AUTH_FAILED

    def check_auth_hostbased(self, username: str, request: wire.HostbasedRequest) -> int:
        self._name_user(username)
        if "hostbased" not in self._methods.split(","):
            return AUTH_FAILED
        trace(log, "net-child", "asks the monitor to check a hostbased %s signature for %s@%s",
              request.algorithm, request.client_user, request.client_host)
        answer = self._monitor.hostbased(request)
        succeeded = self.monitor_said(answer.accepted, answer.partial, answer.methods)
        return AUTH_SUCCESSFUL if succeeded else AUTH_FAILED

    def check_auth_publickey(self, username: str, key) -> int:
        self._name_user(username)
        if "publickey" not in self._methods.split(",") or not isinstance(key, MonitorVerifiedKey):
            return AUTH_FAILED
        trace(log, "net-child", "asks the monitor whether a %s key is allowed for %s", key.algorithm,
              username)
        allowed = self._monitor.key_allowed(key.algorithm, key.keyblob)
        self._key_query = bool(allowed)
        return AUTH_SUCCESSFUL if allowed else AUTH_FAILED


def run(sock: socket.socket, channel_sock: socket.socket, options: ServerOptions,
        host_publics: list[paramiko.PKey], banner: str, close_fds: tuple[int, ...],
        title: str = roles.NET_TITLE) -> NoReturn:
    """The net-child's whole life, from the fork in the monitor (still root)
    to its exit: ``close_fds`` are the monitor's own, closed first.  In
    generation 10 the exec'd sshd-auth (auth_program.py) runs it, titled
    as OpenSSH 10's until a user is named."""
    try:
        for fd in close_fds:
            os.close(fd)
        proctitle.set(title)
        code = _serve(sock, channel_sock, options, host_publics, banner)
    except BaseException:
        code = EXIT_CLOSED
    os._exit(code)  # the connection ended before authentication


def _serve(sock: socket.socket, channel_sock: socket.socket, options: ServerOptions,
           host_publics: list[paramiko.PKey], banner: str) -> int:
    """Serve until authentication (no return) or the end; the exit status."""
    try:
        peer = Peer.of(sock)
    except OSError:  # reset already: the client left before its identification
        return EXIT_NO_BANNER
    sandbox.enter(options.privsep_user, options.privsep_dir,
                  keep_fds={sock.fileno(), channel_sock.fileno()})
    monitor = MonitorClient(MonitorChannel(channel_sock))
    logging.getLogger().handlers[:] = [MonitorLogHandler(monitor)]
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    trace(log, "net-child", "sandboxed: uid %d gid %d, no groups, root %s, caps none, no_new_privs, "
          "seccomp filter", os.getuid(), os.getgid(), options.privsep_dir)
    transport = NetTransport(sock, monitor)
    transport_setup.configure(transport, options, monitor.gex_group)
    transport.packetizer.already_sent = f"{transport.local_version}\r\n".encode()
    transport.process_generation = options.process_generation
    hostkey_proxy.install_on(transport, host_publics, monitor.sign)
    transport.server_mode = True
    transport.server_object = server = NetServer(monitor, options, banner, peer)
    transport.active = True
    transport.run()  # in this thread: no thread may be created here
    exc = transport.saved_exception
    # Gone before its identification: EOF, or a reset when our own line
    # (sent by the monitor) met a socket the client had already closed.
    if not transport.remote_version and isinstance(getattr(exc, "__context__", None),
                                                   (EOFError, ConnectionResetError)):
        return EXIT_NO_BANNER
    if transport.banner_refused:
        return EXIT_LOGGED  # the monitor wrote sshd's lines
    line = describe_failure(exc, server.remote_id(peer))
    if line is None:
        return EXIT_CLOSED
    log.info("%s", line)  # sshd's logdie, which writes at INFO
    return EXIT_LOGGED


def describe_failure(exc: BaseException | None, remote_id: str) -> str | None:
    """Why the connection ended, in the words sshd's log uses; None when
    the client hung up (the monitor says so: "Connection closed by")."""
    if isinstance(exc, EOFError) or exc is None:
        return None
    if isinstance(exc, negotiation.NegotiationFailed):
        return exc.log_line(remote_id)
    if isinstance(exc, NetFatal):
        return str(exc)
    if isinstance(exc, ConnectionResetError):
        return f"Connection reset by {remote_id}"
    where = f"Connection from {remote_id}"
    text = str(exc)
    if isinstance(exc, paramiko.SSHException) and ("banner" in text or "protocol version" in text):
        return f"banner exchange: {where}: invalid format"
    return f"ssh_dispatch_run_fatal: {where}: {transport_setup.failure_text(exc)}"
