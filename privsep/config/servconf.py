"""Server configuration in sshd_config's language.  Read by root only.

As in OpenSSH: keywords are case-insensitive; the first value obtained for a
keyword wins (``-o`` and ``-p`` come before the file, and replace the file's
list keywords outright); arguments may be double-quoted; ``Include`` takes
globs; ``Match`` blocks (User, Group, Host, Address, LocalAddress, LocalPort,
All) hold the keywords OpenSSH allows there, applied per connection once the
user is known, overriding the global values.  A keyword nobody knows is an
error naming file and line; one OpenSSH knows that this daemon does not
implement is reported by name ("Unsupported option") and skipped.

Parsing (``parse_config``) is separate from applying (``ServerConfig.options_for``),
so ``-t``, ``-T`` and ``-C`` see exactly what a connection would get.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shlex
from dataclasses import dataclass, field
from typing import Callable

from privsep.config import authmethods, otherkeys, penalties, values as v
from privsep.config.algorithms import SUPPORTED_ALGORITHMS
from privsep.config.values import Parser
from privsep.config.match import (
    ConnectionInfo, addr_match_list, criteria_match, parse_port,
)
from privsep.wire import facts

log = logging.getLogger("privsep.servconf")

MAX_INCLUDE_DEPTH = 16


class ConfigError(ValueError):
    """A bad line; the message names file and line as sshd's does.  sshd
    ends on it with fatal()'s status."""
    exit_status = 255
    #: sshd writes it on stderr whatever -E says: an -o line's error (read
    #: before sshd redirects its log) or a file it cannot open (perror());
    #: the file's own errors go to the log
    on_stderr = False


class ConfigErrorExit1(ConfigError):
    """One sshd reports and then ends with exit(1): an -o line its parser
    returned an error for (an unknown keyword, no argument), a -f file it
    cannot open."""
    exit_status = 1


#: where sshd says an -o line is: its file "command-line", line 0
CMDLINE = "command-line line 0"


@dataclass(frozen=True)
class Keyword:
    name: str  # the canonical spelling
    attr: str
    parse: Parser
    #: values accumulate across lines (lists, dicts) instead of first-wins
    multi: bool = False
    in_match: bool = False

    def __reduce__(self):
        """Pickled by name (its parser is a lambda): process generation 10
        passes the parsed configuration to the exec'd per-connection program."""
        return (_keyword_named, (self.name,))


def _keyword_named(name: str) -> "Keyword":
    return KEYWORDS[name.lower()]


