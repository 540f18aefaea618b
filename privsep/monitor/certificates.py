"""User certificates and revoked keys: the monitor's decisions, in the
order and the words of sshd 9.2 (auth2-pubkey.c, auth2-pubkeyfile.c,
auth-options.c, auth.c).

* ``check_certificate``: the CA's signature (CASignatureAlgorithms), then
  whether a trust source takes the certificate: a ``cert-authority`` line in
  authorized_keys (with ``principals=``), or ``TrustedUserCAKeys`` with
  ``AuthorizedPrincipalsFile`` (or, without one, the user's name as a
  principal); validity interval, principals, critical options
  (force-command, source-address, verify-required) and extensions.
* ``revocation_refusal``: RevokedKeys, a KRL or a plain key list.

What a certificate permits reaches the session as key options
(``session_options``), so that the session process enforces them exactly as
it enforces an authorized_keys line's: each permit-* extension missing
becomes a ``no-*`` option after the line's own, force-command a ``command=``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import pwd
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from privsep.common.ids import user_rights
from privsep.common.log import VERBOSE
from privsep.config.match import match_host_and_ip
from privsep.monitor import authorized_keys, pubkey
from privsep.monitor.authorized_keys import AuthorizedKey
from privsep.wire import certs, krl
from privsep.wire.certs import Certificate
from privsep.wire.keyoptions import KeyOption, key_expired, parse_key_options

log = logging.getLogger("privsep.monitor")

#: The most of a RevokedKeys, TrustedUserCAKeys or principals file read.
MAX_LIST_BYTES = 16 * 1024 * 1024

#: Extension -> the key option capability it grants (auth-options.c).
PERMIT_EXTENSIONS = {
    "permit-pty": "pty",
    "permit-port-forwarding": "port-forwarding",
    "permit-agent-forwarding": "agent-forwarding",
    "permit-X11-forwarding": "x11-forwarding",
    "permit-user-rc": "user-rc",
}
_CRITICAL = ("force-command", "source-address", "verify-required")


class Refused(Exception):
    """The certificate is not accepted here; the message is sshd's reason."""


@dataclass(frozen=True)
class CertOptions:
    """A certificate's critical options and extensions (sshauthopt_from_cert)."""

    force_command: str | None
    source_address: str | None
    verify_required: bool
    no_touch_required: bool
    permits: frozenset[str]


def describe(cert: Certificate, keyblob: bytes) -> str:
    """The key part of sshd's "Accepted publickey" line for a certificate:
    "ED25519-CERT SHA256:... ID x (serial 7) CA ED25519 SHA256:..."."""
    ca_label = pubkey.key_label(certs.plain_type(_blob_type(cert.signature_key)))
    return (f"{pubkey.key_label(cert.cert_type_name)} {pubkey.fingerprint(keyblob)} "
            f"ID {cert.key_id} (serial {cert.serial}) "
            f"CA {ca_label} {pubkey.fingerprint(cert.signature_key)}")


def key_detail(keyblob: bytes) -> str:
    """What follows "ssh2" in sshd's auth_log line for a key: ": ED25519
    SHA256:...", or a certificate's description; "" for a blob that is not
    a key (format_method_key)."""
    try:
        keytype = pubkey.public_blob_type(keyblob)
        if certs.is_cert_type(keytype):
            return ": " + describe(certs.parse_certificate(keyblob), keyblob)
        return f": {pubkey.key_label(keytype)} {pubkey.fingerprint(keyblob)}"
    except ValueError:
        return ""


def _blob_type(blob: bytes) -> str:
    try:
        return pubkey.public_blob_type(blob)
    except ValueError:
        return ""


def ca_signature_bad(cert: Certificate) -> bool:
    """Whether the CA's signature over the certificate fails to verify
    (sshd finds it as it decodes the blob: "incorrect signature")."""
    return pubkey.verify_signature(cert.signature_key, cert.signed_data, cert.signature,
                                   (cert.signature_type,)) is None


