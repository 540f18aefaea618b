"""The sshd 9.2 keywords beyond the core table (issue 15): access and
limits, X11, IPQoS, fingerprints, hostbased, GSSAPI and Kerberos, LogVerbose,
Debian's DebianBanner.  Pure: parsers, defaults and ``-T`` formats.

servconf.py builds its Keyword rows from ``KEYWORD_ROWS`` and ServerOptions
inherits ``OtherOptions``; this keeps servconf under the module size cap
while the other issues add their own sections.  Errors are ``SshdError``:
sshd's own words after "FILE line N: ".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

from privsep.config.match import match_pattern_list
from privsep.config.values import SshdError, parse_time

#: IPQoS's "none": leave the socket's TOS alone (sshd uses INT_MAX too,
#: since 0 is cs0).
IPQOS_NONE = 2**31 - 1
IPQOS_NAMES: dict[str, int] = {
    "none": IPQOS_NONE,
    "af11": 0x28, "af12": 0x30, "af13": 0x38, "af21": 0x48, "af22": 0x50, "af23": 0x58,
    "af31": 0x68, "af32": 0x70, "af33": 0x78, "af41": 0x88, "af42": 0x90, "af43": 0x98,
    **{f"cs{i}": i << 5 for i in range(8)},
    "ef": 0xb8, "le": 0x04,
    "lowdelay": 0x10, "throughput": 0x08, "reliability": 0x04,
}
#: FingerprintHash's names, as ssh_digest_alg_by_name knows them (any case).
FINGERPRINT_HASHES = ("MD5", "SHA1", "SHA256", "SHA384", "SHA512")
#: sshd 9.2's default HostbasedAcceptedAlgorithms (its KEX_DEFAULT_PK_ALG).
_BASE_KEY_ALGS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                  "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512", "rsa-sha2-256")
DEFAULT_KEY_ALGS = tuple(
    (a[:-12] if a.endswith("@openssh.com") else a) + "-cert-v01@openssh.com"
    for a in _BASE_KEY_ALGS) + _BASE_KEY_ALGS
#: Every key type name sshd 9.2 accepts in a list (sshkey_names_valid2).
KNOWN_KEY_ALGS = frozenset(DEFAULT_KEY_ALGS) | {
    "ssh-rsa", "ssh-dss", "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com"}
#: Debian's GSSAPI key exchange methods; the default is all but group1.
GSS_KEX = ("gss-group14-sha256-", "gss-group16-sha512-", "gss-nistp256-sha256-",
           "gss-curve25519-sha256-", "gss-group14-sha1-", "gss-gex-sha1-")
GSS_KEX_KNOWN = frozenset(GSS_KEX) | {"gss-group1-sha1-"}

#: Keywords sshd 9.2 logs as deprecated ("Deprecated option X") and skips;
#: "Protocol" is silently ignored (logged at DEBUG2).
DEPRECATED = frozenset((
    "pamauthenticationviakbdint", "serverkeybits", "keyregenerationinterval",
    "rhostsauthentication", "rhostsrsaauthentication", "rsaauthentication", "checkmail",
    "uselogin", "verifyreversemapping", "reversemappingcheck", "authorizedkeysfile2",
    "useprivilegeseparation"))
IGNORED = frozenset(("protocol",))
ALIASES = {"hostbasedacceptedkeytypes": "hostbasedacceptedalgorithms",
           "hostdsakey": "hostkey", "dsaauthentication": "pubkeyauthentication",
           "skeyauthentication": "kbdinteractiveauthentication", "keepalive": "tcpkeepalive"}


# --- parsers (each takes the words after the keyword; never empty) ----------------


def _single(words: list[str], keyword: str) -> str:
    if len(words) > 1:
        raise SshdError(f"keyword {keyword} extra arguments at end of line")
    return words[0]


def _flag(keyword: str, states: tuple[str, ...] = ("yes", "no")) -> Callable:
    def parse(words: list[str]) -> object:
        arg = _single(words, keyword).lower()
        if arg not in states:
            raise SshdError(f'unsupported option "{words[0]}".')
        return arg == "yes" if states == ("yes", "no") else arg
    return parse


def _atoi(keyword: str, text: str) -> int:
    """sshd's atoi_err: a whole decimal number within int's range."""
    if not re.fullmatch(r"\s*[+-]?\d+", text):
        raise SshdError(f"{keyword} integer value invalid.")
    value = int(text)
    if value < 0:
        raise SshdError(f"{keyword} integer value too small.")
    if value > 2**31 - 1:
        raise SshdError(f"{keyword} integer value too large.")
    return value


def _int(keyword: str) -> Callable:
    return lambda words: _atoi(keyword, _single(words, keyword))


def _path(keyword: str, keep: str) -> Callable:
    """A file name, made absolute against the working directory as sshd's
    derelativise_path does; ``keep`` (and "none") stay as written."""
    def parse(words: list[str]) -> str:
        arg = _single(words, keyword)
        if arg.lower() in ("none", keep.lower()):
            return arg
        return os.path.abspath(os.path.expanduser(arg))
    return parse


def _text(keyword: str) -> Callable:
    return lambda words: _single(words, keyword)


def permit_tunnel(words: list[str]) -> str:
    arg = _single(words, "PermitTunnel")
    if arg not in ("no", "point-to-point", "ethernet", "yes"):  # case matters, as in sshd
        raise SshdError(f"bad PermitTunnel argument {arg}")
    return arg


def per_source_max_startups(words: list[str]) -> int | None:
    arg = _single(words, "PerSourceMaxStartups")
    return None if arg == "none" else _atoi("PerSourceMaxStartups", arg)


def per_source_netblock_size(words: list[str]) -> tuple[int, int]:
    """sshd reads it with sscanf("%d:%d"): "24" and "24:" leave IPv6 at 0."""
    arg = _single(words, "PerSourceNetBlockSize")
    found = re.match(r"\s*([+-]?\d+)(?::\s*([+-]?\d+))?", arg)
    v4 = int(found.group(1)) if found else -1
    v6 = int(found.group(2)) if found and found.group(2) else 0
    if not (0 <= v4 <= 32 and 0 <= v6 <= 128):
        raise SshdError("Invalid PerSourceNetBlockSize spec.")
    return (v4, v6)


def unused_connection_timeout(words: list[str]) -> int:
    arg = _single(words, "UnusedConnectionTimeout")
    if arg.lower() == "none":
        return 0
    try:
        return parse_time(arg)
    except ValueError:
        raise SshdError("invalid time value.") from None


def _ipqos_value(text: str) -> int:
    value = IPQOS_NAMES.get(text.lower())
    if value is not None:
        return value
    try:
        number = int(text, 0)  # strtol(..., 0): decimal, 0x hex, 0 octal
    except ValueError:
        number = -1
    if not 0 <= number <= 255:
        raise SshdError(f"Bad IPQoS value: {text}")
    return number


def ipqos(words: list[str]) -> tuple[int, int]:
    """Interactive and bulk TOS; one value sets both."""
    if len(words) > 2:
        raise SshdError("keyword IPQoS extra arguments at end of line")
    interactive = _ipqos_value(words[0])
    return (interactive, _ipqos_value(words[1]) if len(words) == 2 else interactive)


def ipqos_name(value: int) -> str:
    """sshd's iptos2str: the first name for the value, else 0xNN."""
    return next((n for n, v in IPQOS_NAMES.items() if v == value), f"0x{value:02x}")


