"""The client side of sntrup761x25519-sha512 on a paramiko client, for
tests: paramiko has none, and with it paramiko logs in to OpenSSH's sshd
(whose sntrup761 is the reference) and to this daemon.  The exchange hash
and the sizes are the daemon's own engine's (privsep/child/kex/sntrup.py)."""

from __future__ import annotations

import paramiko
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paramiko.common import byte_chr
from paramiko.message import Message
from paramiko.ssh_exception import SSHException
from pqcrypto.kem import sntrup_761

from privsep.child.kex.sntrup import KexSntrup761X25519

_MSG_KEX_ECDH_INIT, _MSG_KEX_ECDH_REPLY = 30, 31


class ClientSntrup761X25519(KexSntrup761X25519):
    def start_kex(self) -> None:
        assert not self.transport.server_mode
        self.x25519_key = X25519PrivateKey.generate()
        self.kem_public, self.kem_secret = sntrup_761.keygen()
        m = Message()
        m.add_byte(byte_chr(_MSG_KEX_ECDH_INIT))
        m.add_string(self._client_init())
        self.transport._send_message(m)
        self.transport._expect_packet(_MSG_KEX_ECDH_REPLY)

    def _client_init(self) -> bytes:
        return self.kem_public + self.x25519_key.public_key().public_bytes_raw()

    def _parse_hybrid_reply(self, m: Message) -> None:
        host_key, s_reply, sig = m.get_string(), m.get_string(), m.get_binary()
        if len(s_reply) != self._S_REPLY_BYTES:
            raise SSHException(f"server reply of {len(s_reply)} bytes")
        ciphertext = s_reply[:self._MLKEM_CIPHERTEXT_BYTES]
        kem_secret = sntrup_761.decaps(self.kem_secret, ciphertext)
        x25519_secret = self._x25519_exchange(s_reply[self._MLKEM_CIPHERTEXT_BYTES:])
        k = self.hash_algo(kem_secret + x25519_secret).digest()
        self.transport._set_K_H(k, self._exchange_hash(host_key, self._client_init(), s_reply, k))
        self.transport._verify_key(host_key, sig)
        self.transport._activate_outbound()


def client_transport(port: int, name: str = "sntrup761x25519-sha512@openssh.com"
                     ) -> paramiko.Transport:
    """A paramiko client transport to 127.0.0.1:port offering only ``name``."""
    transport = paramiko.Transport(("127.0.0.1", port))
    transport._kex_info = {**transport._kex_info, name: ClientSntrup761X25519}
    transport._preferred_kex = (name,)
    return transport