KEYWORD_LIST = [
    Keyword("Port", "port", v.port, multi=True),
    Keyword("ListenAddress", "listen_address", v.listen_address, multi=True),
    Keyword("AddressFamily", "address_family", v.choice("any", "inet", "inet6")),
    Keyword("HostKey", "host_key", lambda w: [v.one(w)], multi=True),
    Keyword("PidFile", "pid_file", v.text),
    Keyword("LogLevel", "log_level", lambda w: v.choice(
        "quiet", "fatal", "error", "info", "verbose", "debug", "debug1", "debug2",
        "debug3", complaint="unsupported log level '{}'")(w).upper(), in_match=True),
    Keyword("SyslogFacility", "syslog_facility", lambda w: v.choice(
        "daemon", "user", "auth", "authpriv", *(f"local{i}" for i in range(8)),
        complaint="unsupported log facility '{}'")(w).upper()),
    Keyword("PermitRootLogin", "permit_root_login", v.choice(
        "yes", "no", "prohibit-password", "forced-commands-only",
        aliases={"without-password": "prohibit-password"}), in_match=True),
    Keyword("PubkeyAuthentication", "pubkey_authentication", v.flag, in_match=True),
    Keyword("PasswordAuthentication", "password_authentication", v.flag, in_match=True),
    Keyword("KbdInteractiveAuthentication", "kbd_interactive_authentication", v.flag,
            in_match=True),
    Keyword("PermitEmptyPasswords", "permit_empty_passwords", v.flag, in_match=True),
    Keyword("UsePAM", "use_pam", v.flag),
    Keyword("AuthorizedKeysFile", "authorized_keys_file", v.words_list, in_match=True),
    Keyword("StrictModes", "strict_modes", v.flag),
    Keyword("MaxAuthTries", "max_auth_tries", v.integer(), in_match=True),
    Keyword("MaxSessions", "max_sessions", v.integer(), in_match=True),
    Keyword("MaxStartups", "max_startups", v.max_startups),
    Keyword("LoginGraceTime", "login_grace_time", v.time_value),
    Keyword("AllowUsers", "allow_users", v.user_patterns, multi=True, in_match=True),
    Keyword("DenyUsers", "deny_users", v.user_patterns, multi=True, in_match=True),
    Keyword("AllowGroups", "allow_groups", v.words_list, multi=True, in_match=True),
    Keyword("DenyGroups", "deny_groups", v.words_list, multi=True, in_match=True),
    Keyword("AcceptEnv", "accept_env", v.words_list, multi=True, in_match=True),
    Keyword("SetEnv", "set_env", v.set_env, multi=True, in_match=True),
    Keyword("PermitUserEnvironment", "permit_user_environment", v.text),
    Keyword("PrintMotd", "print_motd", v.flag),
    Keyword("PrintLastLog", "print_last_log", v.flag),
    Keyword("Banner", "banner", v.text, in_match=True),
    Keyword("ForceCommand", "force_command", v.rest, in_match=True),
    Keyword("Subsystem", "subsystem", v.subsystem, multi=True),
    Keyword("ClientAliveInterval", "client_alive_interval", v.time_value, in_match=True),
    Keyword("ClientAliveCountMax", "client_alive_count_max", v.integer(), in_match=True),
    Keyword("TCPKeepAlive", "tcp_keep_alive", v.flag),
    Keyword("AllowTcpForwarding", "allow_tcp_forwarding",
            v.choice("yes", "no", "local", "remote", "all", aliases={"all": "yes"}),
            in_match=True),
    Keyword("AllowStreamLocalForwarding", "allow_stream_local_forwarding",
            v.choice("yes", "no", "local", "remote", "all", aliases={"all": "yes"}),
            in_match=True),
    Keyword("AllowAgentForwarding", "allow_agent_forwarding", v.flag, in_match=True),
    Keyword("PermitTTY", "permit_tty", v.flag, in_match=True),
    Keyword("PermitOpen", "permit_open", v.words_list, in_match=True),
    Keyword("PermitListen", "permit_listen", v.words_list, in_match=True),
    Keyword("DisableForwarding", "disable_forwarding", v.flag, in_match=True),
    Keyword("StreamLocalBindMask", "stream_local_bind_mask", lambda w: int(v.one(w), 8),
            in_match=True),
    Keyword("StreamLocalBindUnlink", "stream_local_bind_unlink", v.flag, in_match=True),
    Keyword("GatewayPorts", "gateway_ports", v.choice("no", "yes", "clientspecified"),
            in_match=True),
    Keyword("X11Forwarding", "x11_forwarding", v.x11, in_match=True),
    Keyword("Ciphers", "ciphers", v.algorithms("ciphers")),
    Keyword("MACs", "macs", v.algorithms("macs")),
    Keyword("KexAlgorithms", "kex_algorithms", v.algorithms("kex")),
    Keyword("HostKeyAlgorithms", "host_key_algorithms", v.algorithms("hostkey")),
    Keyword("PubkeyAcceptedAlgorithms", "pubkey_accepted_algorithms", v.algorithms("pubkey"),
            in_match=True),
    Keyword("UseDNS", "use_dns", v.flag),
    Keyword("VersionAddendum", "version_addendum", v.rest),
    Keyword("RekeyLimit", "rekey_limit", v.rekey_limit, in_match=True),
    # --- algorithms and transport (issue 13) ---
    # sshd 9.2 has no pre-auth compression left: "delayed" is "yes", printed so.
    Keyword("Compression", "compression", v.choice("yes", "no", aliases={"delayed": "yes"})),
    Keyword("ModuliFile", "moduli_file", v.text),
    Keyword("RequiredRSASize", "required_rsa_size", v.integer()),  # sshd's parse_int

    # --- authentication: certificates, revocation (issue 14) ---
    Keyword("TrustedUserCAKeys", "trusted_user_ca_keys", v.text, in_match=True),
    Keyword("AuthorizedPrincipalsFile", "authorized_principals_file", v.text, in_match=True),
    Keyword("RevokedKeys", "revoked_keys", v.text, in_match=True),
    Keyword("CASignatureAlgorithms", "ca_signature_algorithms", v.algorithms("casig"),
            in_match=True),
    Keyword("HostCertificate", "host_certificate", lambda w: [v.one(w)], multi=True),

    # --- authentication: methods, key commands (issue 14) ---
    Keyword("AuthenticationMethods", "authentication_methods", authmethods.parse,
            in_match=True),
    Keyword("AuthorizedKeysCommand", "authorized_keys_command", v.command, in_match=True),
    Keyword("AuthorizedKeysCommandUser", "authorized_keys_command_user", v.text, in_match=True),
    Keyword("AuthorizedPrincipalsCommand", "authorized_principals_command", v.command,
            in_match=True),
    Keyword("AuthorizedPrincipalsCommandUser", "authorized_principals_command_user", v.text,
            in_match=True),
    Keyword("ExposeAuthInfo", "expose_auth_info", v.flag, in_match=True),
    Keyword("PubkeyAuthOptions", "pubkey_auth_options", v.pubkey_auth_options, in_match=True),

    # --- every other keyword of sshd 9.2 (issue 15) ---
    *(Keyword(*row) for row in otherkeys.KEYWORD_ROWS),
    # --- process generations (issue 16) ---
    # This daemon's own: 9 is OpenSSH 9.2's process model (forks only), 10 is
    # OpenSSH 10's (exec'd sshd-session and sshd-auth programs).  Unset, it
    # follows the OpenSSH installed here (ServerConfig.default_generation).
    Keyword("ProcessGeneration", "process_generation",
            lambda w: int(v.choice("9", "10")(w))),
    # This daemon's own: where and as whom the pre-auth net-child runs.
    Keyword("PrivilegeSeparationUser", "privsep_user", v.text),
    Keyword("PrivilegeSeparationDirectory", "privsep_dir", v.text),
    # --- PerSourcePenalties (OpenSSH 10; used in generation 10 only) ---
    *(Keyword(name, attr, parse, multi=multi) for name, attr, parse, multi in penalties.KEYWORD_ROWS),
]
KEYWORDS: dict[str, Keyword] = {k.name.lower(): k for k in KEYWORD_LIST}
ALIASES = {
    "challengeresponseauthentication": "kbdinteractiveauthentication",
    "pubkeyacceptedkeytypes": "pubkeyacceptedalgorithms",
    **otherkeys.ALIASES,
}

