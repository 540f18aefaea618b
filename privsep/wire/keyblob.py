"""Public key blobs (RFC 4253 6.6, PROTOCOL.certkeys, PROTOCOL.u2f) checked
strictly, and sshd's words for why it refuses one.

Pure, no crypto: every field present and well formed, nothing after the
last one.  Whether the numbers make a real key (an ECDSA point on its
curve) is the monitor's check, with cryptography (monitor/pubkey.py).  The
net-child reads the key blob of a publickey request here first, as sshd's
does with sshkey_from_blob before it asks its monitor anything; the monitor
reads every blob it is given here again.
"""

from __future__ import annotations

from privsep.wire import certs, dss
from privsep.wire.certs import SK_ECDSA, SK_ED25519
from privsep.wire.sshbuf import Reader

#: OpenSSH refuses RSA keys with a smaller modulus (SSH_RSA_MINIMUM_MODULUS_SIZE).
RSA_MIN_BITS = 1024

#: ECDSA key types: curve name inside the blob and coordinate size in bytes.
ECDSA_CURVES: dict[str, tuple[str, int]] = {
    "ecdsa-sha2-nistp256": ("nistp256", 32),
    "ecdsa-sha2-nistp384": ("nistp384", 48),
    "ecdsa-sha2-nistp521": ("nistp521", 66),
}

#: ssh_err()'s words (ssherr.c) for sshkey_from_blob's refusals
INVALID_FORMAT = "invalid format"
MESSAGE_INCOMPLETE = "incomplete message"
KEY_TYPE_UNKNOWN = "unknown or unsupported key type"
KEY_LENGTH = "Invalid key length"

#: what a Reader here calls a blob that runs short
_TRUNCATED = "truncated key blob"

#: key types whose fields sshd reads with sshbuf's getters and whose errors
#: it passes on, so that a short one is "incomplete message"; a short RSA
#: or DSA number, key type name or certificate field it calls "invalid format"
_SSHBUF_ERRORS = frozenset({"ssh-ed25519", SK_ED25519, SK_ECDSA, *ECDSA_CURVES})


class UnknownKeyType(ValueError):
    """A blob of a key type not supported here (SSH_ERR_KEY_TYPE_UNKNOWN)."""


class KeyLengthError(ValueError):
    """An RSA key below RSA_MIN_BITS (SSH_ERR_KEY_LENGTH)."""


def _plain_key_type(r: Reader, keytype: str) -> None:
    """Check the fields after the name of a plain key blob."""
    if keytype in ("ssh-ed25519", SK_ED25519):
        if len(r.string()) != 32:
            raise ValueError("ed25519 public key is not 32 bytes")
    elif keytype == "ssh-rsa":
        exponent = r.mpint()
        modulus = r.mpint()
        if exponent < 3 or exponent % 2 == 0:
            raise ValueError("bad RSA public exponent")
        if modulus.bit_length() < RSA_MIN_BITS:
            raise KeyLengthError(
                f"RSA key of {modulus.bit_length()} bits is below the "
                f"{RSA_MIN_BITS}-bit minimum"
            )
    elif keytype == dss.NAME:
        for _ in range(4):  # p, q, g, y: their sizes are dss.DSSPublicKey's to check
            r.mpint()
    elif keytype in ECDSA_CURVES or keytype == SK_ECDSA:
        curve, size = ECDSA_CURVES.get(keytype, ECDSA_CURVES["ecdsa-sha2-nistp256"])[:2]
        if r.name("curve") != curve:
            raise ValueError(f"curve name does not match {keytype}")
        point = r.string()
        if len(point) != 1 + 2 * size or point[0] != 4:
            raise ValueError("ECDSA point is not an uncompressed point")
    else:
        raise UnknownKeyType(f"unsupported key type {keytype!r} in key blob")
    if keytype in (SK_ED25519, SK_ECDSA):
        r.name("application")


def public_blob_type(blob: bytes) -> str:
    """Check a public key blob strictly and return its key type.

    Plain keys, security keys and certificates (whose certified key and CA
    key pass the same checks) of the supported types: every field present
    and well formed, nothing after the last one.  Raises ValueError.
    """
    r = Reader(blob, what="key blob")
    keytype = r.name("key type")
    if certs.is_cert_type(keytype):
        cert = certs.parse_certificate(blob)
        public_blob_type(cert.key_blob)
        public_blob_type(cert.signature_key)
        return keytype
    _plain_key_type(r, keytype)
    r.end()
    return keytype


def sshkey_error(blob: bytes) -> str | None:
    """Why sshd's sshkey_from_blob refuses ``blob``, in ssh_err()'s words
    (what its "parse key" line ends with); None for a blob it takes.  A
    short field is "incomplete message" where sshd reads it with sshbuf's
    own getters and passes their error on (ed25519, ECDSA and the security
    keys), "invalid format" where it maps every error to that (the key type
    name, RSA's and DSA's numbers, a certificate's fields, bytes after the
    last field)."""
    keytype = ""
    try:
        keytype = Reader(blob, what="key blob").name("key type")
        public_blob_type(blob)
    except UnknownKeyType:
        return KEY_TYPE_UNKNOWN
    except KeyLengthError:
        return KEY_LENGTH
    except ValueError as exc:
        if str(exc) == _TRUNCATED and keytype in _SSHBUF_ERRORS:
            return MESSAGE_INCOMPLETE
        return INVALID_FORMAT
    return None
