"""The monitor's answers: root, one per connection, the only process that
decides anything.

``Monitor.serve`` reads a child's requests, admits each through the request
table (monitor/policy.py) and answers it: user lookup, passwords and
keyboard-interactive through PAM, public keys against authorized_keys,
host-key signatures, ptys with their login records.  ``serve_phase`` is the
one place where a child that breaks the rules becomes a log line and a
refusal.  The monitor's life around it (forks, PAM session, logout) is
monitor/main.py.
"""

from __future__ import annotations

import enum
import logging
import os
import pwd
import signal
import socket
from dataclasses import dataclass, field
from typing import Callable


from privsep.common import proctitle, roles
from privsep.common.channel import MonitorChannel
from privsep.common.log import VERBOSE
from privsep.common.peer import Peer
from privsep.common.trace import trace
from privsep.config.match import ConnectionInfo, access_refusal
from privsep.config.servconf import ServerConfig, ServerOptions
from privsep.config.authmethods import MethodLists
from privsep.monitor import (
    auth_pam, auth_info, authorized_keys, certificates, hostbased, hostkeys, keycommand, leftovers,
    loginrec, pty, pubkey, tun,
)
from privsep.common.ids import user_rights
from privsep.monitor.moduli import choose_moduli, int_bytes
from privsep.monitor.accounts import user_groups
from privsep.monitor.auth_kbdint import KbdintConversation
from privsep.monitor.policy import (
    AUTH_ATTEMPTS, AllowedKey, MonitorState, PolicyViolation, admit, bind_session_id,
    userauth_binding_error,
)
from privsep.wire import banner
from privsep.wire import messages as wire
from privsep.wire.facts import MAX_CHILD_LOG
from privsep.wire.hostkey_blobs import HostKey
from privsep.wire.keyblob import sshkey_error
from privsep.wire.keyoptions import KeyOption
from privsep.wire.userauth import parse_signed_userauth

log = logging.getLogger("privsep.monitor")


def verified_name(addr: str) -> str:
    """UseDNS: the reverse name of ``addr`` if it resolves back to ``addr``,
    else the address itself (sshd logs a warning in that case)."""
    try:
        name = socket.gethostbyaddr(addr)[0]
        forward = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return addr
    if addr not in forward:
        log.info("Address %s maps to %s, but this does not map back to the address.",
                 addr, name)
        return addr
    return name.lower()


class ChildGone(Exception):
    """The connection is over: end the monitor."""


class Verdict(enum.Enum):
    """What a method that succeeded amounts to (AuthenticationMethods)."""

    ACCEPTED = "the login is complete"
    PARTIAL = "a list of AuthenticationMethods goes on"
    REFUSED = "refused after all (PermitRootLogin, PAM's account check)"