def fingerprint_hash(words: list[str]) -> str:
    arg = _single(words, "FingerprintHash")
    if arg.upper() not in FINGERPRINT_HASHES:
        raise SshdError(f'Invalid FingerprintHash algorithm "{arg}".')
    return arg.upper()


def _timeouts(keyword: str, check: bool) -> Callable:
    """ChannelTimeout (type=time pairs) and LogVerbose: "none" only alone."""
    def parse(words: list[str]) -> list[str]:
        if any(w.lower() == "none" for w in words):
            if len(words) > 1:
                raise SshdError(f'keyword {keyword} "none" argument must appear alone.')
            return []
        for word in words:
            kind, sep, time = word.partition("=")
            try:
                if check:
                    if not kind or not sep:
                        raise ValueError
                    parse_time(time)
            except ValueError:
                raise SshdError(f"invalid channel timeout {word}") from None
        return list(words)
    return parse


def hostbased_algorithms(words: list[str]) -> list[str]:
    """OpenSSH's +/-/^ list against sshd's default; names must be key types."""
    spec = _single(words, "HostbasedAcceptedAlgorithms")
    body = spec[1:] if spec[:1] in "+-^" else spec
    names = body.split(",")
    if spec[:1] != "-" and not all(n in KNOWN_KEY_ALGS for n in names):
        raise SshdError(f"Bad key types '{spec}'.")
    default = list(DEFAULT_KEY_ALGS)
    if spec[:1] == "+":
        return default + [n for n in names if n not in default]
    if spec[:1] == "-":
        return [a for a in default if not match_pattern_list(a, body)]
    if spec[:1] == "^":
        return names + [a for a in default if a not in names]
    return names


