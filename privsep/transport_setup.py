"""The algorithm choices a server transport offers, shared by the net-child
(first key exchange) and the session process (rekeys)."""

from __future__ import annotations

import paramiko

from privsep import __version__
from privsep.servconf import ServerOptions

#: Our identification string; RFC 4253 forbids '-' in the software version.
VERSION = f"SSH-2.0-privsep_sshd_{__version__}"

#: Ciphers whose state the hand-off can carry: CTR (a keystream position) and
#: GCM (a nonce).  CBC would need its last block and is not offered.
HANDOFF_CIPHERS = (
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
    "aes128-ctr", "aes192-ctr", "aes256-ctr",
)


def configure(transport: paramiko.Transport, options: ServerOptions) -> None:
    wanted = options.ciphers or list(HANDOFF_CIPHERS)
    ciphers = tuple(c for c in wanted if c in HANDOFF_CIPHERS)
    transport.get_security_options().ciphers = ciphers or HANDOFF_CIPHERS
    if not transport.remote_version:  # the first banner; a resumed transport keeps its own
        transport.local_version = VERSION