#: Keywords OpenSSH 9.2 knows that this daemon does not implement.
UNSUPPORTED = frozenset(k.lower() for k in (
    "KerberosGetAFSToken",
    "KerberosTgtPassing",
    "AFSTokenPassing",
))


@dataclass
class ServerOptions(otherkeys.OtherOptions, penalties.PenaltyOptions):
    # The fields of issue 15's keywords are otherkeys.OtherOptions's, PerSourcePenalties's
    # penalties.PenaltyOptions's.
    port: list[int] = field(default_factory=list)
    listen_address: list[str] = field(default_factory=list)
    address_family: str = "any"
    host_key: list[str] = field(default_factory=list)
    pid_file: str = facts.DEFAULT_PID_FILE
    log_level: str = "INFO"
    syslog_facility: str = "AUTH"
    permit_root_login: str = "prohibit-password"
    pubkey_authentication: bool = True
    password_authentication: bool = True
    kbd_interactive_authentication: bool = True
    permit_empty_passwords: bool = False
    #: OpenSSH's built-in default is no; this daemon checks passwords only
    #: through PAM, so its default is yes (Debian's sshd_config says yes too).
    use_pam: bool = True
    authorized_keys_file: list[str] = field(default_factory=list)
    strict_modes: bool = True
    max_auth_tries: int = 6
    max_sessions: int = 10
    max_startups: tuple[int, int, int] = (10, 30, 100)
    login_grace_time: int = 120
    allow_users: list[str] = field(default_factory=list)
    deny_users: list[str] = field(default_factory=list)
    allow_groups: list[str] = field(default_factory=list)
    deny_groups: list[str] = field(default_factory=list)
    #: OpenSSH accepts nothing by default; Debian's sshd_config (and so this
    #: daemon, until an AcceptEnv line says otherwise) accepts LANG and LC_*.
    accept_env: list[str] = field(default_factory=lambda: ["LANG", "LC_*"])
    set_env: list[str] = field(default_factory=list)
    permit_user_environment: str = "no"
    print_motd: bool = True
    print_last_log: bool = True
    banner: str = "none"
    force_command: str = "none"
    #: name -> command; Debian's sftp-server until a Subsystem line says otherwise.
    subsystem: dict[str, str] = field(
        default_factory=lambda: {"sftp": facts.SFTP_SERVER})
    client_alive_interval: int = 0
    client_alive_count_max: int = 3
    tcp_keep_alive: bool = True
    allow_tcp_forwarding: str = "yes"
    allow_stream_local_forwarding: str = "yes"
    allow_agent_forwarding: bool = True
    permit_tty: bool = True
    permit_open: list[str] = field(default_factory=lambda: ["any"])
    permit_listen: list[str] = field(default_factory=lambda: ["any"])
    disable_forwarding: bool = False
    stream_local_bind_mask: int = 0o177
    stream_local_bind_unlink: bool = False
    gateway_ports: str = "no"
    x11_forwarding: bool = False
    ciphers: list[str] = field(default_factory=lambda: list(SUPPORTED_ALGORITHMS["ciphers"]))
    macs: list[str] = field(default_factory=lambda: list(SUPPORTED_ALGORITHMS["macs"]))
    kex_algorithms: list[str] = field(default_factory=lambda: list(SUPPORTED_ALGORITHMS["kex"]))
    host_key_algorithms: list[str] = field(
        default_factory=lambda: list(SUPPORTED_ALGORITHMS["hostkey"]))
    pubkey_accepted_algorithms: list[str] = field(
        default_factory=lambda: list(SUPPORTED_ALGORITHMS["pubkey"]))
    use_dns: bool = False
    version_addendum: str = "none"
    rekey_limit: tuple[int, int] = (0, 0)
    # --- algorithms and transport (issue 13) ---
    compression: str = "yes"
    #: Groups for diffie-hellman-group-exchange, read by the monitor.
    moduli_file: str = "/etc/ssh/moduli"
    #: The smallest RSA key, host or user, in bits (never below 1024:
    #: monitor/pubkey.RSA_MINIMUM_BITS).
    required_rsa_size: int = 1024

    # --- authentication: certificates, revocation (issue 14) ---
    trusted_user_ca_keys: str = "none"
    authorized_principals_file: str = "none"
    revoked_keys: str = "none"
    ca_signature_algorithms: list[str] = field(
        default_factory=lambda: list(SUPPORTED_ALGORITHMS["casig"]))
    host_certificate: list[str] = field(default_factory=list)

    # --- authentication: methods, key commands (issue 14) ---
    #: ("any",) or the comma-lists of which one must be completed.
    authentication_methods: tuple[str, ...] = (authmethods.ANY,)
    #: A command line (its first word an absolute path) or "none".
    authorized_keys_command: str = "none"
    authorized_keys_command_user: str = "none"
    authorized_principals_command: str = "none"
    authorized_principals_command_user: str = "none"
    expose_auth_info: bool = False
    #: Empty (sshd prints "none"), or "touch-required" and/or
    #: "verify-required": the FIDO key check reads it.
    pubkey_auth_options: tuple[str, ...] = ()

    # --- every other keyword of sshd 9.2 (issue 15) ---
    #: "none", or the directory the session process chroots to (with %h %u %U
    #: and ~ expanded for the user) before it becomes the user.
    chroot_directory: str = "none"

    # --- process generations (issue 16) ---
    #: 9 or 10; 0 until ServerConfig.global_options fills in the default
    process_generation: int = 0
    privsep_user: str = "privsep-sshd"
    privsep_dir: str = "/run/privsep-sshd"
    pam_service: str = "privsep-sshd"

    def finish(self) -> "ServerOptions":
        """Fill in the defaults that depend on what was set (ports, keys...)."""
        return _finish(self)

    def subsystems(self) -> dict[str, str]:
        """Subsystem name -> command."""
        return dict(self.subsystem)

    def auth_methods(self) -> list[str]:
        """The methods offered, in OpenSSH's order."""
        methods = []
        if self.pubkey_authentication:
            methods.append("publickey")
        if self.password_authentication:
            methods.append("password")
        if self.kbd_interactive_authentication and self.use_pam:
            methods.append("keyboard-interactive")
        if self.hostbased_authentication:
            methods.append("hostbased")
        return methods


