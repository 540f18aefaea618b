"""Algorithm lists, pure: what this daemon offers and the hand-off can carry,
in its order of preference; the names OpenSSH 9.2 knows (accepted in a
configuration, dropped when unsupported); and OpenSSH's +/-/^ list syntax."""

from __future__ import annotations

from privsep.config.match import match_pattern_list


#: OpenSSH 9.2's default host key and user key lists (Debian 12's ``sshd -T``),
#: in its order: certificates first, then plain keys.  A host key algorithm
#: is offered only when a key (or certificate) of that type is loaded, so
#: listing them all costs nothing and keeps ``-T`` equal.
_KEY_ALGORITHMS_92 = (
    *(f"{a}-cert-v01@openssh.com" for a in (
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519", "sk-ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")),
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512", "rsa-sha2-256",
)

#: EXT_INFO's server-sig-algs as sshd sends it (kex.c: every plain signature
#: algorithm its key table knows, in that table's order, whatever
#: PubkeyAcceptedAlgorithms says; Debian 12's build, read from ``ssh -v``).
#: OpenSSH 10 compiles DSA out, so generation 10 leaves ssh-dss off.
SERVER_SIG_ALGS_92 = (
    "ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ecdsa-sha2-nistp256@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss", "ssh-rsa", "rsa-sha2-256",
    "rsa-sha2-512",
)


def server_sig_algs(generation: int) -> str:
    """server-sig-algs for the imitated OpenSSH generation (9 or 10)."""
    return ",".join(a for a in SERVER_SIG_ALGS_92 if generation != 10 or a != "ssh-dss")


#: What this daemon offers when nothing is configured, in its order of
#: preference: OpenSSH 9.2's defaults (myproposal.h; Debian 12 also knows
#: sntrup761's IANA name; the umac MACs from libnettle, child/umac.py), and
#: mlkem768x25519-sha256 last, which OpenSSH 9.9 and later
#: prefer: a client's order decides, so the 9.2 client still gets sntrup761.
SUPPORTED_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ciphers": ("chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr",
                "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"),
    "macs": ("umac-64-etm@openssh.com", "umac-128-etm@openssh.com",
             "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
             "hmac-sha1-etm@openssh.com", "umac-64@openssh.com", "umac-128@openssh.com",
             "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1"),
    "kex": ("sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
            "curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
            "ecdh-sha2-nistp384", "ecdh-sha2-nistp521", "diffie-hellman-group-exchange-sha256",
            "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
            "diffie-hellman-group14-sha256", "mlkem768x25519-sha256"),
    "hostkey": _KEY_ALGORITHMS_92,
    "pubkey": _KEY_ALGORITHMS_92,
    # CASignatureAlgorithms (issue 14): what a CA may sign certificates with.
    "casig": ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
              "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512", "rsa-sha2-256"),
}

#: Offered only when the configuration names them (``Ciphers +aes128-cbc``,
#: ``KexAlgorithms +diffie-hellman-group14-sha1``), as sshd 9.2 does:
#: implemented, but not among the defaults.
CONFIGURABLE_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ciphers": ("aes128-cbc", "aes192-cbc", "aes256-cbc", "3des-cbc"),
    "macs": ("hmac-sha1-96", "hmac-md5", "hmac-md5-96", "hmac-sha1-96-etm@openssh.com",
             "hmac-md5-etm@openssh.com", "hmac-md5-96-etm@openssh.com"),
    "kex": ("diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1",
            "diffie-hellman-group-exchange-sha1"),
    "hostkey": ("ssh-dss",),
    "pubkey": ("ssh-dss",),
    # a CA's RSA signature with SHA-1 (ssh-keygen -s -t ssh-rsa)
    "casig": ("ssh-rsa",),
}


def implemented(kind: str) -> tuple[str, ...]:
    """Every name of ``kind`` this daemon can use: the defaults, then the
    configured-only ones."""
    return SUPPORTED_ALGORITHMS[kind] + CONFIGURABLE_ALGORITHMS.get(kind, ())


#: Every name OpenSSH 9.2 knows: accepted in a configuration, and dropped
#: from it when this daemon cannot use it (ssh-rsa).
OPENSSH_ALGORITHMS: dict[str, frozenset[str]] = {
    "ciphers": frozenset(implemented("ciphers")),
    "macs": frozenset(implemented("macs")),
    "kex": frozenset(implemented("kex")),
    "hostkey": frozenset(implemented("hostkey")) | {
        "ssh-rsa", "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com"},
}
OPENSSH_ALGORITHMS["pubkey"] = OPENSSH_ALGORITHMS["hostkey"] | {
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com"}
OPENSSH_ALGORITHMS["casig"] = OPENSSH_ALGORITHMS["pubkey"]


class UnknownAlgorithm(ValueError):
    """A name OpenSSH does not know in a list (sshd's "Bad SSH2 … spec")."""


def resolve_algorithms(kind: str, spec: str) -> list[str]:
    """OpenSSH's list syntax against our defaults: ``a,b`` replaces, ``+a``
    appends, ``-a*`` removes, ``^a`` puts first; names may be wildcards for
    ``-``.  Known-but-unsupported names drop out; unknown names are errors."""
    default = list(SUPPORTED_ALGORITHMS[kind])
    body = spec[1:] if spec[:1] in "+-^" else spec
    names = [n for n in body.split(",") if n]
    if not names:
        raise UnknownAlgorithm(f"empty algorithm list {spec!r}")
    for name in names:
        if spec[0] != "-" and name not in OPENSSH_ALGORITHMS[kind]:
            raise UnknownAlgorithm(f"Bad SSH2 {kind} spec '{spec}'")
    supported = [n for n in names if n in implemented(kind)]
    if spec[0] == "+":
        result = default + [n for n in supported if n not in default]
    elif spec[0] == "-":
        # match_filter_denylist(): the body is one OpenSSH pattern list.
        result = [a for a in default if not match_pattern_list(a, body)]
    elif spec[0] == "^":
        result = supported + [a for a in default if a not in supported]
    else:
        result = supported
    if not result:
        raise ValueError(f"no supported algorithm left in {spec!r}")
    return result
