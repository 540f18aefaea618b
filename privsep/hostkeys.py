"""Host keys: loaded and used for signing by root only; public halves for children.

The monitor holds the private keys.  The net-child and the session process
get a MonitorSignedHostKey per key: the public half, whose signatures are
requests to the monitor.
"""

from __future__ import annotations

import os
import subprocess
from typing import Callable

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from paramiko.message import Message

from privsep.sshbuf import Reader, Writer

#: ssh-keygen -A's set, under this daemon's directory.
DEFAULT_HOST_KEYS = (
    "/etc/privsep-sshd/ssh_host_rsa_key",
    "/etc/privsep-sshd/ssh_host_ecdsa_key",
    "/etc/privsep-sshd/ssh_host_ed25519_key",
)

_KEYGEN_ARGS = {"rsa": ["-t", "rsa", "-b", "3072"], "ecdsa": ["-t", "ecdsa"], "ed25519": ["-t", "ed25519"]}

#: The signature algorithms each key type can serve.
RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256")


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


def algorithms_for(key: paramiko.PKey) -> tuple[str, ...]:
    """The host-key algorithm names a key answers to in KEXINIT."""
    name = key.get_name()
    return RSA_ALGORITHMS if name == "ssh-rsa" else (name,)


def sign(keys: list[paramiko.PKey], algorithm: str, data: bytes) -> bytes | None:
    """The SSH signature blob of ``data`` by the key for ``algorithm``, or None."""
    for key in keys:
        if algorithm in algorithms_for(key):
            return key.sign_ssh_data(data, algorithm).asbytes()
    return None


class MonitorSignedHostKey:
    """A host key whose private half lives in the monitor.

    paramiko's key exchange needs only ``asbytes()`` and ``sign_ssh_data()``
    from the server key; everything else is delegated to the public key.
    """

    def __init__(self, public: paramiko.PKey, signer: Callable[[str, bytes], bytes]) -> None:
        self._public = public
        self._signer = signer

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> Message:
        return Message(self._signer(algorithm or self._public.get_name(), data))

    def __getattr__(self, name: str):
        return getattr(self._public, name)


def public_half(key: paramiko.PKey) -> paramiko.PKey:
    """The same key without its private part (what children may see)."""
    return paramiko.PKey.from_type_string(key.get_name(), key.asbytes())


def install_on(transport: paramiko.Transport, publics: list[paramiko.PKey],
               signer: Callable[[str, bytes], bytes]) -> None:
    """Offer ``publics`` as host keys, signing through ``signer``."""
    for public in publics:
        proxy = MonitorSignedHostKey(public, signer)
        for algorithm in algorithms_for(public):
            transport.server_key_dict[algorithm] = proxy


# --- hostkeys-prove-00@openssh.com (UpdateHostKeys) --------------------------------

HOSTKEYS_PROVE = "hostkeys-prove-00@openssh.com"


def hostkeys_prove_data(session_id: bytes, keyblob: bytes) -> bytes:
    """What sshd signs to prove it holds a host key: the request name, the
    session id and the key, each an SSH string."""
    return bytes(Writer().text(HOSTKEYS_PROVE).string(session_id).string(keyblob))


def parse_hostkeys_prove(data: bytes) -> tuple[bytes, bytes]:
    """(session id, key blob) of a hostkeys-prove blob; ValueError for anything else.

    Pure: the monitor uses it to decide whether a post-auth signature request
    is such a proof, and nothing more."""
    r = Reader(data, what="hostkeys-prove blob")
    name, session_id, keyblob = r.string(), r.string(), r.string()
    if r.remaining():
        raise ValueError("trailing bytes after hostkeys-prove blob")
    if name != HOSTKEYS_PROVE.encode():
        raise ValueError("not a hostkeys-prove blob")
    if not session_id or not keyblob:
        raise ValueError("empty session id or key in hostkeys-prove blob")
    return session_id, keyblob


def blob_key_type(keyblob: bytes) -> str:
    """The key type named at the start of a public key blob ('' if malformed)."""
    try:
        return Reader(keyblob).string().decode("ascii")
    except ValueError:  # truncated, or not ASCII (UnicodeDecodeError)
        return ""