def ca_algorithm_refused(cert: Certificate, ca_algorithms: Sequence[str]) -> bool:
    """Whether the CA signed with an algorithm CASignatureAlgorithms leaves
    out (sshkey_check_cert_sigtype)."""
    return cert.signature_type not in ca_algorithms


def ca_signature_refusal(cert: Certificate, ca_algorithms: Sequence[str]) -> str | None:
    """Whether the CA's signature is usable: its algorithm listed in
    CASignatureAlgorithms, and the signature good over the certificate.
    sshd finds both in its net-child, so its lines end in " [preauth]"."""
    if ca_algorithm_refused(cert, ca_algorithms):
        return (f"userauth_pubkey: certificate signature algorithm {cert.signature_type}: "
                "signature algorithm not supported [preauth]")
    if ca_signature_bad(cert):
        return "userauth_pubkey: parse key: incorrect signature [preauth]"
    return None


def cert_options(cert: Certificate) -> CertOptions:
    """The critical options and extensions; Refused("Invalid certificate
    options") for an unknown critical option or a malformed value, as sshd."""
    values: dict[str, str] = {}
    for name, data in cert.critical_options:
        if name not in _CRITICAL:
            log.error('Certificate critical option "%s" is not supported', name)
            raise Refused("Invalid certificate options")
        try:
            values[name] = "" if name == "verify-required" else certs.option_string(data)
        except ValueError:
            log.error('Unable to parse "%s" section', name)
            raise Refused("Invalid certificate options") from None
        if name == "verify-required" and data:
            log.error('Certificate option "%s" corrupt (extra data)', name)
            raise Refused("Invalid certificate options")
    source = values.get("source-address")
    if source is not None and addr_match_cidr_list(None, source) == -1:
        log.error("Certificate source-address contents invalid")
        raise Refused("Invalid certificate options")
    permits, no_touch = set(), False
    for name, data in cert.extensions:
        if name in PERMIT_EXTENSIONS or name == "no-touch-required":
            if data:
                log.error('Certificate option "%s" corrupt (extra data)', name)
                raise Refused("Invalid certificate options")
            if name == "no-touch-required":
                no_touch = True
            else:
                permits.add(PERMIT_EXTENSIONS[name])
        else:
            log.info('Certificate extension "%s" is not supported', name)
    return CertOptions(values.get("force-command"), source, "verify-required" in values,
                       no_touch, frozenset(permits))


def addr_match_cidr_list(addr: str | None, text: str) -> int:
    """OpenSSH's addr_match_cidr_list: 1 if ``addr`` is in one of the
    comma-separated CIDR blocks, 0 if not, -1 if the list is malformed
    (no wildcards, no negation; with ``addr`` None only the form is checked)."""
    try:
        networks = [ipaddress.ip_network(entry, strict=True) for entry in text.split(",")]
    except ValueError:
        return -1
    if addr is None:
        return 0
    try:
        address = ipaddress.ip_address(addr)
    except ValueError:
        return 0
    return 1 if any(address in network for network in networks) else 0


def _authorise_source(opts: CertOptions, loc: str, user: str, addr: str) -> None:
    """source-address, as auth_authorise_keyopts() checks it."""
    if opts.source_address is None:
        return
    result = addr_match_cidr_list(addr, opts.source_address)
    if result == 1:
        return
    if result == -1:
        log.error("%s: Certificate source-address invalid", loc)
    log.info("%s: Authentication tried for %s with valid certificate but not from a "
             "permitted source address (%s).", loc, user, addr)
    raise Refused("Refused by certificate options")