# --- parsing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One keyword line, kept with where it came from."""

    keyword: Keyword
    value: object
    where: str


@dataclass(frozen=True)
class MatchBlock:
    criteria: tuple[tuple[str, str], ...]  # (criterion, pattern list)
    settings: tuple[Setting, ...]
    where: str


@dataclass
class ServerConfig:
    """A parsed configuration: global settings and Match blocks."""

    settings: list[Setting] = field(default_factory=list)
    matches: list[MatchBlock] = field(default_factory=list)
    #: -p was given: the file's Port lines are not read (sshd's
    #: ports_from_cmdline; -o Port lines add to the file's, as other lists)
    ports_from_cmdline: bool = False
    #: ProcessGeneration when the file does not set it: the listener sets it
    #: from the OpenSSH installed on the machine (listener/generation.py).
    default_generation: int = 9

    def global_options(self) -> ServerOptions:
        options = ServerOptions()
        _apply(options, self.settings, set())
        _finish(options)
        if not options.process_generation:
            options.process_generation = self.default_generation
        check_auth_options(options)
        return options

    def options_for(self, conn: ConnectionInfo) -> ServerOptions:
        """The global options with every matching Match block applied on top."""
        options = self.global_options()
        overrides = ServerOptions()
        seen: set[str] = set()
        for block in self.matches:
            if criteria_match(block.criteria, conn):
                _apply(overrides, list(block.settings), seen)
        for name in seen:
            keyword = KEYWORDS[name]
            setattr(options, keyword.attr, getattr(overrides, keyword.attr))
        return options


