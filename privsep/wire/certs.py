"""OpenSSH certificates (PROTOCOL.certkeys) and security-key public keys
(PROTOCOL.u2f), decoded without judging them: pure, no I/O, no crypto.

``parse_certificate`` splits a -cert-v01 blob into its fields, the plain key
it certifies, and the bytes the CA signed.  Whether the CA is trusted, the
signature good, the validity interval current or a principal acceptable is
the monitor's decision (privsep/monitor/certificates.py).  Everything
malformed is a ValueError: a hostile blob gets a refusal, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

from privsep.wire.sshbuf import Reader, Writer

CERT_SUFFIX = "-cert-v01@openssh.com"
#: The two certificate types (PROTOCOL.certkeys "type").
USER_CERT = 1
HOST_CERT = 2
#: sshd caps a certificate's principals (SSHKEY_CERT_MAX_PRINCIPALS).
MAX_PRINCIPALS = 256

SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
WEBAUTHN_SK_ECDSA = "webauthn-sk-ecdsa-sha2-nistp256@openssh.com"

#: Each plain key type with the fields after its name, in blob order:
#: "s" a string, "m" an mpint.
_KEY_FIELDS: dict[str, str] = {
    "ssh-ed25519": "s",
    "ssh-rsa": "mm",
    "ssh-dss": "mmmm",
    "ecdsa-sha2-nistp256": "ss",
    "ecdsa-sha2-nistp384": "ss",
    "ecdsa-sha2-nistp521": "ss",
    SK_ED25519: "ss",   # key, application
    SK_ECDSA: "sss",    # curve, point, application
}

#: Certificate key type -> the plain key type it certifies.
PLAIN_OF_CERT: dict[str, str] = {
    (name[:-len("@openssh.com")] if name.endswith("@openssh.com") else name) + CERT_SUFFIX: name
    for name in _KEY_FIELDS
}


def is_cert_type(keytype: str) -> bool:
    return keytype in PLAIN_OF_CERT


def plain_type(keytype: str) -> str:
    """The plain key type of a certificate type; plain types unchanged."""
    return PLAIN_OF_CERT.get(keytype, keytype)


@dataclass(frozen=True)
class Certificate:
    """The fields of an OpenSSH certificate, decoded but not yet trusted.

    ``key_blob`` is the certified key as a plain public key blob (what
    fingerprints and revocation lists name); ``signed_data`` is every byte
    of the certificate before the signature; ``signature_type`` the
    algorithm named inside the signature blob."""

    cert_type_name: str
    nonce: bytes
    key_blob: bytes
    serial: int
    cert_type: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: tuple[tuple[str, bytes], ...]
    extensions: tuple[tuple[str, bytes], ...]
    signature_key: bytes
    signature: bytes
    signed_data: bytes
    signature_type: str

    @property
    def plain_type(self) -> str:
        return PLAIN_OF_CERT[self.cert_type_name]


def _key_fields(r: Reader, keytype: str) -> bytes:
    """Read the fields of a ``keytype`` key; their wire bytes."""
    out = Writer()
    for kind in _KEY_FIELDS[keytype]:
        if kind == "m":
            out.mpint(r.mpint())
        else:
            out.string(r.string())
    return bytes(out)


def _option_list(data: bytes, what: str) -> tuple[tuple[str, bytes], ...]:
    """Critical options or extensions: (name, data) pairs, names unique and,
    as PROTOCOL.certkeys requires, in lexical order."""
    r = Reader(data, what=what)
    items: list[tuple[str, bytes]] = []
    while r.remaining():
        name = r.name(f"{what} name")
        value = r.string()
        if items and name <= items[-1][0]:
            raise ValueError(f"{what} out of order or repeated: {name!r}")
        items.append((name, value))
    return tuple(items)


def option_string(value: bytes) -> str:
    """The one string inside a critical option's data (force-command,
    source-address), nothing after it; ValueError otherwise."""
    r = Reader(value, what="certificate option")
    text = r.name("certificate option")
    r.end()
    return text


def parse_certificate(blob: bytes) -> Certificate:
    """Decode a certificate blob (ValueError for anything malformed).

    Layout: string type, string nonce, the plain key's fields, uint64
    serial, uint32 type, string key id, string principals, uint64
    valid_after, uint64 valid_before, string critical options, string
    extensions, string reserved, string signature key, string signature."""
    r = Reader(blob, what="certificate")
    name = r.name("key type")
    if name not in PLAIN_OF_CERT:
        raise ValueError(f"not a certificate type: {name!r}")
    nonce = r.string()
    plain = PLAIN_OF_CERT[name]
    key_blob = bytes(Writer().text(plain)) + _key_fields(r, plain)
    serial = r.uint64()
    cert_type = r.uint32()
    if cert_type not in (USER_CERT, HOST_CERT):
        raise ValueError(f"unknown certificate type {cert_type}")
    key_id = r.name("key id")
    principals_reader = Reader(r.string(), what="principals")
    principals: list[str] = []
    while principals_reader.remaining():
        principals.append(principals_reader.name("principal"))
        if len(principals) > MAX_PRINCIPALS:
            raise ValueError("too many principals")
    valid_after, valid_before = r.uint64(), r.uint64()
    critical = _option_list(r.string(), "critical options")
    extensions = _option_list(r.string(), "extensions")
    r.string()  # reserved
    signature_key = r.string()
    signed_len = len(blob) - r.remaining()
    signature = r.string()
    r.end()
    sig_type = Reader(signature, what="signature").name("signature type")
    ca_type = Reader(signature_key, what="CA key").name("CA key type")
    if ca_type in PLAIN_OF_CERT:
        raise ValueError("certificate signed by a certificate")
    if len(nonce) < 16:
        raise ValueError("certificate nonce too short")
    return Certificate(name, nonce, key_blob, serial, cert_type, key_id, tuple(principals),
                       valid_after, valid_before, critical, extensions, signature_key,
                       signature, blob[:signed_len], sig_type)


# --- security keys (PROTOCOL.u2f) -----------------------------------------------------


@dataclass(frozen=True)
class SkSignature:
    """A security-key signature blob, decoded.  ``raw`` is the inner
    signature (64 bytes for ed25519; "mpint r, mpint s" for ECDSA).  The
    webauthn form adds the origin, the clientData JSON and extensions."""

    sig_type: str
    raw: bytes
    flags: int
    counter: int
    origin: str = ""
    client_data: bytes = b""
    extensions: bytes = b""


#: Authenticator flags (FIDO2): user present, user verified.
SK_USER_PRESENT = 0x01
SK_USER_VERIFIED = 0x04


def sk_application(keyblob: bytes) -> str:
    """The application string of a security-key public blob."""
    r = Reader(keyblob, what="security key")
    keytype = r.name("key type")
    if keytype not in (SK_ED25519, SK_ECDSA):
        raise ValueError(f"not a security key: {keytype!r}")
    for _ in _KEY_FIELDS[keytype][:-1]:
        r.string()
    application = r.name("application")
    r.end()
    return application


def parse_sk_signature(blob: bytes) -> SkSignature:
    """Decode a security-key signature blob; ValueError if malformed."""
    r = Reader(blob, what="security key signature")
    sig_type = r.name("signature type")
    if sig_type not in (SK_ED25519, SK_ECDSA, WEBAUTHN_SK_ECDSA):
        raise ValueError(f"not a security key signature: {sig_type!r}")
    raw = r.string()
    flags, counter = r.byte(), r.uint32()
    if sig_type != WEBAUTHN_SK_ECDSA:
        r.end()
        return SkSignature(sig_type, raw, flags, counter)
    origin = r.name("origin")
    client_data = r.string()
    extensions = r.string()
    r.end()
    return SkSignature(sig_type, raw, flags, counter, origin, client_data, extensions)
