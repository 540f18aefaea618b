"""RevokedKeys files, pure: OpenSSH's binary key revocation lists
(PROTOCOL.krl, as ``ssh-keygen -k`` writes them) and plain lists of public
keys, parsed from bytes the monitor read, and asked whether a key is revoked.

The parser is strict and bounded: every length is checked against what is
left, serial bitmaps stay integers (never expanded bit by bit), and anything
malformed is a ValueError, so a hostile or truncated file refuses every key
(as sshd does) rather than crashing the monitor.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass, field

from privsep.wire.certs import Certificate, is_cert_type, parse_certificate
from privsep.wire.sshbuf import Reader

KRL_MAGIC = b"SSHKRL\n\0"
KRL_FORMAT_VERSION = 1

SECTION_CERTIFICATES = 1
SECTION_EXPLICIT_KEY = 2
SECTION_FINGERPRINT_SHA1 = 3
SECTION_SIGNATURE = 4
SECTION_FINGERPRINT_SHA256 = 5

CERT_SERIAL_LIST = 0x20
CERT_SERIAL_RANGE = 0x21
CERT_SERIAL_BITMAP = 0x22
CERT_KEY_ID = 0x23

_U64_MAX = (1 << 64) - 1


@dataclass
class CertRevocations:
    """What one certificate section revokes for one CA (``ca_key`` b"": any CA)."""

    ca_key: bytes
    ranges: list[tuple[int, int]] = field(default_factory=list)
    #: (offset, bitmap): bit N set revokes serial offset + N
    bitmaps: list[tuple[int, int]] = field(default_factory=list)
    key_ids: set[str] = field(default_factory=set)

    def revokes(self, cert: Certificate) -> bool:
        if cert.key_id in self.key_ids:
            return True
        serial = cert.serial
        if serial == 0:  # the default when the CA names none: never revoked by serial
            return False
        if any(lo <= serial <= hi for lo, hi in self.ranges):
            return True
        return any(serial >= off and (bits >> (serial - off)) & 1 for off, bits in self.bitmaps)


@dataclass
class Krl:
    """A parsed KRL (or a plain key list: only ``keys`` filled)."""

    version: int = 0
    generated: int = 0
    comment: str = ""
    certs: list[CertRevocations] = field(default_factory=list)
    keys: set[bytes] = field(default_factory=set)
    sha1: set[bytes] = field(default_factory=set)
    sha256: set[bytes] = field(default_factory=set)
    #: (signing key blob, signature blob, length of the KRL it covers)
    signatures: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    #: a plain key list: a certificate is also revoked when its CA is listed
    plain_list: bool = False
    #: the KRL's bytes, which its signatures cover in part
    raw: bytes = b""

    def key_revoked(self, plain_blob: bytes) -> bool:
        """Whether a plain key (or a certificate's certified key) is revoked."""
        return (plain_blob in self.keys
                or hashlib.sha1(plain_blob).digest() in self.sha1
                or hashlib.sha256(plain_blob).digest() in self.sha256)

    def cert_revoked(self, cert: Certificate) -> bool:
        """Whether a certificate is revoked: by serial or key id for its CA
        (or for any CA), by its certified key, or through its CA's key."""
        if self.key_revoked(cert.key_blob) or self.key_revoked(cert.signature_key):
            return True
        return any(section.ca_key in (b"", cert.signature_key) and section.revokes(cert)
                   for section in self.certs)


def is_krl(data: bytes) -> bool:
    return data.startswith(KRL_MAGIC)


def _cert_section(data: bytes) -> CertRevocations:
    r = Reader(data, what="KRL certificate section")
    section = CertRevocations(r.string())
    r.string()  # reserved
    while r.remaining():
        kind = r.byte()
        sub = Reader(r.string(), what="KRL certificate subsection")
        if kind == CERT_SERIAL_LIST:
            while sub.remaining():
                serial = sub.uint64()
                if serial == 0:
                    raise ValueError("KRL revokes serial 0")
                section.ranges.append((serial, serial))
        elif kind == CERT_SERIAL_RANGE:
            lo, hi = sub.uint64(), sub.uint64()
            if lo == 0 or lo > hi:
                raise ValueError(f"bad KRL serial range {lo}:{hi}")
            section.ranges.append((lo, hi))
        elif kind == CERT_SERIAL_BITMAP:
            offset, bits = sub.uint64(), sub.mpint()
            if offset + bits.bit_length() - 1 > _U64_MAX:
                raise ValueError("KRL serial bitmap wraps u64")
            if offset == 0 and bits & 1:
                raise ValueError("KRL revokes serial 0")
            section.bitmaps.append((offset, bits))
        elif kind == CERT_KEY_ID:
            if not sub.remaining():
                raise ValueError("empty KRL key id section")
            while sub.remaining():
                section.key_ids.add(sub.name("key id"))
        else:
            raise ValueError(f"Unsupported KRL certificate section {kind}")
        sub.end()
    return section


def _blob_section(data: bytes, target: set[bytes], size: int | None) -> None:
    r = Reader(data, what="KRL key section")
    while r.remaining():
        blob = r.string()
        if size is not None and len(blob) != size:
            raise ValueError("KRL hash of the wrong length")
        if not blob:
            raise ValueError("empty key in KRL")
        target.add(blob)


def parse_krl(data: bytes) -> Krl:
    """Parse a binary KRL; ValueError if it is not one or is malformed."""
    if not is_krl(data):
        raise ValueError("not a KRL")
    r = Reader(data[len(KRL_MAGIC):], what="KRL")
    if r.uint32() != KRL_FORMAT_VERSION:
        raise ValueError("unsupported KRL format version")
    krl = Krl(version=r.uint64(), generated=r.uint64(), raw=data)
    r.uint64()  # flags: none defined
    r.string()  # reserved
    krl.comment = r.string().decode("utf-8", "replace")
    while r.remaining():
        kind = r.byte()
        if kind == SECTION_SIGNATURE:
            key = r.string()
            signed_len = len(data) - r.remaining()
            krl.signatures.append((key, r.string(), signed_len))
            continue
        if krl.signatures:
            raise ValueError("KRL contains non-signature section after signature")
        body = r.string()
        if kind == SECTION_CERTIFICATES:
            krl.certs.append(_cert_section(body))
        elif kind == SECTION_EXPLICIT_KEY:
            _blob_section(body, krl.keys, None)
        elif kind == SECTION_FINGERPRINT_SHA1:
            _blob_section(body, krl.sha1, 20)
        elif kind == SECTION_FINGERPRINT_SHA256:
            _blob_section(body, krl.sha256, 32)
        else:
            raise ValueError(f"Unsupported KRL section {kind}")
    return krl


def parse_key_list(text: str) -> Krl:
    """A plain RevokedKeys file: one public key a line ("type base64
    [comment]"), blank lines and # comments skipped; a line that does not
    hold a key is skipped as sshd skips it.  Certificates listed are taken
    by their certified key."""
    krl = Krl(plain_list=True)
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        for keytype, encoded in zip(words, words[1:]):
            try:
                blob = binascii.a2b_base64(encoded.encode("ascii"), strict_mode=True)
                if Reader(blob).name() != keytype:
                    continue
            except (ValueError, UnicodeEncodeError, binascii.Error):
                continue
            krl.keys.add(_plain_blob(blob))
            break
    return krl


def _plain_blob(blob: bytes) -> bytes:
    """The certified key of a certificate blob; any other blob unchanged."""
    try:
        if is_cert_type(Reader(blob).name()):
            return parse_certificate(blob).key_blob
    except ValueError:
        pass
    return blob


def parse_revoked_keys(data: bytes) -> Krl:
    """A RevokedKeys file's bytes: a KRL if it starts with the KRL magic,
    else a plain key list (as sshd's sshkey_check_revoked)."""
    if is_krl(data):
        return parse_krl(data)
    return parse_key_list(data.decode("utf-8", "replace"))
