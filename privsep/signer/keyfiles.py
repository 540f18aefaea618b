"""Reading host private keys: only ever in a signer process."""

from __future__ import annotations

import os

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from privsep.wire import dss
from privsep.wire.hostkey_blobs import BAD_PERMISSIONS

_OPENSSH_PEM = b"-----BEGIN OPENSSH PRIVATE KEY-----"
class BadPermissions(Exception):
    """sshkey_perm_ok refused the file: owned by this process's uid and open
    to group or others.  The text carries the mode, for sshd's warning."""

    def __init__(self, mode: int) -> None:
        super().__init__(f"{BAD_PERMISSIONS} {mode & 0o777:03o}")


def load_private(path: str, check_permissions: bool = False) -> paramiko.PKey:
    """A host private key in OpenSSH or PEM format.

    With ``check_permissions`` (the start-up check, where sshd loads its
    keys), a file this uid owns that group or others may read is refused
    before it is parsed, whatever it holds: a ".pub" named as HostKey too.

    cryptography reads the file; paramiko wraps the result.  OpenSSL's RSA
    consistency check (200 ms for a 3072-bit key) is skipped: it would run
    for every signature.  A bad key is caught instead by the signer, which
    verifies each signature it makes before handing it out, the usual guard
    against RSA-CRT faults."""
    # os.open, as sshd's open(2): a directory opens, so its permissions are
    # judged before the read fails (Python's open() refuses it at once)
    fd = os.open(path, os.O_RDONLY)
    try:
        mode, owner = os.fstat(fd)[0:5:4]
        if check_permissions and owner == os.getuid() and mode & 0o077:
            raise BadPermissions(mode)
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read()
    finally:
        os.close(fd)
    if data.lstrip().startswith(_OPENSSH_PEM):
        key = serialization.load_ssh_private_key(data, password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    else:
        key = serialization.load_pem_private_key(data, password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    if isinstance(key, rsa.RSAPrivateKey):
        return paramiko.RSAKey(key=key)
    if isinstance(key, dsa.DSAPrivateKey):
        return DSSPrivateKey(key)  # type: ignore[return-value]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return paramiko.ECDSAKey(vals=(key, key.public_key()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Ed25519PrivateKey(key)  # type: ignore[return-value]
    # whatever else paramiko reads itself
    return paramiko.PKey.from_path(path)


class Ed25519PrivateKey:
    """An Ed25519 host key as cryptography read it.  paramiko's Ed25519Key
    would read and parse the file a second time (through PyNaCl): that was
    most of a signer's Python, once per login (docs/DESIGN.md, "CPU per
    login")."""

    NAME = "ssh-ed25519"

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        blob = paramiko.Message()
        blob.add_string(self.NAME)
        blob.add_string(public)
        self._blob = blob.asbytes()

    def get_name(self) -> str:
        return self.NAME

    def asbytes(self) -> bytes:
        return self._blob

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        if algorithm not in (None, self.NAME):
            raise ValueError(f"an Ed25519 key cannot sign with {algorithm}")
        signature = paramiko.Message()
        signature.add_string(self.NAME)
        signature.add_string(self._key.sign(data))
        return signature


class DSSPrivateKey:
    """A DSA host key (paramiko 5 has none): its public blob, and ssh-dss
    signatures (SHA-1, r and s of 20 bytes each)."""

    def __init__(self, key: dsa.DSAPrivateKey) -> None:
        self._key = key
        numbers = key.public_key().public_numbers()
        params = numbers.parameter_numbers
        self.public = dss.DSSPublicKey(params.p, params.q, params.g, numbers.y)

    def get_name(self) -> str:
        return dss.NAME

    def asbytes(self) -> bytes:
        return self.public.asbytes()

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        if algorithm not in (None, dss.NAME):
            raise ValueError(f"a DSA key cannot sign with {algorithm}")
        r, s = decode_dss_signature(self._key.sign(data, hashes.SHA1()))
        return paramiko.Message(dss.signature_blob(r, s))


def public_key(key_type: str, blob: bytes):
    """The public half of a host key as a verifier (paramiko's, or ours for DSA)."""
    if key_type == dss.NAME:
        return dss.DSSPublicKey.from_blob(blob)
    return paramiko.PKey.from_type_string(key_type, blob)