def _apply(options: ServerOptions, settings: list[Setting], seen: set[str]) -> None:
    """First value wins; list keywords accumulate (all their lines count)."""
    for setting in settings:
        key = setting.keyword.name.lower()
        if setting.keyword.multi:
            current = getattr(options, setting.keyword.attr)
            if key not in seen:
                current = type(current)()
            if isinstance(current, dict):
                for name, value in setting.value.items():  # type: ignore[union-attr]
                    current.setdefault(name, value)
            else:
                current.extend(setting.value)  # type: ignore[arg-type]
            setattr(options, setting.keyword.attr, current)
        elif key not in seen:
            setattr(options, setting.keyword.attr, setting.value)
        seen.add(key)


def _finish(options: ServerOptions) -> ServerOptions:
    if not options.port:
        options.port = [facts.DEFAULT_PORT]
    if not options.listen_address:
        options.listen_address = {"inet": ["0.0.0.0"], "inet6": ["::"]}.get(
            options.address_family, ["0.0.0.0", "::"])
    if not options.host_key:
        options.host_key = list(facts.DEFAULT_HOST_KEYS)
    if not options.authorized_keys_file:
        options.authorized_keys_file = [".ssh/authorized_keys", ".ssh/authorized_keys2"]
    return options


def check_auth_options(options: ServerOptions) -> None:
    """sshd's checks at start on the key commands and AuthenticationMethods
    (issue 14): raises ConfigError with its words."""
    for command, user in (("AuthorizedKeysCommand", "authorized_keys"),
                          ("AuthorizedPrincipalsCommand", "authorized_principals")):
        if (getattr(options, f"{user}_command") != "none"
                and getattr(options, f"{user}_command_user") == "none"):
            raise ConfigError(f"{command} set without {command}User")
    error = authmethods.start_error(options.authentication_methods, options.auth_methods())
    if error:
        raise ConfigError(error)