def gss_kex(words: list[str]) -> list[str]:
    spec = _single(words, "GSSAPIKexAlgorithms")
    names = spec.split(",")
    if not all(n in GSS_KEX_KNOWN for n in names):
        raise SshdError(f"Bad GSSAPI KexAlgorithms '{spec}'.")
    return names


def rdomain(words: list[str]) -> None:
    """Linux routing domains (VRFs) are not built into Debian's sshd either."""
    raise SshdError("setting RDomain not supported on this platform.")


# --- the table ----------------------------------------------------------------------

#: (name, attr, parser, multi, in_match), in sshd's keyword-table order.
KEYWORD_ROWS: list[tuple[str, str, Callable, bool, bool]] = [
    ("HostKeyAgent", "host_key_agent", _path("HostKeyAgent", "SSH_AUTH_SOCK"), False, False),
    ("LogVerbose", "log_verbose", _timeouts("LogVerbose", False), False, True),
    ("HostbasedAuthentication", "hostbased_authentication",
     _flag("HostbasedAuthentication"), False, True),
    ("HostbasedUsesNameFromPacketOnly", "hostbased_uses_name_from_packet_only",
     _flag("HostbasedUsesNameFromPacketOnly"), False, True),
    ("HostbasedAcceptedAlgorithms", "hostbased_accepted_algorithms", hostbased_algorithms,
     False, True),
    ("KerberosAuthentication", "kerberos_authentication", _flag("KerberosAuthentication"),
     False, True),
    ("KerberosOrLocalPasswd", "kerberos_or_local_passwd", _flag("KerberosOrLocalPasswd"),
     False, False),
    ("KerberosTicketCleanup", "kerberos_ticket_cleanup", _flag("KerberosTicketCleanup"),
     False, False),
    ("GSSAPIAuthentication", "gssapi_authentication", _flag("GSSAPIAuthentication"),
     False, True),
    ("GSSAPICleanupCredentials", "gssapi_cleanup_credentials",
     _flag("GSSAPICleanupCredentials"), False, False),
    ("GSSAPIStrictAcceptorCheck", "gssapi_strict_acceptor_check",
     _flag("GSSAPIStrictAcceptorCheck"), False, False),
    ("GSSAPIKeyExchange", "gssapi_key_exchange", _flag("GSSAPIKeyExchange"), False, False),
    ("GSSAPIStoreCredentialsOnRekey", "gssapi_store_credentials_on_rekey",
     _flag("GSSAPIStoreCredentialsOnRekey"), False, False),
    ("GSSAPIKexAlgorithms", "gssapi_kex_algorithms", gss_kex, False, False),
    ("IgnoreRhosts", "ignore_rhosts", _flag("IgnoreRhosts", ("yes", "no", "shosts-only")),
     False, True),
    ("IgnoreUserKnownHosts", "ignore_user_known_hosts", _flag("IgnoreUserKnownHosts"),
     False, False),
    ("X11DisplayOffset", "x11_display_offset", _int("X11DisplayOffset"), False, True),
    ("X11UseLocalhost", "x11_use_localhost", _flag("X11UseLocalhost"), False, True),
    ("XAuthLocation", "xauth_location", _path("XAuthLocation", "none"), False, False),
    ("PerSourceMaxStartups", "per_source_max_startups", per_source_max_startups,
     False, False),
    ("PerSourceNetBlockSize", "per_source_netblock_size", per_source_netblock_size,
     False, False),
    ("PermitTunnel", "permit_tunnel", permit_tunnel, False, True),
    ("PermitUserRC", "permit_user_rc", _flag("PermitUserRC"), False, True),
    ("ChrootDirectory", "chroot_directory", _text("ChrootDirectory"), False, True),
    ("IPQoS", "ip_qos", ipqos, False, True),
    ("FingerprintHash", "fingerprint_hash", fingerprint_hash, False, False),
    ("RDomain", "rdomain", rdomain, False, True),
    ("SecurityKeyProvider", "security_key_provider",
     _path("SecurityKeyProvider", "internal"), False, False),
    ("ChannelTimeout", "channel_timeout", _timeouts("ChannelTimeout", True), False, True),
    ("UnusedConnectionTimeout", "unused_connection_timeout", unused_connection_timeout,
     False, True),
    ("DebianBanner", "debian_banner", _flag("DebianBanner"), False, False),
]


