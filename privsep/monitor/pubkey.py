"""Public keys in the monitor: blobs checked strictly, signatures verified,
and keys named in the log as sshd names them (ED25519 SHA256:...).

The counterpart of the key half of OpenSSH's ``auth2-pubkey.c`` and
``sshkey.c``.  The net-child only asks; everything here answers from the
bytes the monitor itself received.
"""

from __future__ import annotations

import base64
import hashlib

import paramiko

from privsep.wire import dss
from privsep.wire.sshbuf import Reader


#: OpenSSH refuses RSA keys with a smaller modulus (SSH_RSA_MINIMUM_MODULUS_SIZE).
RSA_MIN_BITS = 1024


#: ECDSA key types: curve name inside the blob and coordinate size in bytes.
_ECDSA_CURVES: dict[str, tuple[str, int]] = {
    "ecdsa-sha2-nistp256": ("nistp256", 32),
    "ecdsa-sha2-nistp384": ("nistp384", 48),
    "ecdsa-sha2-nistp521": ("nistp521", 66),
}


#: Key types accepted in authorized_keys, with the signature algorithms each
#: may be used with.  Plain "ssh-rsa" (RSA with SHA-1) is absent on purpose:
#: OpenSSH 9.2's default PubkeyAcceptedAlgorithms no longer includes it.
ALGORITHMS_FOR_KEY_TYPE: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-256", "rsa-sha2-512"),
    dss.NAME: (dss.NAME,),  # only when PubkeyAcceptedAlgorithms names it
    **{name: (name,) for name in _ECDSA_CURVES},
}


#: Key types that OpenSSH knows but this server does not support: security
#: keys, DSA and certificates.  A line with one of these is reported as such
#: rather than as garbage.
UNSUPPORTED_KEY_TYPES = frozenset(
    {
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-ed25519-cert-v01@openssh.com",
        "ssh-rsa-cert-v01@openssh.com",
        "ssh-dss-cert-v01@openssh.com",
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        "sk-ssh-ed25519-cert-v01@openssh.com",
        "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    }
)


#: Log labels, as OpenSSH's sshkey_type() prints them.
_KEY_LABELS: dict[str, str] = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "rsa-sha2-256": "RSA",
    "rsa-sha2-512": "RSA",
    "ssh-dss": "DSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
    **{name: "ECDSA" for name in _ECDSA_CURVES},
}


def public_blob_type(blob: bytes) -> str:
    """Check a public key blob strictly and return its key type.

    Only the supported plain key types pass: every field must be present
    and well formed, with nothing after the last one.  Raises ValueError.
    """
    r = Reader(blob)
    keytype = r.name("key type")
    if keytype == "ssh-ed25519":
        if len(r.string()) != 32:
            raise ValueError("ed25519 public key is not 32 bytes")
    elif keytype == "ssh-rsa":
        exponent = r.mpint()
        modulus = r.mpint()
        if exponent < 3 or exponent % 2 == 0:
            raise ValueError("bad RSA public exponent")
        if modulus.bit_length() < RSA_MIN_BITS:
            raise ValueError(
                f"RSA key of {modulus.bit_length()} bits is below the "
                f"{RSA_MIN_BITS}-bit minimum"
            )
    elif keytype == dss.NAME:
        dss.DSSPublicKey.from_blob(blob)  # strict, to the end
        return keytype
    elif keytype in _ECDSA_CURVES:
        curve, size = _ECDSA_CURVES[keytype]
        if r.name("curve") != curve:
            raise ValueError(f"curve name does not match {keytype}")
        point = r.string()
        if len(point) != 1 + 2 * size or point[0] != 4:
            raise ValueError("ECDSA point is not an uncompressed point")
    else:
        raise ValueError(f"unsupported key type {keytype!r} in key blob")
    r.end()
    return keytype


def rsa_bits(blob: bytes) -> int | None:
    """The modulus size of an RSA public key blob, None for other types
    (for RequiredRSASize).  Raises ValueError for a malformed RSA blob."""
    r = Reader(blob)
    if r.name("key type") != "ssh-rsa":
        return None
    r.mpint()  # exponent
    return r.mpint().bit_length()


def load_public_key(blob: bytes) -> paramiko.PKey:
    """A paramiko public key from a blob that public_blob_type accepted.

    paramiko checks what we do not (the ECDSA point is on its curve, the
    ed25519 point decodes).  Raises ValueError (or paramiko's own errors,
    which callers treat alike).
    """
    keytype = public_blob_type(blob)
    if keytype == dss.NAME:
        return dss.DSSPublicKey.from_blob(blob)  # type: ignore[return-value]
    return paramiko.PKey.from_type_string(keytype, blob)


def algorithm_fits_key(algorithm: str, keytype: str) -> bool:
    """Whether a signature algorithm may be used with a key of ``keytype``.

    RSA keys sign with rsa-sha2-256 or rsa-sha2-512 only; the SHA-1
    "ssh-rsa" algorithm is refused.  Other types sign under their own name.
    """
    return algorithm in ALGORITHMS_FOR_KEY_TYPE.get(keytype, ())


def _signature_shape_ok(key: paramiko.PKey, keytype: str, sig: bytes) -> bool:
    """Check the inner signature encoding paramiko would read leniently."""
    if keytype == "ssh-ed25519":
        return len(sig) == 64
    if keytype == dss.NAME:
        return len(sig) == dss.SIGNATURE_BYTES
    if keytype == "ssh-rsa":
        return 0 < len(sig) <= (key.get_bits() + 7) // 8
    r = Reader(sig)  # ECDSA: mpint r, mpint s, nothing else
    r_value, s_value = r.mpint(), r.mpint()
    r.end()
    return r_value > 0 and s_value > 0


def verify_userauth_signature(
    algorithm: str, keyblob: bytes, data: bytes, signature: bytes
) -> bool:
    """Verify a publickey signature over ``data``; never raises.

    ``signature`` is the SSH signature blob (string algorithm, string raw
    signature, nothing after).  Its algorithm must equal ``algorithm``,
    which must fit the key type of ``keyblob`` (so plain "ssh-rsa" is
    refused).  The key is loaded from ``keyblob`` with paramiko and verifies
    the signature.  Anything malformed gives False.
    """
    try:
        r = Reader(signature)
        sig_algorithm = r.name()
        raw = r.string()
        r.end()
        if sig_algorithm != algorithm:
            return False
        keytype = public_blob_type(keyblob)
        if not algorithm_fits_key(algorithm, keytype):
            return False
        key = load_public_key(keyblob)
        if not _signature_shape_ok(key, keytype, raw):
            return False
        return bool(key.verify_ssh_sig(data, paramiko.Message(signature)))
    except Exception:  # any parsing or crypto error means "not verified"
        return False


def fingerprint(blob: bytes) -> str:
    """OpenSSH's default fingerprint: "SHA256:" and unpadded base64 of SHA-256."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def key_label(keytype: str) -> str:
    """The key type as OpenSSH's log lines name it: "ED25519", "RSA", "ECDSA".

    Signature algorithm names work too (rsa-sha2-512 gives "RSA");
    certificates get a "-CERT" suffix; anything else is "unknown".
    """
    suffix = "-cert-v01@openssh.com"
    if keytype.endswith(suffix):
        base = key_label(keytype[: -len(suffix)])
        return "unknown" if base == "unknown" else base + "-CERT"
    return _KEY_LABELS.get(keytype, "unknown")
