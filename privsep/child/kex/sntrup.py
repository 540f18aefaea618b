"""sntrup761x25519-sha512 (and its @openssh.com name): Streamlined NTRU
Prime 761 combined with X25519, as OpenSSH's kexsntrup761x25519.c.

The KEM comes from pqcrypto (PyPI, Rust inside); the X25519 half, the
message numbers (30/31) and the framing are those of paramiko's
mlkem768x25519-sha256, which has the same shape: the client sends its KEM
public key followed by its X25519 key, the server answers with the KEM
ciphertext followed by its X25519 key, and the shared secret is
K = SHA-512(kem_secret || x25519_secret), hashed and signed as a string
(not an mpint).  Only the KEM steps and the sizes differ, so this class
overrides those and keeps paramiko's X25519 and message handling.
Server side only: tests/kex_client.py adds the client side for tests."""

from __future__ import annotations

import hashlib

from paramiko.common import byte_chr
from paramiko.kex_mlkem import KexMLKEM768X25519
from paramiko.message import Message
from paramiko.ssh_exception import SSHException

try:
    from pqcrypto.kem import sntrup_761
except ImportError:  # pragma: no cover - pqcrypto is a pinned dependency
    sntrup_761 = None

c_MSG_KEX_ECDH_REPLY = byte_chr(31)


class KexSntrup761X25519(KexMLKEM768X25519):
    name = "sntrup761x25519-sha512"
    hash_algo = hashlib.sha512
    _MLKEM_PUBKEY_BYTES = 1158  # sntrup761 public key
    _MLKEM_CIPHERTEXT_BYTES = 1039  # sntrup761 ciphertext
    _C_INIT_BYTES = _MLKEM_PUBKEY_BYTES + KexMLKEM768X25519._X25519_PUBKEY_BYTES
    _S_REPLY_BYTES = _MLKEM_CIPHERTEXT_BYTES + KexMLKEM768X25519._X25519_PUBKEY_BYTES

    @classmethod
    def is_available(cls) -> bool:
        return sntrup_761 is not None and KexMLKEM768X25519.is_available()

    def _exchange_hash(self, host_key: bytes, c_init: bytes, s_reply: bytes, k: bytes) -> bytes:
        """H over (V_C, V_S, I_C, I_S, K_S, client init, server reply, K)."""
        hm = Message()
        if self.transport.server_mode:
            hm.add(self.transport.remote_version, self.transport.local_version,
                   self.transport.remote_kex_init, self.transport.local_kex_init)
        else:
            hm.add(self.transport.local_version, self.transport.remote_version,
                   self.transport.local_kex_init, self.transport.remote_kex_init)
        hm.add_string(host_key)
        hm.add_string(c_init)
        hm.add_string(s_reply)
        hm.add_string(k)
        return self.hash_algo(hm.asbytes()).digest()

    # ---- server side: encapsulate to the client's key -------------------

    def _parse_hybrid_init(self, m: Message) -> None:
        c_init = m.get_string()
        if len(c_init) != self._C_INIT_BYTES:
            # sshd's words for a client key of the wrong size (kex_kem_sntrup761x25519_enc)
            raise SSHException("incorrect signature")
        kem_public, x25519_public = (c_init[:self._MLKEM_PUBKEY_BYTES],
                                     c_init[self._MLKEM_PUBKEY_BYTES:])
        ciphertext, kem_secret = sntrup_761.encaps(kem_public)
        k = self.hash_algo(kem_secret + self._x25519_exchange(x25519_public)).digest()
        s_reply = ciphertext + self.x25519_key.public_key().public_bytes_raw()
        server_key = self.transport.get_server_key()
        host_key = server_key.asbytes()
        h = self._exchange_hash(host_key, c_init, s_reply, k)
        self.transport._set_K_H(k, h)
        reply = Message()
        reply.add_byte(c_MSG_KEX_ECDH_REPLY)
        reply.add_string(host_key)
        reply.add_string(s_reply)
        reply.add_string(server_key.sign_ssh_data(h, self.transport.host_key_type))
        self.transport._send_message(reply)
        self.transport._activate_outbound()


class KexSntrup761X25519OpenSSH(KexSntrup761X25519):
    name = "sntrup761x25519-sha512@openssh.com"
