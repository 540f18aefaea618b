"""Host keys as the children hold them: the public half, signing through the
monitor.  The net-child and the session process offer these to paramiko; the
private halves never leave the monitor.
"""

from __future__ import annotations

from typing import Callable

import paramiko
from paramiko.message import Message

from privsep.wire.hostkey_blobs import algorithms_for_type


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


def install_on(transport: paramiko.Transport, publics: list[paramiko.PKey],
               signer: Callable[[str, bytes], bytes]) -> None:
    """Offer ``publics`` as host keys, signing through ``signer``."""
    for public in publics:
        proxy = MonitorSignedHostKey(public, signer)
        for algorithm in algorithms_for_type(public.get_name()):
            transport.server_key_dict[algorithm] = proxy