def _split(line: str, where: str) -> list[str]:
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        lexer.escape = ""  # sshd_config has no backslash escapes outside quotes
        return list(lexer)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


MATCH_CRITERIA = ("user", "group", "host", "address", "localaddress", "localport", "rdomain",
                  "all")


def _check_criterion(name: str, pattern: str, where: str) -> None:
    """What sshd refuses when it reads a Match line, in its words."""
    if name in ("address", "localaddress") and addr_match_list(None, pattern) != 0:
        # sshd names the line but not the file here
        raise ConfigError(f"Invalid Match {name} argument '{pattern}' at line "
                          f"{where.rsplit(' line ', 1)[-1]}")
    if name == "localport" and parse_port(pattern) is None:
        raise _bad_match(f"Invalid LocalPort '{pattern}' on Match line", where)


def _bad_match(reason: str, where: str) -> ConfigError:
    """sshd's two lines for a Match line it cannot use: the reason alone,
    then the file and line with "Bad Match condition"."""
    return ConfigError(f"{reason}\n{where}: Bad Match condition")


def _parse_match(words: list[str], where: str) -> tuple[tuple[str, str], ...]:
    if not words:
        raise ConfigError(f"{where}: Match: missing criteria")
    if [w.lower() for w in words] == ["all"]:
        return (("all", ""),)
    criteria = []
    pairs = iter(words)
    for criterion in pairs:
        name = criterion.lower()
        if name == "all":
            raise _bad_match("'all' cannot be combined with other Match attributes", where)
        if name not in MATCH_CRITERIA:
            raise _bad_match(f"Unsupported Match attribute {criterion}", where)
        pattern = next(pairs, None)
        if pattern is None:
            raise _bad_match(f"Missing Match criteria for {criterion}", where)
        _check_criterion(name, pattern, where)
        criteria.append((name, pattern))
    return tuple(criteria)


