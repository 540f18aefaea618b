"""ssh-dss public keys and signatures, pure (RFC 4253 section 6.6: DSA with
SHA-1, FIPS 186-2).  sshd 9.2 still accepts them when configured (HostKey
with a DSA key, ``HostKeyAlgorithms +ssh-dss``, ``PubkeyAcceptedAlgorithms
+ssh-dss``); paramiko 5 dropped DSA, so the verification is here: a few
lines of modular arithmetic on Python integers, no library needed, which
the monitor, the signer and both children can share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from privsep.wire.sshbuf import Reader, Writer

NAME = "ssh-dss"
#: OpenSSH's sizes for DSA keys (SSH_DSA_BITS, and a 160-bit subgroup).
P_BITS, Q_BITS = 1024, 160
#: A signature is r and s, 20 bytes each.
SIGNATURE_BYTES = 40


@dataclass(frozen=True)
class DSSPublicKey:
    """A DSA public key: the few methods paramiko's keys offer that the
    transport and the monitor use (asbytes, get_name, get_bits,
    verify_ssh_sig)."""

    p: int
    q: int
    g: int
    y: int

    @classmethod
    def from_blob(cls, blob: bytes) -> "DSSPublicKey":
        """Parse an ssh-dss public key blob strictly; ValueError otherwise."""
        r = Reader(blob)
        if r.name("key type") != NAME:
            raise ValueError("not an ssh-dss key")
        key = cls(r.mpint(), r.mpint(), r.mpint(), r.mpint())
        r.end()
        if key.p.bit_length() != P_BITS or key.q.bit_length() != Q_BITS:
            raise ValueError("Invalid key length")
        if not (1 < key.g < key.p and 1 < key.y < key.p) or (key.p - 1) % key.q:
            raise ValueError("invalid DSA parameters")
        return key

    def asbytes(self) -> bytes:
        return bytes(Writer().text(NAME).mpint(self.p).mpint(self.q).mpint(self.g).mpint(self.y))

    def get_name(self) -> str:
        return NAME

    def get_bits(self) -> int:
        return self.p.bit_length()

    def verify(self, data: bytes, raw: bytes) -> bool:
        """Whether ``raw`` (r || s, 20 bytes each) signs ``data``."""
        if len(raw) != SIGNATURE_BYTES:
            return False
        r, s = int.from_bytes(raw[:20], "big"), int.from_bytes(raw[20:], "big")
        if not (0 < r < self.q and 0 < s < self.q):
            return False
        w = pow(s, -1, self.q)
        h = int.from_bytes(hashlib.sha1(data).digest(), "big")
        v = pow(self.g, h * w % self.q, self.p) * pow(self.y, r * w % self.q, self.p)
        return v % self.p % self.q == r

    def verify_ssh_sig(self, data: bytes, msg) -> bool:
        """Verify an SSH signature blob (``msg.asbytes()``: string "ssh-dss",
        string r || s); anything malformed is False."""
        try:
            reader = Reader(msg.asbytes())
            ok = reader.name("algorithm") == NAME
            raw = reader.string()
            reader.end()
        except ValueError:
            return False
        return ok and self.verify(data, raw)


def signature_blob(r: int, s: int) -> bytes:
    """The SSH signature blob of a DSA signature (r, s)."""
    return bytes(Writer().text(NAME).string(r.to_bytes(20, "big") + s.to_bytes(20, "big")))
