"""The algorithms and identification a server transport offers, shared by the
net-child (first key exchange) and the session process (rekeys)."""

from __future__ import annotations

import logging
import struct
import traceback

import paramiko

from privsep import __version__
from privsep.child import kex
from privsep.child.ciphers import compression_for
from privsep.config.algorithms import implemented
from privsep.config.servconf import ServerOptions

log = logging.getLogger("privsep.transport")

#: Our identification string.  The stock client turns on OpenSSH's protocol
#: extensions (eow@openssh.com, no-more-sessions@openssh.com) only for a
#: peer whose software version starts with "OpenSSH"; this daemon implements
#: them, so it says it is compatible, without a version number that tools
#: would take for a release of OpenSSH.  Our own name and version follow as
#: the comment.  RFC 4253 forbids '-' and spaces in the software version.
VERSION = f"SSH-2.0-OpenSSH_compatible privsep_sshd_{__version__}"

#: Ciphers whose state the hand-off can carry: CTR (a keystream position),
#: CBC (its last block), GCM (a nonce) and chacha20-poly1305 (the key).
HANDOFF_CIPHERS = implemented("ciphers")


def name_every_message_type() -> None:
    """paramiko's run loop answers a message type no handler takes with
    UNIMPLEMENTED, as sshd's dispatch_protocol_error does, but first looks
    its name up in MSG_NAMES, which lacks most of the 256 types: a KeyError
    that ended the connection without a word.  Found by tests/fuzz.py.
    The listener does it once before it forks; a child then finds it done."""
    names = paramiko.common.MSG_NAMES
    if len(names) >= 256:
        return
    for ptype in range(256):
        names.setdefault(ptype, f"unknown-{ptype}")


#: Exceptions a malformed message raises while paramiko parses it: the
#: client's fault, told in sshd's words ("invalid format"), never a crash.
MALFORMED = (IndexError, ValueError, OverflowError, UnicodeError, struct.error)


def failure_text(exc: BaseException) -> str:
    """What ended a transport, for the log: sshd's words where it has them."""
    if isinstance(exc, UnicodeError):
        return "invalid format (a string is not UTF-8)"
    if isinstance(exc, MALFORMED) and not isinstance(exc, paramiko.SSHException):
        return "invalid format"
    if isinstance(exc, (paramiko.SSHException, EOFError, OSError, MemoryError)):
        return str(exc) or type(exc).__name__
    # Anything else is a bug in the daemon: say so, with where it happened.
    frames = traceback.extract_tb(exc.__traceback__)
    where = " at " + " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                                for f in reversed(frames[-4:])) if frames else ""
    return f"Unknown exception: {type(exc).__name__}: {exc}{where}"


def check_newkeys(transport: paramiko.Transport) -> None:
    """Called first in _parse_newkeys: a NEWKEYS that ends no key exchange of
    ours (no shared secret computed) is the client's protocol error, where
    paramiko would switch keys with a secret of None and die of a TypeError.
    Found by tests/fuzz.py."""
    if transport.K is None:
        raise paramiko.SSHException("kex protocol error: NEWKEYS outside a key exchange")


#: sshd's bound on the extensions in one EXT_INFO (kex_input_ext_info)
MAX_EXT_INFO = 1024


def check_ext_info(m: paramiko.Message) -> None:
    """Called first in _parse_ext_info: paramiko reads as many extensions as
    the count says, up to 2^32 (a core spinning and memory filling)."""
    count = m.get_int()
    m.rewind()
    if count >= MAX_EXT_INFO:
        raise paramiko.SSHException("SSH2_MSG_EXT_INFO: too many extensions")


def send_ext_info(transport: paramiko.Transport, extensions: dict[str, str]) -> None:
    """SSH2_MSG_EXT_INFO (RFC 8308) with ``extensions``, in their order."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_EXT_INFO)
    m.add_int(len(extensions))
    for name, value in extensions.items():
        m.add_string(name)
        m.add_string(value)
    transport._send_message(m)


def parse_debug(m: paramiko.Message) -> None:
    """A client's SSH2_MSG_DEBUG, in place of paramiko's _parse_debug, which
    escapes the text by concatenating bytes one at a time: for a string of
    a megabyte (a length paramiko pads with zeros) that is quadratic, a core
    busy for hours on one packet.  Found by tests/fuzz.py."""
    m.get_boolean()  # always_display
    text = m.get_string()[:900]
    log.debug("Remote: %s", text.decode("utf-8", "replace"))


def identification(options: ServerOptions) -> str:
    """Our identification string (without CR LF), VersionAddendum included."""
    if options.version_addendum.lower() != "none":
        return f"{VERSION} {options.version_addendum}"
    return VERSION


def configure(transport: paramiko.Transport, options: ServerOptions,
              gex_groups: kex.GexGroupSource | None = None) -> None:
    """Our algorithms and banner on a server transport; group exchange asks
    ``gex_groups`` (the monitor: MonitorClient.gex_group) for its groups,
    and is not offered without it."""
    name_every_message_type()
    security = transport.get_security_options()
    security.ciphers = tuple(c for c in options.ciphers if c in HANDOFF_CIPHERS) or HANDOFF_CIPHERS
    security.digests = tuple(options.macs)
    security.compression = compression_for(options.compression)
    kex.install(transport, options.kex_algorithms, gex_groups)
    # Set directly: paramiko's setter refuses names it has no class for
    # (certificates, security keys), which OpenSSH's default list names and
    # KEXINIT leaves out anyway unless a host key of that type is loaded.
    transport._preferred_keys = tuple(options.host_key_algorithms)
    # What server-sig-algs advertises and userauth accepts.
    transport._preferred_pubkeys = tuple(options.pubkey_accepted_algorithms)
    if not transport.remote_version:  # the first banner; a resumed transport keeps its own
        transport.local_version = identification(options)
