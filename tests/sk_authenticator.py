"""A software FIDO/U2F authenticator for the tests: security keys
(sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com) whose
signatures have exactly the format a hardware token gives OpenSSH
(PROTOCOL.u2f): over SHA256(application) || flags || counter ||
[extensions ||] SHA256(message), plus the webauthn form.  ssh-keygen cannot
make these without hardware, so the tests make them here, and paramiko's
client offers them (it asks a key only for get_name, asbytes and
sign_ssh_data).
"""

from __future__ import annotations

import base64
import hashlib
import struct

import paramiko
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
WEBAUTHN = "webauthn-sk-ecdsa-sha2-nistp256@openssh.com"
USER_PRESENT = 0x01
USER_VERIFIED = 0x04


def sshstr(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack(">I", len(raw)) + raw


def mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return sshstr(raw)


class SoftSecurityKey:
    """One security key.  ``flags`` are what each signature reports (user
    present by default); ``webauthn`` makes ECDSA signatures in the webauthn
    form; ``certificate`` (a -cert-v01 blob) makes the key offer it."""

    public_blob = None  # paramiko: sign over asbytes() itself

    def __init__(self, kind: str = "ed25519", application: str = "ssh:",
                 flags: int = USER_PRESENT, webauthn: bool = False) -> None:
        self.kind = kind
        self.application = application
        self.flags = flags
        self.webauthn = webauthn
        self.counter = 0
        self.certificate: bytes | None = None
        if kind == "ed25519":
            self._private = ed25519.Ed25519PrivateKey.generate()
            raw = self._private.public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)
            self.plain_blob = sshstr(SK_ED25519) + sshstr(raw) + sshstr(application)
        else:
            self._private = ec.generate_private_key(ec.SECP256R1())
            point = self._private.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            self.plain_blob = (sshstr(SK_ECDSA) + sshstr("nistp256") + sshstr(point)
                               + sshstr(application))

    @property
    def key_type(self) -> str:
        return SK_ED25519 if self.kind == "ed25519" else SK_ECDSA

    def get_name(self) -> str:
        if self.certificate is not None:
            (length,) = struct.unpack(">I", self.certificate[:4])
            return self.certificate[4:4 + length].decode()
        return self.key_type

    def asbytes(self) -> bytes:
        return self.certificate if self.certificate is not None else self.plain_blob

    def public_line(self, comment: str = "softkey") -> str:
        return f"{self.key_type} {base64.b64encode(self.plain_blob).decode()} {comment}"

    def can_sign(self) -> bool:
        return True

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        """The signature blob a token would give ssh-sk-helper."""
        self.counter += 1
        app_hash = hashlib.sha256(self.application.encode()).digest()
        head = app_hash + bytes([self.flags]) + struct.pack(">I", self.counter)
        if self.kind == "ed25519":
            raw = self._private.sign(head + hashlib.sha256(data).digest())
            return paramiko.Message(sshstr(SK_ED25519) + sshstr(raw) + head[32:])
        if self.webauthn:
            origin = "https://softkey.test"
            challenge = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
            client_data = ('{"type":"webauthn.get","challenge":"' + challenge
                           + '","origin":"' + origin + '","crossOrigin":false}').encode()
            message_hash = hashlib.sha256(client_data).digest()
        else:
            message_hash = hashlib.sha256(data).digest()
        der = self._private.sign(head + message_hash, ec.ECDSA(hashes.SHA256()))
        r_value, s_value = decode_dss_signature(der)
        inner = sshstr(mpint(r_value) + mpint(s_value))
        if not self.webauthn:
            return paramiko.Message(sshstr(SK_ECDSA) + inner + head[32:])
        return paramiko.Message(sshstr(WEBAUTHN) + inner + head[32:] + sshstr(origin)
                                + sshstr(client_data) + sshstr(b""))