def check_authority(cert: Certificate, require_principal: bool, name: str | None,
                    want_host: bool = False) -> None:
    """sshkey_cert_check_authority_now: the certificate's type (a user
    certificate, or a host one for hostbased), its validity interval now,
    and ``name`` among its principals (exactly; an empty list passes unless
    ``require_principal``).  Refused with sshd's reason."""
    if want_host and cert.cert_type != certs.HOST_CERT:
        raise Refused("Certificate invalid: not a host certificate")
    if not want_host and cert.cert_type != certs.USER_CERT:
        raise Refused("Certificate invalid: not a user certificate")
    now = int(time.time())
    if now < cert.valid_after:
        raise Refused("Certificate invalid: not yet valid")
    if now >= cert.valid_before:
        raise Refused("Certificate invalid: expired")
    if not cert.principals:
        if require_principal:
            raise Refused("Certificate lacks principal list")
    elif name is not None and name not in cert.principals:
        raise Refused("Certificate invalid: name is not a listed principal")


def session_options(line_options: tuple[KeyOption, ...] | None,
                    opts: CertOptions) -> tuple[KeyOption, ...]:
    """The key options a certificate login runs under.

    ``line_options`` are those of the authorized_keys or principals line
    (None: the certificate alone, TrustedUserCAKeys without principals
    file).  As sshauthopt_merge: permits must be granted by both, so each
    capability the certificate lacks becomes ``no-*`` after the line's;
    touch is waived only if both waive it; verify-required from either; the
    forced command of either (they must agree, checked by the caller)."""
    merged = list(line_options or ())
    command = opts.force_command
    if command is not None and not any(o.name == "command" for o in merged):
        merged.insert(0, KeyOption("command", command))
    merged += [KeyOption("no-" + what) for what in PERMIT_EXTENSIONS.values()
               if what not in opts.permits]
    if line_options is None and opts.no_touch_required:
        merged.append(KeyOption("no-touch-required"))
    elif line_options is not None and not opts.no_touch_required:
        merged.append(KeyOption("touch-required"))
    if opts.verify_required:
        merged.append(KeyOption("verify-required"))
    return tuple(merged)


def _merge_refusal(line_options: tuple[KeyOption, ...], opts: CertOptions) -> None:
    line_command = next((o.value for o in line_options if o.name == "command"), None)
    if line_command is not None and opts.force_command is not None \
            and line_command != opts.force_command:
        raise Refused("forced command options do not match")


def from_authorized_keys(cert: Certificate, keyblob: bytes, keys: Sequence[AuthorizedKey],
                         user: str, addr: str, host: str) -> tuple[KeyOption, ...] | None:
    """A ``cert-authority`` line naming the certificate's CA: its options,
    principals= (else the user's name must be a principal), then the
    certificate's own checks.  The options to run under, or None."""
    for key in keys:
        if key.blob != cert.signature_key or key.option("cert-authority") is None:
            continue
        loc = f"{key.source}:{key.lineno}"
        refusal = authorized_keys.key_refusal(key, user, addr, host=host)
        try:
            if refusal:
                log.log(logging.DEBUG if refusal.endswith("entry expired") else logging.INFO,
                        "%s", refusal)
                raise Refused("Refused by key options")
            opts = cert_options(cert)
            _authorise_source(opts, loc, user, addr)
            _merge_refusal(key.options, opts)
            allowed = key.option("principals")
            if allowed is not None and allowed.value is not None and not any(
                    _match_list(p, allowed.value) for p in cert.principals):
                raise Refused("Certificate does not contain an authorized principal")
            check_authority(cert, False, user if allowed is None else None)
        except Refused as exc:
            log.error("%s", exc)
            continue
        log.log(VERBOSE, 'Accepted certificate ID "%s" (serial %d) signed by CA %s %s found '
                "at %s", cert.key_id, cert.serial,
                pubkey.key_label(_blob_type(cert.signature_key)),
                pubkey.fingerprint(cert.signature_key), loc)
        base = tuple(o for o in key.options if o.name not in ("cert-authority", "principals"))
        return session_options(base, opts)
    return None


def _match_list(principal: str, allowed: str) -> bool:
    """OpenSSH's match_list: is ``principal`` one of the comma-separated names."""
    return principal in allowed.split(",")


