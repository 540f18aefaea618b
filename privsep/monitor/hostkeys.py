"""Host private keys in the monitor: signing, and the public halves given to
the children."""

from __future__ import annotations

import paramiko

from privsep.wire.hostkey_blobs import algorithms_for_type


def sign(keys: list[paramiko.PKey], algorithm: str, data: bytes) -> bytes | None:
    """The SSH signature blob of ``data`` by the key for ``algorithm``, or None."""
    for key in keys:
        if algorithm in algorithms_for_type(key.get_name()):
            return key.sign_ssh_data(data, algorithm).asbytes()
    return None


def public_half(key: paramiko.PKey) -> paramiko.PKey:
    """The same key without its private part (what children may see)."""
    return paramiko.PKey.from_type_string(key.get_name(), key.asbytes())