class _Parser:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.block: tuple[tuple[tuple[str, str], ...], list[Setting], str] | None = None
        #: the errors after which sshd reads on (servconf.c's bad_options),
        #: written together at the end with "terminating, N bad configuration options"
        self.counted: list[str] = []

    def _count(self, message: str, where: str) -> None:
        """An error sshd counts and reads past in a file; on the command
        line (-o) it stops at once, as sshd does."""
        if where == CMDLINE:
            raise ConfigErrorExit1(message)
        self.counted.append(message)

    def line(self, text: str, where: str, depth: int) -> None:
        words = _split(text, where)
        if not words:
            return
        head, args = words[0], words[1:]
        if "=" in head:  # Keyword=value
            head, first = head.split("=", 1)
            args = ([first] if first else []) + args
        name = ALIASES.get(head.lower(), head.lower())
        if name in ("include", "match") and args and where == CMDLINE:
            raise ConfigError(f"{head.capitalize()} directive not supported as a "
                              "command-line option")
        if not args:  # sshd checks this before it looks at the keyword
            self._count(f'{where}: no argument after keyword "{head}"', where)
            return
        if name == "include":
            for pattern in args:
                self.include(pattern, where, depth)
            return
        if name == "match":
            self.close_block()
            self.block = (_parse_match(args, where), [], where)
            return
        if name in UNSUPPORTED:
            log.error("%s: Unsupported option %s", where, head)
            return
        if name in otherkeys.DEPRECATED or name in otherkeys.IGNORED:
            (log.debug if name in otherkeys.IGNORED else log.info)(
                "%s: Deprecated option %s", where, head)
            return
        keyword = KEYWORDS.get(name)
        if keyword is None:
            # sshd's only "file: line N:" form; -o lines are its line 0
            file, _, number = where.rpartition(" line ")
            self._count(f"{file}: line {number}: Bad configuration option: {head}", where)
            return
        if self.block is not None and not keyword.in_match:
            raise ConfigError(f"{where}: Directive '{head}' is not allowed within a "
                              "Match block")
        try:
            value = keyword.parse(args)
        except v.ExtraArguments:
            self._count(f"{where}: keyword {head} extra arguments at end of line", where)
            return
        except v.WholeLine as exc:
            raise ConfigError(str(exc)) from None
        except v.KeywordError as exc:
            raise ConfigError(f"{where}: {head} {exc}") from None
        except v.SshdError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: {keyword.name}: {exc}") from None
        if otherkeys.unavailable(keyword.attr, value):
            log.error("%s: Unsupported option %s", where, head)
        if name == "subsystem":
            self._check_subsystem(next(iter(value)), where)  # type: ignore[call-overload]
        setting = Setting(keyword, value, where)
        if self.block is not None:
            self.block[1].append(setting)
        elif name == "port" and self.config.ports_from_cmdline and where != CMDLINE:
            return  # -p replaces the file's ports
        else:
            self.config.settings.append(setting)

    def _check_subsystem(self, subsystem: str, where: str) -> None:
        """sshd's fatal() for a subsystem named twice, on the command line
        (-o, read first) or in the files."""
        for setting in self.config.settings:
            named = setting.value if setting.keyword.name == "Subsystem" else {}
            if subsystem in named:  # type: ignore[operator]
                raise ConfigError(f"{where}: Subsystem '{subsystem}' already defined.")

    def close_block(self) -> None:
        if self.block is not None:
            criteria, settings, where = self.block
            self.config.matches.append(MatchBlock(criteria, tuple(settings), where))
            self.block = None

    def include(self, pattern: str, where: str, depth: int) -> None:
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{where}: Include nested too deeply")
        path = pattern if os.path.isabs(pattern) else os.path.join(facts.CONFIG_DIR, pattern)
        # sshd's glob: a pattern that matches nothing is skipped, whether or
        # not it has wildcards (its debug2 "no match")
        found = sorted(glob.glob(path))
        for name in found:
            self.file(name, depth + 1)

    def file(self, path: str, depth: int = 0) -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except IsADirectoryError:  # sshd's fopen() opens it and its getline() reads nothing
            lines = []
        except OSError as exc:  # sshd's perror() and exit(1)
            error = ConfigErrorExit1(f"{path}: {exc.strerror}")
            error.on_stderr = True
            raise error from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        for n, text in enumerate(lines, 1):
            self.line(text, f"{path} line {n}", depth)
        # A Match block ends at the end of the file that opened it only at
        # top level; OpenSSH carries it into the rest of an including file,
        # so do the same by leaving it open for nested includes.
        if depth == 0:
            self.close_block()


