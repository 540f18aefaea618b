"""Finite-field and curve key exchanges paramiko lacks, as small subclasses
of its engines: the RFC 8731 name of curve25519, group 18, the SHA-1 groups
sshd 9.2 allows when configured, and group exchange with the group chosen by
the monitor (the net-child is chrooted and cannot read ModuliFile).  Every
finite-field group draws its private exponent as sshd does
(``exponent_bits``)."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Callable

from paramiko.common import byte_chr
from paramiko.kex_curve25519 import KexCurve25519
from paramiko.kex_gex import KexGexSHA256
from paramiko.kex_group14 import KexGroup14SHA256
from paramiko.kex_group16 import KexGroup16SHA512
from paramiko.message import Message
from paramiko.ssh_exception import SSHException

from privsep.config.moduli import GEX_MAX_BITS, GEX_MIN_BITS, GROUP1_P, GROUP18_P

log = logging.getLogger("privsep.transport")

#: What the transport asks for a group-exchange group: (min, want, max) bits
#: to (prime, generator).  Set by privsep.child.kex.install.
GexGroupSource = Callable[[int, int, int], "tuple[int, int]"]

_MSG_KEX_DH_GEX_REQUEST = 34
_MSG_KEX_DH_GEX_INIT = 32
c_MSG_KEX_DH_GEX_GROUP = byte_chr(31)


class KexCurve25519RFC8731(KexCurve25519):
    """curve25519-sha256: RFC 8731's name for curve25519-sha256@libssh.org,
    the same exchange."""

    name = "curve25519-sha256"


def exponent_bits(transport, prime_bits: int) -> int:
    """The size of our private exponent, as sshd's dh_gen_key: twice what
    the session needs (kex->we_need: the largest key, block, IV or MAC key
    of the agreed algorithms), at least 512 bits, below the prime's size.
    paramiko's engines draw 1024 bits for the fixed groups and as many as
    the prime for group exchange; each bit is Python modular arithmetic."""
    need = 0
    for name in (transport.local_cipher, transport.remote_cipher):
        info = transport._cipher_info.get(name)
        if info is None:  # a cipher paramiko does not describe: assume the largest need
            need = max(need, 64)
            continue
        need = max(need, info["key-size"], info["block-size"], info.get("iv-size", 0))
    for name in (transport.local_mac, transport.remote_mac):
        info = transport._mac_info.get(name) if name else None
        if info is not None:
            need = max(need, info["class"]().digest_size)  # an HMAC key is a digest long
    return min(2 * max(256, 8 * need), prime_bits - 1)


class SshdExponentMixin:
    """A private exponent of sshd's size (``exponent_bits``)."""

    transport: object

    def _prime(self) -> int:
        return getattr(self, "p", None) or self.P  # group exchange's, or the fixed group's

    def _generate_x(self) -> None:
        bits = exponent_bits(self.transport, self._prime().bit_length())
        self.x = secrets.randbits(bits) | (1 << (bits - 1))


class KexGroup14SHA256Sshd(SshdExponentMixin, KexGroup14SHA256):
    """diffie-hellman-group14-sha256."""


class KexGroup16SHA512Sshd(SshdExponentMixin, KexGroup16SHA512):
    """diffie-hellman-group16-sha512."""


class KexGroup18SHA512(SshdExponentMixin, KexGroup16SHA512):
    """diffie-hellman-group18-sha512 (RFC 8268): the 8192-bit MODP group."""

    name = "diffie-hellman-group18-sha512"
    P = GROUP18_P


class KexGroup14SHA1(SshdExponentMixin, KexGroup14SHA256):
    """diffie-hellman-group14-sha1 (RFC 4253): only when configured."""

    name = "diffie-hellman-group14-sha1"
    hash_algo = hashlib.sha1


class KexGroup1SHA1(SshdExponentMixin, KexGroup14SHA256):
    """diffie-hellman-group1-sha1 (RFC 4253, the 1024-bit group 2 of
    RFC 2409): only when configured."""

    name = "diffie-hellman-group1-sha1"
    P = GROUP1_P
    hash_algo = hashlib.sha1


class MonitorGexMixin(SshdExponentMixin):
    """Server side of group exchange as sshd's kexgexs.c: only the current
    GEX_REQUEST (sshd 9.2 has no handler for the old one), sizes refused
    unless min <= n <= max and max >= 2048, then brought into 2048..8192
    and sent to the monitor, which chooses the group."""

    transport: object

    def start_kex(self, _test_old_style: bool = False) -> None:
        if self.transport.server_mode:
            self.transport._expect_packet(_MSG_KEX_DH_GEX_REQUEST)
            return
        super().start_kex(_test_old_style)  # type: ignore[misc]

    def _parse_kexdh_gex_request(self, m: Message) -> None:
        lo, want, hi = m.get_int(), m.get_int(), m.get_int()
        if hi < lo or want < lo or hi < want or hi < GEX_MIN_BITS:
            log.debug("SSH2_MSG_KEX_DH_GEX_REQUEST: %d <= %d <= %d", lo, want, hi)
            raise SSHException("DH GEX group out of range")  # sshd's words (ssh_err)
        # The exchange hash covers what the client sent, not the clamped sizes.
        self.min_bits, self.preferred_bits, self.max_bits = lo, want, hi
        source: GexGroupSource = self.transport.gex_group_source
        self.p, self.g = source(max(GEX_MIN_BITS, lo), min(max(GEX_MIN_BITS, want), GEX_MAX_BITS),
                                min(GEX_MAX_BITS, hi))
        log.debug("SSH2_MSG_KEX_DH_GEX_GROUP sent: a %d-bit group for %d <= %d <= %d",
                  self.p.bit_length(), lo, want, hi)
        reply = Message()
        reply.add_byte(c_MSG_KEX_DH_GEX_GROUP)
        reply.add_mpint(self.p)
        reply.add_mpint(self.g)
        self.transport._send_message(reply)
        self.transport._expect_packet(_MSG_KEX_DH_GEX_INIT)

    def _parse_kexdh_gex_request_old(self, m: Message) -> None:
        raise SSHException("kex protocol error: type 30 (GEX_REQUEST_OLD) is not supported")


class KexGexSHA256Monitor(MonitorGexMixin, KexGexSHA256):
    """diffie-hellman-group-exchange-sha256."""


class KexGexSHA1Monitor(MonitorGexMixin, KexGexSHA256):
    """diffie-hellman-group-exchange-sha1: only when configured."""

    name = "diffie-hellman-group-exchange-sha1"
    hash_algo = hashlib.sha1
