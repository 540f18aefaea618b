"""Public keys in the monitor: blobs checked strictly, signatures verified,
and keys named in the log as sshd names them (ED25519 SHA256:...).

The counterpart of the key half of OpenSSH's ``auth2-pubkey.c`` and
``sshkey.c``.  The net-child only asks; everything here answers from the
bytes the monitor itself received.  One verifier serves plain keys,
security keys (sk-*, the webauthn form included; PROTOCOL.u2f) and the keys
inside certificates, with paramiko's key classes doing the arithmetic.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Collection

import paramiko

from privsep.wire import certs, dss
from privsep.wire.certs import SK_ECDSA, SK_ED25519, WEBAUTHN_SK_ECDSA
from privsep.wire.keyblob import ECDSA_CURVES, public_blob_type
from privsep.wire.sshbuf import Reader, Writer

log = logging.getLogger("privsep.monitor")

#: Key types accepted in authorized_keys and in userauth, with the
#: algorithms each may be used with.  Plain "ssh-rsa" (RSA with SHA-1) is
#: absent on purpose: OpenSSH 9.2's default PubkeyAcceptedAlgorithms no
#: longer includes it.  Certificates answer to their own names.
ALGORITHMS_FOR_KEY_TYPE: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-256", "rsa-sha2-512"),
    SK_ED25519: (SK_ED25519,),
    SK_ECDSA: (SK_ECDSA,),
    dss.NAME: (dss.NAME,),  # only when PubkeyAcceptedAlgorithms names it
    **{name: (name,) for name in ECDSA_CURVES},
}
CERT_ALGORITHMS_FOR_TYPE: dict[str, tuple[str, ...]] = {
    "ssh-rsa-cert-v01@openssh.com": ("rsa-sha2-256-cert-v01@openssh.com",
                                     "rsa-sha2-512-cert-v01@openssh.com"),
    **{name: (name,) for name, plain in certs.PLAIN_OF_CERT.items()
       if plain in ALGORITHMS_FOR_KEY_TYPE and plain != "ssh-rsa"},
}


#: Key types that OpenSSH knows but authorized_keys lines here do not
#: take: certificates (which are offered, not listed).  A line with one of
#: these is reported as such rather than as garbage.
UNSUPPORTED_KEY_TYPES = frozenset(certs.PLAIN_OF_CERT)


#: Log labels, as OpenSSH's sshkey_type() prints them.
_KEY_LABELS: dict[str, str] = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "rsa-sha2-256": "RSA",
    "rsa-sha2-512": "RSA",
    "ssh-dss": "DSA",
    SK_ED25519: "ED25519-SK",
    SK_ECDSA: "ECDSA-SK",
    **{name: "ECDSA" for name in ECDSA_CURVES},
}


@dataclass(frozen=True)
class Verified:
    """A signature that verified; for security keys, the authenticator's
    flags and counter (sshd's sig_details), else None."""

    sk_flags: int | None = None
    sk_counter: int | None = None


def _plain_blob(blob: bytes) -> bytes:
    """The ordinary key inside a security key's blob (its application
    dropped): an sk-ed25519 key verifies as ed25519, an sk-ecdsa key as
    ecdsa-sha2-nistp256.  Other blobs unchanged."""
    r = Reader(blob)
    keytype = r.name("key type")
    if keytype == SK_ED25519:
        return bytes(Writer().text("ssh-ed25519").string(r.string()))
    if keytype == SK_ECDSA:
        return bytes(Writer().text("ecdsa-sha2-nistp256").text(r.name()).string(r.string()))
    return blob


def rsa_bits(blob: bytes) -> int | None:
    """The modulus size of an RSA public key blob, None for other types
    (for RequiredRSASize).  Raises ValueError for a malformed RSA blob."""
    r = Reader(blob)
    if r.name("key type") != "ssh-rsa":
        return None
    r.mpint()  # exponent
    return r.mpint().bit_length()


#: sshd's SSH_RSA_MINIMUM_MODULUS_SIZE: a smaller RequiredRSASize is taken
#: (and printed by -T) but no smaller key is ever accepted
RSA_MINIMUM_BITS = 1024


def rsa_too_small(blob: bytes, required_bits: int) -> bool:
    """RequiredRSASize for a user key, in sshd's words (userauth_pubkey)."""
    required_bits = max(required_bits, RSA_MINIMUM_BITS)
    try:
        bits = rsa_bits(blob)
    except ValueError:
        return False  # malformed: no authorized line matches it anyway
    if bits is not None and bits < required_bits:
        log.info("refusing RSA key: Invalid key length")
        return True
    return False


def _crypto_key(blob: bytes) -> paramiko.PKey:
    """paramiko's public key for a plain (or sk) blob, which checks what
    the blob parser does not (the ECDSA point is on its curve...).
    paramiko and cryptography raise various errors for a bad one."""
    plain = _plain_blob(blob)
    keytype = Reader(plain).name()
    if keytype == dss.NAME:  # paramiko 5 has no DSA
        return dss.DSSPublicKey.from_blob(plain)  # type: ignore[return-value]
    return paramiko.PKey.from_type_string(keytype, plain)


def check_public_key(blob: bytes) -> str:
    """public_blob_type, and the key's numbers make a real key (the ECDSA
    point is on its curve...).  Returns the key type; raises ValueError."""
    keytype = public_blob_type(blob)
    if certs.is_cert_type(keytype):
        cert = certs.parse_certificate(blob)
        _crypto_key(cert.key_blob)
        _crypto_key(cert.signature_key)
    else:
        _crypto_key(blob)
    return keytype


def key_type_of_algorithm(algorithm: str) -> str | None:
    """The key type a userauth algorithm names (rsa-sha2-256 -> ssh-rsa)."""
    for table in (ALGORITHMS_FOR_KEY_TYPE, CERT_ALGORITHMS_FOR_TYPE):
        for keytype, algorithms in table.items():
            if algorithm in algorithms:
                return keytype
    return None


def algorithm_fits_key(algorithm: str, keytype: str) -> bool:
    """Whether a signature algorithm may be used with a key of ``keytype``.

    RSA keys sign with rsa-sha2-256 or rsa-sha2-512 only; the SHA-1
    "ssh-rsa" algorithm is refused.  Other types sign under their own name.
    """
    return algorithm in {**ALGORITHMS_FOR_KEY_TYPE, **CERT_ALGORITHMS_FOR_TYPE}.get(keytype, ())


def signature_types_for(algorithm: str) -> tuple[str, ...]:
    """The signature blob types a userauth ``algorithm`` may carry: a
    certificate's are those of its plain key; an sk-ecdsa key may also sign
    in the webauthn form."""
    if algorithm.endswith(certs.CERT_SUFFIX):
        base = algorithm[: -len(certs.CERT_SUFFIX)]
        algorithm = base + "@openssh.com" if base.startswith("sk-") else base
    if algorithm == SK_ECDSA:
        return (SK_ECDSA, WEBAUTHN_SK_ECDSA)
    return (algorithm,)


def _verify_plain(key: paramiko.PKey, keytype: str, sig_type: str, raw: bytes,
                  data: bytes) -> None:
    """Raise unless ``raw`` is a good ``sig_type`` signature of ``data``.
    The inner encoding is checked here, strictly, since paramiko reads it
    leniently."""
    if keytype in ("ssh-ed25519", SK_ED25519):
        ok = len(raw) == 64
    elif keytype == dss.NAME:
        ok = len(raw) == dss.SIGNATURE_BYTES
    elif keytype == "ssh-rsa":
        ok = 0 < len(raw) <= (key.get_bits() + 7) // 8
    else:
        inner = Reader(raw)  # ECDSA: mpint r, mpint s, nothing else
        r_value, s_value = inner.mpint(), inner.mpint()
        inner.end()
        ok = r_value > 0 and s_value > 0
    message = paramiko.Message(bytes(Writer().text(sig_type).string(raw)))
    if not ok or not key.verify_ssh_sig(data, message):
        raise ValueError("bad signature")


def _webauthn_message_hash(sig: certs.SkSignature, data: bytes) -> bytes:
    """SHA-256 of the clientData, once it is shown to be about ``data``:
    it must begin with the webauthn.get preamble naming base64url(data) as
    the challenge and the signature's origin (OpenSSH's check)."""
    if '"' in sig.origin or sig.flags & 0x40 or bool(sig.flags & 0x80) != bool(sig.extensions):
        raise ValueError("webauthn flags or origin")
    challenge = base64.urlsafe_b64encode(data).rstrip(b"=")
    preamble = (b'{"type":"webauthn.get","challenge":"' + challenge + b'","origin":"'
                + sig.origin.encode() + b'"')
    if not sig.client_data.startswith(preamble):
        raise ValueError("webauthn clientData is not about this request")
    return hashlib.sha256(sig.client_data).digest()


def _verify_sk(key: paramiko.PKey, keyblob: bytes, keytype: str, signature: bytes, data: bytes) -> Verified:
    """A security-key signature: over SHA256(application) || flags ||
    counter [|| extensions] || SHA256(message) (PROTOCOL.u2f)."""
    sig = certs.parse_sk_signature(signature)
    if (keytype == SK_ED25519) != (sig.sig_type == SK_ED25519):
        raise ValueError("signature type does not fit the key")
    if sig.sig_type == WEBAUTHN_SK_ECDSA:
        message_hash = _webauthn_message_hash(sig, data)
    else:
        message_hash = hashlib.sha256(data).digest()
    app_hash = hashlib.sha256(certs.sk_application(keyblob).encode()).digest()
    head = app_hash + bytes([sig.flags]) + sig.counter.to_bytes(4, "big")
    if keytype == SK_ED25519:
        _verify_plain(key, keytype, "ssh-ed25519", sig.raw, head + message_hash)
    else:
        _verify_plain(key, keytype, "ecdsa-sha2-nistp256", sig.raw,
                      head + sig.extensions + message_hash)
    return Verified(sig.flags, sig.counter)


def verify_signature(keyblob: bytes, data: bytes, signature: bytes,
                     allowed: Collection[str]) -> Verified | None:
    """Verify ``signature`` (an SSH signature blob) over ``data`` by the
    plain or security key ``keyblob``; the blob's signature type must be
    in ``allowed``.  None for anything that does not verify; never raises."""
    try:
        r = Reader(signature)
        sig_type = r.name()
        if sig_type not in allowed:
            return None
        keytype = public_blob_type(keyblob)
        key = _crypto_key(keyblob)
        if keytype in (SK_ED25519, SK_ECDSA):
            return _verify_sk(key, keyblob, keytype, signature, data)
        raw = r.string()
        r.end()
        if sig_type not in ALGORITHMS_FOR_KEY_TYPE.get(keytype, ()) and not (
                keytype == "ssh-rsa" and sig_type == "ssh-rsa"):
            return None
        _verify_plain(key, keytype, sig_type, raw, data)
        return Verified()
    except Exception:  # any parsing or crypto error means "not verified"
        return None


def verify_userauth(algorithm: str, keyblob: bytes, data: bytes,
                    signature: bytes) -> Verified | None:
    """Verify a publickey userauth signature: ``algorithm`` must fit the
    key type of ``keyblob`` (so plain "ssh-rsa" is refused); a certificate
    signs with the key it certifies.  None unless it verifies."""
    try:
        keytype = public_blob_type(keyblob)
    except ValueError:
        return None
    if not algorithm_fits_key(algorithm, keytype):
        return None
    if certs.is_cert_type(keytype):
        keyblob = certs.parse_certificate(keyblob).key_blob
    return verify_signature(keyblob, data, signature, signature_types_for(algorithm))


def verify_userauth_signature(
    algorithm: str, keyblob: bytes, data: bytes, signature: bytes
) -> bool:
    """verify_userauth as a yes or no."""
    return verify_userauth(algorithm, keyblob, data, signature) is not None


#: FingerprintHash, a global keyword: set once per monitor (use_fingerprint_hash).
_fingerprint_hash = "SHA256"


def use_fingerprint_hash(name: str) -> None:
    """Every fingerprint this process logs from now on uses ``name`` (MD5,
    SHA1, SHA256, SHA384 or SHA512), as sshd's FingerprintHash."""
    global _fingerprint_hash
    _fingerprint_hash = name.upper()


def fingerprint(blob: bytes) -> str:
    """A key's fingerprint as ssh-keygen -l and sshd's log print it:
    "MD5:" and colon-separated hex for MD5; otherwise "SHA256:" (or SHA1,
    SHA384, SHA512) and unpadded base64.  A certificate's is its certified
    key's, as sshd prints it."""
    try:
        if certs.is_cert_type(Reader(blob).name()):
            blob = certs.parse_certificate(blob).key_blob
    except ValueError:
        pass
    digest = hashlib.new(_fingerprint_hash.lower(), blob).digest()
    if _fingerprint_hash == "MD5":
        return "MD5:" + ":".join(f"{b:02x}" for b in digest)
    return f"{_fingerprint_hash}:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def key_label(keytype: str) -> str:
    """The key type as OpenSSH's log lines name it: "ED25519", "RSA", "ECDSA".

    Signature algorithm names work too (rsa-sha2-512 gives "RSA");
    certificates get a "-CERT" suffix; anything else is "unknown".
    """
    if keytype in certs.PLAIN_OF_CERT:
        keytype = certs.PLAIN_OF_CERT[keytype]
        base = key_label(keytype)
        return "unknown" if base == "unknown" else base + "-CERT"
    if keytype.endswith(certs.CERT_SUFFIX):  # rsa-sha2-512-cert-v01@openssh.com
        return key_label(keytype[: -len(certs.CERT_SUFFIX)]) + "-CERT"
    return _KEY_LABELS.get(keytype, "unknown")
