"""Host key files, at start-up as root: made when missing, read for -t.

The listener loads the private keys once and each monitor inherits them by
fork; only the monitor signs with them.
"""

from __future__ import annotations

import os
import subprocess

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_KEYGEN_ARGS = {"rsa": ["-t", "rsa", "-b", "3072"], "ecdsa": ["-t", "ecdsa"], "ed25519": ["-t", "ed25519"]}


def _type_from_path(path: str) -> str | None:
    name = os.path.basename(path)
    for kind in _KEYGEN_ARGS:
        if f"_{kind}_" in name:
            return kind
    return None


def generate_missing(paths: list[str]) -> list[str]:
    """Make each missing key whose file name says its type, as ``ssh-keygen -A``."""
    made = []
    for path in paths:
        kind = _type_from_path(path)
        if os.path.exists(path) or kind is None:
            continue
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", *_KEYGEN_ARGS[kind], "-N", "", "-C", "", "-f", path],
            check=True, stdin=subprocess.DEVNULL,
        )
        made.append(path)
    return made


def load_private(path: str) -> paramiko.PKey:
    """A host private key in OpenSSH or PEM format."""
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.SSHException:
        # paramiko 5.1.0 misreads ECDSA keys in OpenSSH's own format
        # ("Invalid key curve identifier"); cryptography reads them.
        with open(path, "rb") as handle:
            key = serialization.load_ssh_private_key(handle.read(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise
        return paramiko.ECDSAKey(vals=(key, key.public_key()))