@dataclass
class OtherOptions:
    """The values of KEYWORD_ROWS, with sshd 9.2's (Debian's) defaults."""

    host_key_agent: str = "none"
    log_verbose: list[str] = field(default_factory=list)
    hostbased_authentication: bool = False
    hostbased_uses_name_from_packet_only: bool = False
    hostbased_accepted_algorithms: list[str] = field(
        default_factory=lambda: list(DEFAULT_KEY_ALGS))
    kerberos_authentication: bool = False
    kerberos_or_local_passwd: bool = True
    kerberos_ticket_cleanup: bool = True
    gssapi_authentication: bool = False
    gssapi_cleanup_credentials: bool = True
    gssapi_strict_acceptor_check: bool = True
    gssapi_key_exchange: bool = False
    gssapi_store_credentials_on_rekey: bool = False
    gssapi_kex_algorithms: list[str] = field(default_factory=lambda: list(GSS_KEX))
    ignore_rhosts: str = "yes"
    ignore_user_known_hosts: bool = False
    x11_display_offset: int = 10
    x11_use_localhost: bool = True
    xauth_location: str = "/usr/bin/xauth"
    per_source_max_startups: int | None = None
    per_source_netblock_size: tuple[int, int] = (32, 128)
    permit_tunnel: str = "no"
    permit_user_rc: bool = True
    chroot_directory: str = "none"
    ip_qos: tuple[int, int] = (IPQOS_NAMES["lowdelay"], IPQOS_NAMES["throughput"])
    fingerprint_hash: str = "SHA256"
    rdomain: None = None
    security_key_provider: str = "internal"
    channel_timeout: list[str] = field(default_factory=list)
    unused_connection_timeout: int = 0
    debian_banner: bool = True


#: attr -> the ``-T`` text lines of its value, where not the generic form.
DUMP: dict[str, Callable[[object], list[str]]] = {
    "log_verbose": lambda v: [" ".join(v)],
    "channel_timeout": lambda v: [" ".join(v)],
    "hostbased_accepted_algorithms": lambda v: [",".join(v)],
    "gssapi_kex_algorithms": lambda v: [",".join(v)],
    "per_source_max_startups": lambda v: ["none" if v is None else str(v)],
    "per_source_netblock_size": lambda v: [f"{v[0]}:{v[1]}"],
    "ip_qos": lambda v: [f"{ipqos_name(v[0])} {ipqos_name(v[1])}"],
    "unused_connection_timeout": lambda v: [str(v) if v else "none"],
    "rdomain": lambda v: [],  # not printed: no routing domains on Linux builds
    "debian_banner": lambda v: [],  # Debian's sshd -T does not print it
}

#: Options that take effect nowhere here when turned on: logged as sshd logs
#: an option it was built without ("Unsupported option X").  README says why.
UNAVAILABLE = {
    "gssapi_authentication": lambda v: v is True,
    "gssapi_key_exchange": lambda v: v is True,
    "kerberos_authentication": lambda v: v is True,
}


def unavailable(attr: str, value: object) -> bool:
    """Whether this value asks for something this daemon does not provide."""
    check = UNAVAILABLE.get(attr)
    return check is not None and check(value)
