"""Reading host private keys: only ever in a signer process."""

from __future__ import annotations

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

_OPENSSH_PEM = b"-----BEGIN OPENSSH PRIVATE KEY-----"


def load_private(path: str) -> paramiko.PKey:
    """A host private key in OpenSSH or PEM format.

    cryptography reads the file; paramiko wraps the result.  OpenSSL's RSA
    consistency check (200 ms for a 3072-bit key) is skipped: it would run
    for every signature.  A bad key is caught instead by the signer, which
    verifies each signature it makes before handing it out, the usual guard
    against RSA-CRT faults."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data.lstrip().startswith(_OPENSSH_PEM):
        key = serialization.load_ssh_private_key(data, password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    else:
        key = serialization.load_pem_private_key(data, password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    if isinstance(key, rsa.RSAPrivateKey):
        return paramiko.RSAKey(key=key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return paramiko.ECDSAKey(vals=(key, key.public_key()))
    # ed25519 (and whatever else paramiko reads itself)
    return paramiko.PKey.from_path(path)