def _read_root_file(path: str) -> bytes:
    """A file the monitor reads as root (TrustedUserCAKeys, RevokedKeys)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        data = authorized_keys.read_limited(fd, MAX_LIST_BYTES)[0]
    finally:
        os.close(fd)
    return data


def _principals_line(line: str, cert: Certificate) -> tuple[KeyOption, ...] | None:
    """One AuthorizedPrincipalsFile line, "[options ]principal": its
    options if the principal is one of the certificate's, else None."""
    line = line.split("#", 1)[0].rstrip(" \t\r\n").lstrip(" \t")
    if not line:
        return None
    cut = max(line.rfind(" "), line.rfind("\t"))
    options: tuple[KeyOption, ...] = ()
    if cut >= 0:
        principal = line[cut + 1:]
        try:
            options = parse_key_options(line[:cut].rstrip(" \t"))
        except ValueError:
            return None
    else:
        principal = line
    return options if principal in cert.principals else None


def _principals_file(cert: Certificate, pw: pwd.struct_passwd, template: str,
                     strict_modes: bool) -> tuple[KeyOption, ...] | None:
    """The options of the first line of the user's AuthorizedPrincipalsFile
    that names one of the certificate's principals, or None."""
    try:
        path = authorized_keys.expand_authorized_keys_path(template, pw)
    except ValueError as exc:
        log.error("%s", exc)
        return None
    with user_rights(pw):
        data, problems = authorized_keys.read_keys_file(path, pw, strict_modes,
                                                        "authorized principals")
    for problem in problems:
        log.info("Authentication refused: %s", problem)
    if data is None:
        return None
    return principals_from_lines(data.decode("utf-8", "surrogateescape").split("\n"), cert)


def principals_from_lines(lines: Sequence[str], cert: Certificate) -> tuple[KeyOption, ...] | None:
    """The options of the first authorized_principals line (from the file or
    AuthorizedPrincipalsCommand) naming one of the certificate's principals."""
    for line in lines:
        options = _principals_line(line, cert)
        if options is not None:
            return options
    return None


def _principals_line_refusal(options: tuple[KeyOption, ...], user: str, addr: str) -> str | None:
    """A principals line's own from= and expiry-time=, as sshd's
    auth_authorise_keyopts(..., "principals") checks them."""
    for option in options:
        if option.name == "expiry-time" and option.value and \
                key_expired(option.value):
            return "principals: entry expired"
        if option.name == "from" and option.value is not None and \
                match_host_and_ip(addr, addr, option.value) != 1:
            return (f"principals: Authentication tried for {user} with correct key but not "
                    f"from a permitted host (host={addr}, ip={addr}, required={option.value}).")
    return None


#: AuthorizedPrincipalsCommand for a certificate: its output lines, or None
#: (not configured, refused or failed).  The monitor binds the connection.
PrincipalsCommand = Callable[[Certificate], "list[str] | None"]


