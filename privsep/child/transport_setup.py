"""The algorithms and identification a server transport offers, shared by the
net-child (first key exchange) and the session process (rekeys)."""

from __future__ import annotations

import paramiko

from privsep import __version__
from privsep.config.servconf import SUPPORTED_ALGORITHMS, ServerOptions

#: Our identification string.  The stock client turns on OpenSSH's protocol
#: extensions (eow@openssh.com, no-more-sessions@openssh.com) only for a
#: peer whose software version starts with "OpenSSH"; this daemon implements
#: them, so it says it is compatible, without a version number that tools
#: would take for a release of OpenSSH.  Our own name and version follow as
#: the comment.  RFC 4253 forbids '-' and spaces in the software version.
VERSION = f"SSH-2.0-OpenSSH_compatible privsep_sshd_{__version__}"

#: Ciphers whose state the hand-off can carry: CTR (a keystream position) and
#: GCM (a nonce).  CBC would need its last block and is not offered.
HANDOFF_CIPHERS = SUPPORTED_ALGORITHMS["ciphers"]


def configure(transport: paramiko.Transport, options: ServerOptions) -> None:
    security = transport.get_security_options()
    security.ciphers = tuple(c for c in options.ciphers if c in HANDOFF_CIPHERS) or HANDOFF_CIPHERS
    security.digests = tuple(options.macs)
    security.kex = tuple(options.kex_algorithms)
    security.key_types = tuple(options.host_key_algorithms)
    # What server-sig-algs advertises and userauth accepts.
    transport._preferred_pubkeys = tuple(options.pubkey_accepted_algorithms)
    if not transport.remote_version:  # the first banner; a resumed transport keeps its own
        transport.local_version = VERSION
        if options.version_addendum.lower() != "none":
            transport.local_version += " " + options.version_addendum
