"""Host keys as the children hold them: the public half, signing through the
monitor.  The net-child and the session process offer these to paramiko; the
private halves never leave the monitor.
"""

from __future__ import annotations

from typing import Callable

import paramiko
from paramiko.message import Message

from privsep.wire import dss
from privsep.wire.certs import CERT_SUFFIX
from privsep.wire.hostkey_blobs import HostKey, algorithms_for_type


def public_keys(keys: list[HostKey]) -> list[paramiko.PKey]:
    """The public halves as paramiko keys, for the children to offer; a key
    with a HostCertificate carries it (paramiko's public_blob), and the
    children offer it under the -cert-v01 algorithms as well."""
    publics = []
    for k in keys:
        if k.key_type == dss.NAME:  # paramiko 5 has no DSA
            public = dss.DSSPublicKey.from_blob(k.blob)
        else:
            public = paramiko.PKey.from_type_string(k.key_type, k.blob)
        if k.certificate:
            public.load_certificate(Message(k.certificate))
        if isinstance(public, paramiko.PKey):  # DSSPublicKey: frozen, and keeps its blob
            _pin_blob(public, k.blob)
        publics.append(public)
    return publics


def _pin_blob(public: paramiko.PKey, blob: bytes) -> None:
    """Make ``public.asbytes()`` answer ``blob`` without rebuilding it.

    paramiko rebuilds a key's blob from its numbers at every call, through
    cryptography; the session process does it for every host key it
    announces (hostkeys-00), the net-child in the key exchange.  Made once
    here, in the listener, the blob is on pages every child shares, where
    each session process otherwise copied about 0.2 MB of pages for the
    rebuilding (docs/DESIGN.md, "Memory per session").  Pinned only when
    paramiko's own answer is the same bytes."""
    if public.asbytes() == blob:
        public.asbytes = lambda: blob  # an instance attribute, over the method


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


class MonitorSignedHostCert(MonitorSignedHostKey):
    """A host key's HostCertificate: the key exchange sends the certificate
    and the key signs under its plain algorithm (ssh-ed25519 for
    ssh-ed25519-cert-v01@openssh.com, rsa-sha2-512 for
    rsa-sha2-512-cert-v01@openssh.com)."""

    def asbytes(self) -> bytes:
        return self._public.public_blob.key_blob

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> Message:
        plain = (algorithm or self._public.get_name()).removesuffix(CERT_SUFFIX)
        return super().sign_ssh_data(data, plain)


def install_on(transport: paramiko.Transport, publics: list[paramiko.PKey],
               signer: Callable[[str, bytes], bytes]) -> None:
    """Offer ``publics`` as host keys, signing through ``signer``; a key
    that carries a certificate is offered under the -cert-v01 algorithms too."""
    for public in publics:
        proxy = MonitorSignedHostKey(public, signer)
        for algorithm in algorithms_for_type(public.get_name()):
            transport.server_key_dict[algorithm] = proxy
            if getattr(public, "public_blob", None) is not None:
                transport.server_key_dict[algorithm + CERT_SUFFIX] = \
                    MonitorSignedHostCert(public, signer)