def from_trusted_ca(cert: Certificate, pw: pwd.struct_passwd, ca_file: str,
                    principals_template: str, strict_modes: bool, addr: str,
                    principals_command: PrincipalsCommand | None = None,
                    ) -> tuple[KeyOption, ...] | None:
    """TrustedUserCAKeys (user_cert_trusted_ca): the options to run under, or
    None.  With AuthorizedPrincipalsFile or AuthorizedPrincipalsCommand, a
    principal must come from one of them (the file first); else the user's
    name must be one of the certificate's principals."""
    if ca_file.lower() == "none":
        return None
    try:
        trusted = krl.parse_key_list(_read_root_file(ca_file).decode("utf-8", "replace")).keys
    except OSError as exc:
        log.error("%s: %s", ca_file, exc.strerror)
        return None
    if cert.signature_key not in trusted:
        return None
    use_principals_file = principals_template.lower() != "none"
    use_principals = use_principals_file or principals_command is not None
    try:
        line_options = None
        if use_principals_file:
            line_options = _principals_file(cert, pw, principals_template, strict_modes)
        if line_options is None and principals_command is not None:
            lines = principals_command(cert)
            if lines is not None:
                line_options = principals_from_lines(lines, cert)
        if use_principals and line_options is None:
            raise Refused("Certificate does not contain an authorized principal")
        refusal = line_options and _principals_line_refusal(line_options, pw.pw_name, addr)
        if refusal:
            log.info("%s", refusal)
            raise Refused("Refused by key options")
        check_authority(cert, True, None if use_principals else pw.pw_name)
        opts = cert_options(cert)
        _authorise_source(opts, "cert", pw.pw_name, addr)
        if line_options is not None:
            _merge_refusal(line_options, opts)
    except Refused as exc:
        log.error("%s", exc)
        return None
    log.log(VERBOSE, 'Accepted certificate ID "%s" (serial %d) signed by %s CA %s via %s',
            cert.key_id, cert.serial, pubkey.key_label(_blob_type(cert.signature_key)),
            pubkey.fingerprint(cert.signature_key), ca_file)
    return session_options(line_options, opts)


#: Any signature a KRL's signing key may make (sshd verifies it without
#: naming an algorithm).
_ANY_SIGNATURE = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521", "rsa-sha2-256", "rsa-sha2-512", "ssh-rsa",
                  certs.SK_ED25519, certs.SK_ECDSA, certs.WEBAUTHN_SK_ECDSA)


def krl_signature_problem(revoked: krl.Krl) -> str | None:
    """A signed KRL's signatures, checked as sshd checks them: each must
    verify over the KRL up to its signing key, and not every signing key
    may be revoked by the KRL itself.  None when all is well (or unsigned)."""
    if not revoked.signatures:
        return None
    for key, signature, signed_len in revoked.signatures:
        if pubkey.verify_signature(key, revoked.raw[:signed_len], signature,
                                   _ANY_SIGNATURE) is None:
            return "incorrect signature"
    if all(revoked.key_revoked(key) for key, _, _ in revoked.signatures):
        return "All keys used to sign KRL were revoked"
    return None


def revocation_refusal(revoked_keys: str, keyblob: bytes) -> str | None:
    """RevokedKeys: sshd's error line if the key (or certificate, or its CA)
    is revoked, or if the file cannot be read or parsed (then every key is
    refused, as sshd does); None if the key may be used."""
    if revoked_keys.lower() == "none":
        return None
    label = pubkey.key_label(_blob_type(keyblob))
    fp = pubkey.fingerprint(keyblob)
    try:
        revoked = krl.parse_revoked_keys(_read_root_file(revoked_keys))
    except OSError as exc:
        return (f"Error checking authentication key {label} {fp} in revoked keys file "
                f"{revoked_keys}: {exc.strerror}")
    except ValueError:
        return (f"Error checking authentication key {label} {fp} in revoked keys file "
                f"{revoked_keys}: invalid format")
    signature_problem = krl_signature_problem(revoked)
    if signature_problem:
        return (f"Error checking authentication key {label} {fp} in revoked keys file "
                f"{revoked_keys}: {signature_problem}")
    if certs.is_cert_type(_blob_type(keyblob)):
        hit = revoked.cert_revoked(certs.parse_certificate(keyblob))
    else:
        hit = revoked.key_revoked(keyblob)
    if hit:
        return f"Authentication key {label} {fp} revoked by file {revoked_keys}"
    return None