def parse_config(path: str | None, overrides: list[str],
                 before_file: Callable[[], None] | None = None,
                 ports_from_cmdline: bool = False) -> ServerConfig:
    """Command-line ``-o`` lines first, then the file (or the default one
    if it exists).  ``before_file`` runs between the two, where sshd
    redirects its log (-E); it may raise ConfigError.  ``ports_from_cmdline``:
    -p was given, the file's Port lines are skipped."""
    config = ServerConfig(ports_from_cmdline=ports_from_cmdline)
    parser = _Parser(config)
    try:
        for text in overrides:
            parser.line(text, CMDLINE, 0)
        parser.close_block()
    except ConfigError as exc:
        exc.on_stderr = True
        raise
    if before_file is not None:
        before_file()
    file = path or facts.DEFAULT_CONFIG
    if file.lower() == "none":  # sshd -f none: no file at all
        return config
    if path is not None or os.path.exists(file):
        try:
            parser.file(file)
        except ConfigError as exc:  # sshd's fatal(), after the errors it counted
            error = type(exc)("\n".join([*parser.counted, str(exc)]))
            error.on_stderr = exc.on_stderr
            raise error from None
        if parser.counted:
            raise ConfigError("\n".join([*parser.counted, f"{file}: terminating, "
                                          f"{len(parser.counted)} bad configuration options"]))
    return config


def load(path: str | None, overrides: list[str]) -> ServerOptions:
    """The global options (no Match applied)."""
    return parse_config(path, overrides).global_options()


# --- sshd -T ------------------------------------------------------------------------


def _dump_value(keyword: Keyword, value: object, options: ServerOptions) -> list[str]:
    dumper = otherkeys.DUMP.get(keyword.attr) or penalties.DUMP.get(keyword.attr)
    if dumper is not None:
        return dumper(value)
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if keyword.attr == "permit_root_login":
        return ["without-password" if value == "prohibit-password" else str(value)]
    if keyword.attr == "listen_address":
        lines = []
        for entry in value:  # type: ignore[union-attr]
            addr, own = v.split_listen_address(entry)
            for port in [own] if own else options.port:
                lines.append(f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}")
        return lines
    if keyword.attr == "stream_local_bind_mask":
        return [f"{value:04o}"]  # as sshd -T prints it (%04o)
    if keyword.attr == "max_startups":
        return [":".join(str(v) for v in value)]  # type: ignore[union-attr]
    if keyword.attr == "rekey_limit":
        return [f"{value[0]} {value[1]}"]  # type: ignore[index]
    if keyword.attr in ("ciphers", "macs", "kex_algorithms", "host_key_algorithms",
                        "pubkey_accepted_algorithms", "ca_signature_algorithms"):
        return [",".join(value)]  # type: ignore[arg-type]
    if keyword.attr in ("authorized_keys_file", "permit_open"):
        return [" ".join(value)]  # type: ignore[arg-type]
    if keyword.attr == "authentication_methods":
        return [" ".join(value)]  # type: ignore[arg-type]
    if keyword.attr == "pubkey_auth_options":
        return [" ".join(value) or "none"]  # type: ignore[arg-type]
    if keyword.attr == "subsystem":
        return [f"{name} {command}" for name, command in value.items()]  # type: ignore[union-attr]
    if isinstance(value, list):  # one line per value, as sshd -T prints them
        return [str(v) for v in value]
    return [str(value)]


def dump(options: ServerOptions) -> str:
    """The effective configuration in ``sshd -T``'s form: lower-case keywords."""
    lines = []
    for keyword in KEYWORD_LIST:
        if not penalties.shown(keyword.attr, options.process_generation):
            continue  # sshd 9.2 has no such keyword
        value = getattr(options, keyword.attr)
        if isinstance(value, (list, dict)) and not value:
            continue
        for text in _dump_value(keyword, value, options):
            lines.append(f"{keyword.name.lower()} {text}")
    return "\n".join(lines) + "\n"


def replace(options: ServerOptions, **changes) -> ServerOptions:
    return dataclasses.replace(options, **changes)