@dataclass
class Monitor:
    options: ServerOptions
    host_keys: list[HostKey]
    peer: Peer
    #: Closed once authentication succeeded, so the listener stops counting us
    #: against MaxStartups.
    startup_fd: int
    state: MonitorState = field(default_factory=MonitorState)
    pw: pwd.struct_passwd | None = None
    pam: auth_pam.PamLogin | None = None
    pam_session_open: bool = False
    #: What PAM said while opening the session (the message of the day...),
    #: shown on the user's terminal as sshd does.
    login_messages: tuple[str, ...] = ()
    child_pid: int = 0
    failures: int = 0
    #: The parsed configuration, for Match blocks once the user is known.
    config: ServerConfig | None = None
    #: The PAM conversation of a keyboard-interactive login in progress.
    kbdint: KbdintConversation | None = None
    #: Key options of the authorized_keys line that let the user in (none
    #: unless publickey authentication did).
    key_options: tuple[KeyOption, ...] = ()
    #: The master end of each pty handed to the session process, held until
    #: the pty is released, so that the kernel cannot give its number to
    #: another login while we still act on that name (as sshd's monitor).
    pty_masters: dict[str, int] = field(default_factory=dict)
    #: Set while a session process runs that has not ended by itself with
    #: status 0: at cleanup the connection's processes are then ended too
    #: (a session process that was killed hung up nothing).
    session_unfinished: bool = False
    #: sshd's session_info: one line per method that succeeded, for
    #: ExposeAuthInfo (the SSH_USER_AUTH file, monitor/auth_info.py).
    auth_info: list[str] = field(default_factory=list)
    #: That file, once written; removed at cleanup.
    auth_info_path: str | None = None
    _remote_host: str | None = None
    #: the audit session id inherited from the listener (pam_loginuid gives
    #: the login a new one)
    _audit_before: int | None = None

    def __post_init__(self) -> None:
        self.state.host_key_blobs = frozenset(k.blob for k in self.host_keys)
        self.state.max_ptys = self.options.max_sessions
        self._audit_before = leftovers.audit_session(os.getpid())

    # --- identity -----------------------------------------------------------

    @property
    def remote_host(self) -> str:
        """The client's name with UseDNS (checked forward and back), else its address."""
        if self._remote_host is None:
            self._remote_host = self.peer.addr
            if self.options.use_dns:
                self._remote_host = verified_name(self.peer.addr)
        return self._remote_host

    def _user_text(self) -> str:
        """'alice' or 'invalid user bob', as sshd's log lines put it."""
        return self.state.user if self.state.user_valid else f"invalid user {self.state.user}"

    def connection_id(self) -> str:
        """'authenticating user alice' or 'invalid user bob': who the
        connection is for, in sshd's sshpkt_fmt_connection_id words."""
        kind = "authenticating user" if self.state.user_valid else "invalid user"
        return f"{kind} {self.state.user}"

    def _lookup(self, name: str, groups: frozenset[str]) -> pwd.struct_passwd | None:
        """The account, if it exists and the Allow/Deny rules let it in
        (``groups``: its group names)."""
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            log.info("Invalid user %s from %s", name, self.peer)
            return None
        refusal = access_refusal(self.options, name, groups, self.peer.addr,
                                 self.remote_host)
        if refusal:
            log.info("%s", refusal)
            return None
        return pw

    def _root_refused(self, method: str, key_options: tuple[KeyOption, ...]) -> bool:
        """PermitRootLogin, checked when a method has otherwise succeeded."""
        if self.pw is None or self.pw.pw_uid != 0:
            return False
        policy = self.options.permit_root_login
        allowed = policy == "yes" or (
            method == "hostbased" and policy == "prohibit-password") or (
            method == "publickey" and (policy == "prohibit-password" or (
                policy == "forced-commands-only"
                and any(o.name == "command" for o in key_options))))
        if not allowed:
            log.info("ROOT LOGIN REFUSED FROM %s port %d", self.peer.addr, self.peer.port)
        return not allowed

    # --- pre-auth answers -----------------------------------------------------

    def answer_sign(self, req: wire.SignRequest) -> wire.SignAnswer:
        key = hostkeys.key_for(self.host_keys, req.algorithm)
        if key is None:
            raise PolicyViolation(f"no host key for algorithm {req.algorithm!r}")
        if self.state.session_id is None:  # publickey-hostbound requests must name this key
            self.state.initial_host_key = key.blob
            self.state.initial_host_cert = key.certificate
        bind_session_id(self.state, req.data)
        try:
            signature = hostkeys.sign(key, req.algorithm, req.data)
        except hostkeys.SignerFailed as exc:
            log.error("Could not sign with host key %s: %s", key.path, exc)
            raise ChildGone() from None
        trace(log, "monitor", "signed %d bytes with the %s host key (signer child)", len(req.data),
              req.algorithm)
        return wire.SignAnswer(signature)

    def split_style(self, name: str) -> str:
        """sshd's "user:style": the account is the part before the first ':',
        the style is kept (auth_style) as sshd keeps it."""
        user, colon, style = name.partition(":")
        self.state.requested_user = name
        self.state.user = user
        self.state.auth_style = style if colon else None
        return user

    def answer_pwnam(self, req: wire.PwnamRequest) -> wire.PwnamAnswer:
        user = self.split_style(req.user)
        groups = user_groups(user)  # once: the Match blocks and Allow/DenyGroups
        if self.config is not None:
            self.options = self.config.options_for(ConnectionInfo(
                user=user, host=self.remote_host, address=self.peer.addr,
                local_address=self.peer.local_addr, local_port=self.peer.local_port,
                rdomain=self.peer.rdomain, groups=groups))
            self.state.max_ptys = self.options.max_sessions
        self.pw = self._lookup(user, groups)
        self.state.user_valid = self.pw is not None
        proctitle.set(roles.monitor_title(user if self.state.user_valid else None))
        trace(log, "monitor", "user %s: %s", user, "valid" if self.state.user_valid else "invalid")
        self._setup_method_lists()
        if self.options.use_pam:
            # Started for unknown users too, so that they cost what known ones do.
            self.pam = auth_pam.PamLogin(self.options.pam_service, user, rhost=self.remote_host,
                                         ruser=user)
        return wire.PwnamAnswer(self.state.user_valid, self._methods_offered())

    def _setup_method_lists(self) -> None:
        """AuthenticationMethods for this user (after Match): the lists that
        use only enabled methods, as sshd's auth2_setup_methods_lists."""
        try:
            self.state.method_lists, skipped = MethodLists.setup(
                self.options.authentication_methods, self.options.auth_methods())
        except ValueError as exc:
            log.error("%s", exc)
            log.info("Disconnecting %s: no authentication methods enabled", self.peer)
            raise ChildGone() from None
        for line in skipped:
            log.info("%s", line)

    def _methods_offered(self) -> str:
        """The method list of the next USERAUTH_FAILURE, as sshd's authmethods_get."""
        return self.state.method_lists.offered(self.options.auth_methods())

    def _accept(self, method: str, detail: str = "",
                key_options: tuple[KeyOption, ...] = (), info: str = "") -> Verdict:
        """Once a method succeeded: cross it off the AuthenticationMethods
        lists; when that completes one (or there are none), the final
        checks.  Logs the verdict in sshd's words.  ``method`` may carry a
        submethod ("keyboard-interactive/pam"); ``key_options`` are those of
        the verified key's line (publickey); ``info`` follows the method in
        the SSH_USER_AUTH line (the key, for publickey)."""
        name, _, submethod = method.partition("/")
        try:
            complete = self.state.method_lists.complete(name, submethod or None)
        except ValueError as exc:  # admit() let only methods that start a list through
            log.critical("fatal: %s", exc)
            raise ChildGone() from None
        if key_options or name == "publickey":
            self.key_options = key_options
        if not complete:
            self.auth_info.append(auth_info.line(method, info))
            # sshd logs a partial success at INFO only for a password
            level = logging.INFO if name == "password" else VERBOSE
            log.log(level, "Partial %s for %s from %s ssh2%s", method, self.state.user, self.peer,
                    detail)
            trace(log, "monitor", "%s for %s: partial, methods left %s", method, self.state.user,
                  self.state.method_lists.remaining)
            return Verdict.PARTIAL
        if self._root_refused(name, self.key_options):
            return Verdict.REFUSED
        if self.pam is not None:
            result = self.pam.acct_mgmt()
            if not result.ok:
                log.error("PAM: account check failed for %s from %s: %s",
                          self.state.user, self.peer, result.message)
                return Verdict.REFUSED
        self.state.authenticated = True
        self.auth_info.append(auth_info.line(method, info))
        log.info("Accepted %s for %s from %s ssh2%s", method, self.state.user, self.peer, detail)
        return Verdict.ACCEPTED

    def _fail(self, method: str, detail: str = "") -> None:
        """sshd's auth_log for a failure: at VERBOSE, raised to INFO for a
        password, an invalid user, or once half of MaxAuthTries is spent."""
        level = VERBOSE
        if (method == "password" or not self.state.user_valid
                or self.failures >= self.options.max_auth_tries // 2):
            level = logging.INFO
        log.log(level, "Failed %s for %s from %s ssh2%s", method, self._user_text(), self.peer,
                detail)
        self._count_failure()

    def _count_failure(self) -> None:
        """One more failed attempt; past MaxAuthTries the connection ends."""
        self.failures += 1
        if self.failures >= self.options.max_auth_tries:
            # sshd's net-child counts the tries and says so: [preauth]
            log.error("maximum authentication attempts exceeded for %s from %s ssh2 [preauth]",
                      self._user_text(), self.peer)
            log.info("Disconnecting %s %s: Too many authentication failures [preauth]",
                     self.connection_id(), self.peer)
            raise ChildGone()

    def answer_password(self, req: wire.PasswordRequest) -> wire.PasswordAnswer:
        password = req.password.decode("utf-8", "surrogateescape")
        allowed = bool(
            self.options.password_authentication and self.pw is not None
            and "\0" not in password
            and (password or self.options.permit_empty_passwords)
        )
        verdict = False
        if self.pam is not None:
            # Always ask PAM, even when the answer is known to be no, so that
            # the failure delay hides which users exist; but never with the
            # real password for a login that is refused anyway.
            attempt = password if allowed else "\b\n\r\x7fINCORRECT"[: max(1, len(password))]
            verdict = self.pam.authenticate_password(attempt).ok and allowed
        outcome = self._accept("password") if verdict else Verdict.REFUSED
        if outcome is not Verdict.REFUSED:
            trace(log, "monitor", "password for %s: %s", self.state.user, outcome.name.lower())
            return wire.PasswordAnswer(outcome is Verdict.ACCEPTED, outcome is Verdict.PARTIAL,
                                       self._methods_offered())
        trace(log, "monitor", "password for %s: refused", self._user_text())
        self._fail("password")
        return wire.PasswordAnswer(False, False, self._methods_offered())

    def _authorized_keys(self) -> list[authorized_keys.AuthorizedKey]:
        assert self.pw is not None
        keys, problems = authorized_keys.read_authorized_keys(
            self.pw, self.options.authorized_keys_file, self.options.strict_modes)
        for problem in problems:
            log.info("Authentication refused: %s", problem)
        return keys

    def _key_sources(self, keyblob: bytes) -> list[Callable[[], list[authorized_keys.AuthorizedKey]]]:
        """Where a key may be found, in sshd's order, each read only if the
        ones before did not let the key in: the AuthorizedKeysFile files,
        then AuthorizedKeysCommand's output for this key (TrustedUserCAKeys
        comes between the two: certificates.user_key_allowed)."""
        assert self.pw is not None
        pw = self.pw
        return [self._authorized_keys,
                lambda: keycommand.authorized_keys_for(self.options, pw, self.peer, keyblob)]

    def _principals_command(self, keyblob: bytes) -> certificates.PrincipalsCommand | None:
        """AuthorizedPrincipalsCommand for this connection, if configured."""
        if self.options.authorized_principals_command.lower() == "none":
            return None
        options, pw, peer = self.options, self.pw, self.peer
        assert pw is not None
        return lambda cert: keycommand.principals_lines(
            options, pw, peer, keycommand.cert_tokens(cert, keyblob))

    def answer_key_allowed(self, req: wire.KeyAllowedRequest) -> wire.KeyAllowedAnswer:
        self.state.allowed_key = None
        found: tuple[KeyOption, ...] | None = None
        unreadable = sshkey_error(req.keyblob)
        if unreadable is not None:
            # sshd's net-child parses the blob before it asks its monitor:
            # its line, a failed try counted, and no "Failed publickey"
            log.error("userauth_pubkey: parse key: %s [preauth]", unreadable)
            self._count_failure()
            return wire.KeyAllowedAnswer(False)
        if pubkey.rsa_too_small(req.keyblob, self.options.required_rsa_size):
            pass  # refused, as sshd refuses it before asking whether it is authorized
        elif req.keyblob in self.state.used_keys:
            # AuthenticationMethods publickey,publickey wants two keys
            log.info("refusing previously-used %s key", pubkey.key_label(req.algorithm))
        elif (self.options.pubkey_authentication and self.pw is not None
                and req.algorithm in self.options.pubkey_accepted_algorithms):
            found = certificates.user_key_allowed(
                self.options, self.pw, self.state.user, self.peer.addr, self.remote_host,
                req.algorithm, req.keyblob, self._key_sources(req.keyblob),
                self._principals_command(req.keyblob))
        allowed = found is not None
        if found is not None:
            self.state.allowed_key = AllowedKey(req.algorithm, req.keyblob, found)
        trace(log, "monitor", "key %s for %s: %s", req.algorithm, self._user_text(),
              "allowed" if allowed else "not allowed")
        if not allowed:
            self._fail("publickey", certificates.key_detail(req.keyblob))
        return wire.KeyAllowedAnswer(bool(allowed))

    def answer_key_verify(self, req: wire.KeyVerifyRequest) -> wire.KeyVerifyAnswer:
        try:
            signed = parse_signed_userauth(req.signed_data)
        except ValueError as exc:
            raise PolicyViolation(f"malformed signed userauth request: {exc}") from None
        reason = userauth_binding_error(self.state, req, signed)
        if reason:
            raise PolicyViolation(reason)
        try:
            keytype = pubkey.public_blob_type(req.keyblob)
        except ValueError as exc:
            raise PolicyViolation(f"malformed key blob: {exc}") from None
        key_text = f"{pubkey.key_label(keytype)} {pubkey.fingerprint(req.keyblob)}"
        detail = certificates.key_detail(req.keyblob)
        allowed = self.state.allowed_key
        assert allowed is not None  # admitted only for the key last allowed
        verified = pubkey.verify_userauth(req.algorithm, req.keyblob, req.signed_data,
                                          req.signature)
        refusal = verified and certificates.sk_refusal(
            verified, allowed.options, self.options.pubkey_auth_options)
        if refusal:
            log.error("public key %s signature for %s from %s port %d rejected: %s",
                      key_text, self._user_text(),
                      self.peer.addr, self.peer.port, refusal)
            verified = None
        if verified is not None:
            outcome = self._accept("publickey", detail, allowed.options,
                                   info=auth_info.key_text(keytype, req.keyblob))
            if outcome is not Verdict.REFUSED:
                # This key has done its part: it cannot count twice.
                self.state.allowed_key = None
                self.state.used_keys.add(req.keyblob)
                trace(log, "monitor", "signature by %s key for %s: verified, %s", keytype,
                      self.state.user, outcome.name.lower())
                return wire.KeyVerifyAnswer(outcome is Verdict.ACCEPTED,
                                            outcome is Verdict.PARTIAL, self._methods_offered())
        trace(log, "monitor", "signature by %s key for %s: refused", keytype, self._user_text())
        self._fail("publickey", detail)
        return wire.KeyVerifyAnswer(False, False, self._methods_offered())

    def answer_kbdint(self, req: wire.KbdintRequest) -> wire.KbdintAnswer:
        """Relay one step of a PAM conversation to the client and back."""
        if req.start:
            if self.kbdint is not None:
                self.kbdint.abort()
            if self.pam is None or not self.options.kbd_interactive_authentication:
                self._fail("keyboard-interactive/pam")
                return wire.KbdintAnswer(True, False, "", [], b"", False, self._methods_offered())
            self.kbdint = KbdintConversation(self.pam, self.state.user_valid)
            step = self.kbdint.begin()
        elif self.kbdint is None:
            raise PolicyViolation("keyboard-interactive response without a conversation")
        else:
            step = self.kbdint.respond(req.responses)
        if not step.done:
            return wire.KbdintAnswer(False, False, step.instruction, step.prompts, step.echo)
        self.kbdint = None
        outcome = Verdict.REFUSED
        if step.success and self.state.user_valid:
            outcome = self._accept("keyboard-interactive/pam")
        if outcome is Verdict.REFUSED:
            self._fail("keyboard-interactive/pam")
        return wire.KbdintAnswer(True, outcome is Verdict.ACCEPTED, step.instruction, [], b"",
                                 outcome is Verdict.PARTIAL, self._methods_offered())

    def answer_hostbased(self, req: wire.HostbasedRequest) -> wire.HostbasedAnswer:
        """A hostbased request, checked as a whole (monitor/hostbased.py)."""
        assert self.state.session_id is not None and self.state.user is not None  # admit()
        result = hostbased.check(self.options, self.pw, self.state.user, self.state.session_id,
                                 self.peer.addr, self.remote_host, req)
        if result.verified:
            outcome = self._accept("hostbased", result.detail,
                                   info=auth_info.key_text(pubkey.public_blob_type(req.keyblob),
                                                           req.keyblob))
            if outcome is not Verdict.REFUSED:
                return wire.HostbasedAnswer(outcome is Verdict.ACCEPTED,
                                            outcome is Verdict.PARTIAL, self._methods_offered())
        if result.detail:
            self._fail("hostbased", result.detail)
        else:  # refused before sshd's net-child would have asked its monitor
            self._count_failure()
        return wire.HostbasedAnswer(False, False, self._methods_offered())

    def answer_moduli(self, req: wire.ModuliRequest) -> wire.ModuliAnswer:
        """A group for group exchange, chosen from ModuliFile as sshd does."""
        group = choose_moduli(self.options.moduli_file, req.min_bits, req.want_bits,
                              req.max_bits)
        return wire.ModuliAnswer(int_bytes(group.prime), int_bytes(group.generator))

    PREAUTH_ANSWERS = {
        wire.ModuliRequest: answer_moduli,
        wire.KbdintRequest: answer_kbdint,
        wire.SignRequest: answer_sign,
        wire.PwnamRequest: answer_pwnam,
        wire.PasswordRequest: answer_password,
        wire.KeyAllowedRequest: answer_key_allowed,
        wire.KeyVerifyRequest: answer_key_verify,
        wire.HostbasedRequest: answer_hostbased,
    }

    def write_auth_info(self) -> str | None:
        """ExposeAuthInfo: the SSH_USER_AUTH file for the session about to
        be forked (its path), or None."""
        if not self.options.expose_auth_info or self.pw is None:
            return None
        self.auth_info_path = auth_info.write(self.pw, self.auth_info)
        return self.auth_info_path

    # --- post-auth answers ----------------------------------------------------

    def answer_pty(self, req: wire.PtyRequest) -> tuple[wire.PtyAnswer, tuple[int, int]]:
        assert self.pw is not None
        master, slave, tty = pty.allocate(self.pw.pw_uid)
        self.state.ptys.add(tty)
        self.pty_masters[tty] = master
        last = ""
        if self.options.print_last_log:
            last = loginrec.last_login_message(loginrec.read_lastlog(self.pw.pw_uid))
        trace(log, "monitor", "Allocated pty %s for %s, owner %d:tty mode %o", tty, self.state.user,
              self.pw.pw_uid, pty.TTY_MODE)
        if os.geteuid() == 0:  # an unprivileged daemon writes no login records
            try:
                loginrec.record_login(
                    loginrec.LoginRecord(user=self.pw.pw_name, line=tty, pid=os.getpid(),
                                         host=self.remote_host, addr=self.peer.addr),
                    uid=self.pw.pw_uid)
                trace(log, "monitor", "wrote USER_PROCESS %s pid %d to utmp, wtmp, lastlog", tty,
                      os.getpid())
            except OSError as exc:
                log.error("Could not write login record for %s: %s", tty, exc)
        return wire.PtyAnswer(tty, last), (master, slave)

    def release_pty(self, tty: str) -> None:
        """Logout records, the device back to root, and only then our master
        closed: until then the kernel cannot give ``tty`` to anyone else."""
        master = self.pty_masters.pop(tty, None)
        try:
            if os.geteuid() == 0:
                loginrec.record_logout(tty, os.getpid())
                trace(log, "monitor", "wrote DEAD_PROCESS %s pid %d to utmp, wtmp", tty, os.getpid())
        except OSError as exc:
            log.error("Could not write logout record for %s: %s", tty, exc)
        if master is not None:
            pty.release(tty, master)
            os.close(master)
            trace(log, "monitor", "released pty %s (owner root, mode 666)", tty)
        self.state.ptys.discard(tty)

    def answer_pty_cleanup(self, req: wire.PtyCleanupRequest) -> wire.PtyCleanupAnswer:
        self.release_pty(req.tty)
        return wire.PtyCleanupAnswer(True)

    def answer_tun(self, req: wire.TunRequest) -> tuple[wire.Message, tuple[int, ...]]:
        """A tun/tap device opened with the user's rights (monitor/tun.py
        says why), and its descriptor; or why not, as sshd logs it."""
        assert self.pw is not None
        try:
            with user_rights(self.pw):
                fd, ifname = tun.open_device(req.mode, req.unit)
        except tun.TunError as exc:
            log.debug("%s", exc)
            return wire.TunRefused(str(exc)), ()
        return wire.TunAnswer(ifname), (fd,)

    # --- the loop ---------------------------------------------------------------

    def serve(self, channel: MonitorChannel, child_role: str) -> wire.Handoff | None:
        """Answer the child until it hands off (returned) or goes away (None):
        a child that dies while an answer is on its way has gone, like one
        that closed its end."""
        try:
            return self._serve(channel, child_role)
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _serve(self, channel: MonitorChannel, child_role: str) -> wire.Handoff | None:
        while True:
            try:
                msg, _ = channel.recv()
            except EOFError:
                return None
            except (wire.ProtocolError, OSError) as exc:
                raise PolicyViolation(f"bad message from {child_role}: {exc}") from None
            admit(self.state, msg)
            if type(msg) in AUTH_ATTEMPTS:
                self.state.auth_attempted = True
            if self.kbdint is not None and not isinstance(msg, (wire.KbdintRequest, wire.Log)):
                self.kbdint.abort()  # the client moved on to another method
                self.kbdint = None
            if isinstance(msg, wire.Log):
                # sshd marks its net-child's lines " [preauth]"; its
                # post-auth child logs for itself, with no mark.
                log.log(max(logging.DEBUG, min(msg.level, logging.CRITICAL)),
                        "%s [preauth]" if child_role == "preauth" else "%s",
                        msg.text[:MAX_CHILD_LOG].decode("utf-8", "surrogateescape"))
            elif isinstance(msg, wire.BannerRefused):  # sshd's [priv] lines, unmarked
                for level, line in banner.Refusal(msg.reason, msg.detail).log_lines(str(self.peer)):
                    log.log(level, "%s", line)
            elif isinstance(msg, wire.Handoff):
                return msg
            elif isinstance(msg, wire.PtyRequest):
                answer, (master, slave) = self.answer_pty(msg)
                try:
                    channel.send(answer, (master, slave))
                finally:
                    os.close(slave)  # the master stays ours until release_pty
            elif isinstance(msg, wire.PtyCleanupRequest):
                channel.send(self.answer_pty_cleanup(msg))
            elif isinstance(msg, wire.TunRequest):
                answer, fds = self.answer_tun(msg)
                try:
                    channel.send(answer, fds)
                finally:
                    for fd in fds:
                        os.close(fd)  # the session process has its own now
            else:
                channel.send(self.PREAUTH_ANSWERS[type(msg)](self, msg))

    def kill_child(self) -> None:
        if self.child_pid:
            try:
                os.kill(self.child_pid, signal.SIGKILL)
                os.waitpid(self.child_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.child_pid = 0

    def cleanup(self) -> None:
        """However the connection ended: no child, no pty, no PAM handle left.
        After a session process that did not end by itself, none of the
        connection's processes either."""
        self.kill_child()
        if self.session_unfinished:
            self.end_connection()
        if self.auth_info_path is not None and self.pw is not None:
            auth_info.remove(self.auth_info_path, self.pw)
            self.auth_info_path = None
        for tty in list(self.state.ptys):
            self.release_pty(tty)
        if self.pam is None:
            return
        if self.pam_session_open:
            self.pam.close_session()
            self.pam.setcred(auth_pam.PAM_DELETE_CRED)
            self.pam_session_open = False
        self.pam.end()
        self.pam = None

    def end_connection(self) -> None:
        """The session process was killed (or failed): end what it left, the
        programs on our ptys and everything else of the login."""
        self.session_unfinished = False
        if os.geteuid() != 0 or self.pw is None:
            return
        ours = [tty for tty, master in self.pty_masters.items() if pty.slave_name(master) == tty]
        try:
            killed = leftovers.end_own_connection(self._audit_before, ours, self.pw.pw_uid)
        except Exception as exc:
            log.error("error: ending the processes of %s: %s", self.peer, exc)
            return
        if killed:
            log.info("session process of %s gone: killed %d process%s left by it",
                     self.state.user, killed, "es" if killed != 1 else "")

    def wait_child(self) -> int:
        """The child's wait status, once it has exited."""
        pid, status = self.child_pid, 0
        if pid:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.child_pid = 0
        return status


class Ending(enum.Enum):
    """How the monitor's service of one child ended."""

    HANDED_OFF = "the child handed the transport over"
    CLOSED = "the child closed its end"
    GONE = "the connection is over (MaxAuthTries)"
    REFUSED = "the child broke the protocol or the request table"
    CRASHED = "the monitor itself failed"


@dataclass(frozen=True)
class PhaseResult:
    ending: Ending
    handoff: wire.Handoff | None = None


def serve_phase(monitor: Monitor, channel: MonitorChannel, child_role: str) -> PhaseResult:
    """Serve one child until it hands off or goes away, and log how it ended.

    The one place that turns a hostile child into a log line and a refusal:
    the daemon (monitor/main.py) and the hostile-child tests both call it."""
    try:
        handoff = monitor.serve(channel, child_role)
    except ChildGone:
        return PhaseResult(Ending.GONE)
    except PolicyViolation as exc:
        log.critical("fatal: monitor: %s; dropping %s", exc, monitor.peer)
        return PhaseResult(Ending.REFUSED)
    except Exception:  # never a traceback to the client; one to the log
        log.critical("fatal: monitor error for %s", monitor.peer, exc_info=True)
        return PhaseResult(Ending.CRASHED)
    if handoff is None:
        return PhaseResult(Ending.CLOSED)
    return PhaseResult(Ending.HANDED_OFF, handoff)