def user_key_allowed(options, pw: pwd.struct_passwd, user: str, addr: str, host: str,
                     algorithm: str, keyblob: bytes,
                     key_sources: Sequence[Callable[[], list[authorized_keys.AuthorizedKey]]],
                     principals_command: PrincipalsCommand | None = None,
                     ) -> tuple[KeyOption, ...] | None:
    """Whether ``keyblob`` may log ``user`` in, as sshd's user_key_allowed:
    the blob and the CA signature first, then RevokedKeys, then the
    authorized_keys files (plain keys, or cert-authority lines for a
    certificate), then TrustedUserCAKeys, then AuthorizedKeysCommand.
    ``key_sources`` are called in turn, each only if the ones before did not
    let the key in: the first gives the authorized_keys files' entries, the
    second the key command's; TrustedUserCAKeys is tried after the first.
    The key options to run under, or None."""
    try:
        keytype = pubkey.check_public_key(keyblob)
    except Exception:  # paramiko's and cryptography's errors vary; all mean "no"
        log.error("userauth_pubkey: parse key: invalid format [preauth]")
        return None
    if not pubkey.algorithm_fits_key(algorithm, keytype):
        return None
    cert = certs.parse_certificate(keyblob) if certs.is_cert_type(keytype) else None
    if cert is not None:
        reason = ca_signature_refusal(cert, options.ca_signature_algorithms)
        if reason:
            log.log(logging.ERROR if "parse key" in reason else logging.INFO, "%s", reason)
            return None
    reason = revocation_refusal(options.revoked_keys, keyblob)
    if reason:
        log.error("%s", reason)
        return None
    for index, read_keys in enumerate(key_sources):
        found = _allowed_by(cert, algorithm, keyblob, read_keys(), user, addr, host)
        if found is None and cert is not None and index == 0:
            found = from_trusted_ca(cert, pw, options.trusted_user_ca_keys,
                                    options.authorized_principals_file,
                                    options.strict_modes, addr, principals_command)
        if found is not None:
            return found
    return None


def _allowed_by(cert, algorithm: str, keyblob: bytes, keys: list[authorized_keys.AuthorizedKey],
                user: str, addr: str, host: str) -> tuple[KeyOption, ...] | None:
    """The options of the entry of ``keys`` that lets the key (or the
    certificate, by a cert-authority line) in, or None."""
    if cert is not None:
        return from_authorized_keys(cert, keyblob, keys, user, addr, host)
    found = authorized_keys.find_key(keys, algorithm, keyblob)
    refusal = found and authorized_keys.key_refusal(found, user, addr, host=host)
    if refusal:
        # sshd: the from= refusal at INFO, an expired entry at DEBUG
        log.log(logging.DEBUG if refusal.endswith("entry expired") else logging.INFO,
                "%s", refusal)
        return None
    if found is None:
        return None
    # sshd's auth_check_authkey_line, once the entry's options allow it
    log.log(VERBOSE, "Accepted key %s %s found at %s:%d", pubkey.key_label(found.keytype),
            pubkey.fingerprint(found.blob), found.source, found.lineno)
    return found.options


def key_flag(options: tuple[KeyOption, ...], name: str, default: bool) -> bool:
    """A yes/no key option read left to right: ``name`` sets it, ``no-name``
    clears it (touch-required, verify-required)."""
    value = default
    for option in options:
        if option.name == name:
            value = True
        elif option.name == "no-" + name:
            value = False
    return value


def sk_refusal(verified: pubkey.Verified, key_options: tuple[KeyOption, ...],
               pubkey_auth_options: tuple[str, ...]) -> str | None:
    """What sshd says when a security key's signature lacks the user
    presence or verification that the key's options (or PubkeyAuthOptions)
    require; None when it has them or the key is no security key."""
    if verified.sk_flags is None:
        return None
    server = {option.lower() for option in pubkey_auth_options}
    touch = "touch-required" in server or key_flag(key_options, "touch-required", True)
    if touch and not verified.sk_flags & certs.SK_USER_PRESENT:
        return "user presence (authenticator touch) requirement not met "
    verify = "verify-required" in server or key_flag(key_options, "verify-required", False)
    if verify and not verified.sk_flags & certs.SK_USER_VERIFIED:
        return "user verification requirement not met "
    return None
