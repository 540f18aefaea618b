"""Server configuration: sshd_config keywords, their defaults, -o overrides.

Keywords are case-insensitive and the first value obtained wins, as in
OpenSSH; ``-o`` options are read before the file so they win over it.  This
module is read by the root listener before anything is forked.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Callable

from privsep import hostkeys

DEFAULT_CONFIG = "/etc/privsep-sshd/sshd_config"


class ConfigError(ValueError):
    """A bad line; the message names file and line as sshd's does."""


def _yes_no(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("yes", "no"):
        raise ValueError(f"unsupported value {value!r} (yes or no)")
    return lowered == "yes"


def _time(value: str) -> int:
    """sshd time format: 90, 1m30s, 2h..."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total, number = 0, ""
    for ch in value.lower() + " ":
        if ch.isdigit():
            number += ch
        elif ch in units or ch == " ":
            if not number:
                if ch == " " and total:
                    break
                raise ValueError(f"invalid time value {value!r}")
            total += int(number) * units[ch.strip()]
            number = ""
        else:
            raise ValueError(f"invalid time value {value!r}")
    return total


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise ValueError(f"bad port number {value!r}")
    return port


@dataclass
class ServerOptions:
    port: list[int] = field(default_factory=list)
    listen_address: list[str] = field(default_factory=list)
    host_key: list[str] = field(default_factory=list)
    pid_file: str = "/run/privsep-sshd.pid"
    log_level: str = "INFO"
    syslog_facility: str = "AUTH"
    permit_root_login: str = "prohibit-password"
    pubkey_authentication: bool = True
    password_authentication: bool = True
    permit_empty_passwords: bool = False
    use_pam: bool = True
    authorized_keys_file: list[str] = field(default_factory=list)
    strict_modes: bool = True
    max_auth_tries: int = 6
    login_grace_time: int = 120
    max_startups: tuple[int, int, int] = (10, 30, 100)
    print_motd: bool = True
    privsep_user: str = "privsep-sshd"
    privsep_dir: str = "/run/privsep-sshd"
    pam_service: str = "privsep-sshd"
    ciphers: list[str] = field(default_factory=list)
    # --- the session (issue 4); OpenSSH's defaults unless said otherwise ---
    #: Debian's sshd_config accepts LANG and LC_* (filled in by finish()).
    accept_env: list[str] = field(default_factory=list)
    max_sessions: int = 10
    allow_tcp_forwarding: str = "yes"
    allow_stream_local_forwarding: str = "yes"
    allow_agent_forwarding: bool = True
    disable_forwarding: bool = False
    gateway_ports: str = "no"
    #: PermitOpen / PermitListen: empty means "any".
    permit_open: list[str] = field(default_factory=list)
    permit_listen: list[str] = field(default_factory=list)
    stream_local_bind_mask: int = 0o177
    stream_local_bind_unlink: bool = False
    #: "name command args", one per Subsystem line; Debian's sftp when none.
    subsystem: list[str] = field(default_factory=list)
    #: RekeyLimit: bytes (0: the cipher's default) and seconds (0: none).
    rekey_limit: tuple[int, int] = (0, 0)
    client_alive_interval: int = 0
    client_alive_count_max: int = 3
    #: Keywords already set, lower-case: the first value wins.
    seen: set[str] = field(default_factory=set, repr=False)
    #: Keywords given with -o/-p/-h, which the file cannot add to.
    from_cmdline: set[str] = field(default_factory=set, repr=False)

    def auth_methods(self) -> list[str]:
        methods = []
        if self.pubkey_authentication:
            methods.append("publickey")
        if self.password_authentication:
            methods.append("password")
        return methods or ["publickey"]

    def finish(self) -> "ServerOptions":
        """Fill in defaults that depend on nothing being set."""
        if not self.port:
            self.port = [2222]
        if not self.listen_address:
            self.listen_address = ["0.0.0.0", "::"]
        if not self.host_key:
            self.host_key = list(hostkeys.DEFAULT_HOST_KEYS)
        if not self.authorized_keys_file:
            self.authorized_keys_file = [".ssh/authorized_keys", ".ssh/authorized_keys2"]
        if "acceptenv" not in self.seen:
            self.accept_env = ["LANG", "LC_*"]
        if "subsystem" not in self.seen:
            self.subsystem = ["sftp /usr/lib/openssh/sftp-server"]
        return self

    def subsystems(self) -> dict[str, str]:
        """Subsystem name -> command; the first line for a name wins."""
        table: dict[str, str] = {}
        for line in self.subsystem:
            name, _, command = line.partition(" ")
            table.setdefault(name, command.strip())
        return table


def _max_startups(value: str) -> tuple[int, int, int]:
    parts = [int(p) for p in value.split(":")]
    if len(parts) == 1:
        return (parts[0], 100, parts[0])
    if len(parts) != 3 or not parts[0] <= parts[2] or not 0 < parts[1] <= 100:
        raise ValueError(f"invalid MaxStartups {value!r}")
    return (parts[0], parts[1], parts[2])


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.lower()
        if lowered not in allowed:
            raise ValueError(f"unsupported value {value!r}")
        return lowered
    return parse


def _forwarding(value: str) -> str:
    """AllowTcpForwarding/AllowStreamLocalForwarding: yes (= all), no, local, remote."""
    lowered = _choice("yes", "all", "no", "local", "remote")(value)
    return "yes" if lowered == "all" else lowered


def _size(value: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    lowered = value.lower()
    suffix = lowered[-1:] if lowered[-1:] in units else ""
    number = int(lowered[: len(lowered) - len(suffix)])
    if number < 0:
        raise ValueError(f"invalid size {value!r}")
    return number * units[suffix]


def _rekey_limit(value: str) -> tuple[int, int]:
    """RekeyLimit bytes|default [seconds|none]."""
    words = value.split()
    amount = 0 if words[0].lower() == "default" else _size(words[0])
    if amount and amount < 16:
        raise ValueError(f"RekeyLimit too small {value!r}")
    seconds = 0
    if len(words) > 1 and words[1].lower() != "none":
        seconds = _time(words[1])
    return (amount, seconds)


def _subsystem(value: str) -> str:
    name, _, command = value.partition(" ")
    if not command.strip():
        raise ValueError("missing subsystem command")
    return f"{name} {command.strip()}"


def _permit_root(value: str) -> str:
    lowered = value.lower()
    if lowered == "without-password":
        lowered = "prohibit-password"
    if lowered not in ("yes", "no", "prohibit-password", "forced-commands-only"):
        raise ValueError(f"unsupported PermitRootLogin {value!r}")
    return lowered


def _log_level(value: str) -> str:
    upper = value.upper()
    if upper not in ("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3"):
        raise ValueError(f"unsupported LogLevel {value!r}")
    return upper


# keyword -> (attribute, parser, repeatable: values accumulate)
KEYWORDS: dict[str, tuple[str, Callable[[str], object], bool]] = {
    "port": ("port", _port, True),
    "listenaddress": ("listen_address", str, True),
    "hostkey": ("host_key", str, True),
    "pidfile": ("pid_file", str, False),
    "loglevel": ("log_level", _log_level, False),
    "syslogfacility": ("syslog_facility", str.upper, False),
    "permitrootlogin": ("permit_root_login", _permit_root, False),
    "pubkeyauthentication": ("pubkey_authentication", _yes_no, False),
    "passwordauthentication": ("password_authentication", _yes_no, False),
    "permitemptypasswords": ("permit_empty_passwords", _yes_no, False),
    "usepam": ("use_pam", _yes_no, False),
    "authorizedkeysfile": ("authorized_keys_file", str, True),
    "strictmodes": ("strict_modes", _yes_no, False),
    "maxauthtries": ("max_auth_tries", int, False),
    "logingracetime": ("login_grace_time", _time, False),
    "maxstartups": ("max_startups", _max_startups, False),
    "printmotd": ("print_motd", _yes_no, False),
    "privilegeseparationuser": ("privsep_user", str, False),
    "privilegeseparationdirectory": ("privsep_dir", str, False),
    "ciphers": ("ciphers", lambda v: v.split(","), False),
    "acceptenv": ("accept_env", str, True),
    "maxsessions": ("max_sessions", int, False),
    "allowtcpforwarding": ("allow_tcp_forwarding", _forwarding, False),
    "allowstreamlocalforwarding": ("allow_stream_local_forwarding", _forwarding, False),
    "allowagentforwarding": ("allow_agent_forwarding", _yes_no, False),
    "disableforwarding": ("disable_forwarding", _yes_no, False),
    "gatewayports": ("gateway_ports", _choice("no", "yes", "clientspecified"), False),
    "permitopen": ("permit_open", str, True),
    "permitlisten": ("permit_listen", str, True),
    "streamlocalbindmask": ("stream_local_bind_mask", lambda v: int(v, 8), False),
    "streamlocalbindunlink": ("stream_local_bind_unlink", _yes_no, False),
    "subsystem": ("subsystem", _subsystem, True),
    "rekeylimit": ("rekey_limit", _rekey_limit, False),
    "clientaliveinterval": ("client_alive_interval", _time, False),
    "clientalivecountmax": ("client_alive_count_max", int, False),
}

#: Repeatable keywords whose whole line is one value ("Subsystem sftp cmd args").
WHOLE_LINE = {"subsystem"}


def apply_line(options: ServerOptions, line: str, where: str) -> None:
    """Apply one ``Keyword value...`` line; ConfigError names ``where``."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not words:
        return
    keyword, values = words[0].lower(), words[1:]
    if "=" in keyword:  # Keyword=value
        keyword, first = keyword.split("=", 1)
        values = [first, *values] if first else values
    if keyword not in KEYWORDS:
        raise ConfigError(f"{where}: Bad configuration option: {words[0]}")
    if not values:
        raise ConfigError(f"{where}: {words[0]}: missing argument")
    attribute, parse, repeatable = KEYWORDS[keyword]
    try:
        if keyword in WHOLE_LINE:
            parsed = [parse(" ".join(values))]
        else:
            parsed = [parse(v) for v in values] if repeatable else parse(" ".join(values))
    except ValueError as exc:
        raise ConfigError(f"{where}: {words[0]}: {exc}") from None
    if repeatable:
        # Command-line values replace the file's rather than add to them
        # (sshd -p ignores the file's Port lines); AuthorizedKeysFile's first
        # line is the whole list.
        if keyword in options.from_cmdline or (
                keyword in options.seen and attribute in ("authorized_keys_file", "permit_open",
                                                          "permit_listen")):
            return
        getattr(options, attribute).extend(parsed)
    elif keyword not in options.seen:
        setattr(options, attribute, parsed)
    options.seen.add(keyword)


def load(path: str | None, overrides: list[str]) -> ServerOptions:
    """Options from ``-o`` overrides first, then the file (if it exists or was named)."""
    options = ServerOptions()
    for n, line in enumerate(overrides, 1):
        apply_line(options, line.replace("=", " ", 1) if "=" in line.split()[0] else line,
                   f"command-line line {n}")
    options.from_cmdline = set(options.seen)
    file = path or DEFAULT_CONFIG
    try:
        with open(file, encoding="utf-8") as handle:
            for n, line in enumerate(handle, 1):
                apply_line(options, line, f"{file} line {n}")
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"{file}: No such file or directory") from None
    return options.finish()
