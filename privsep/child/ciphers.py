"""The ciphers, MACs and compression both children's transports know beyond
paramiko's own: chacha20-poly1305@openssh.com (its engine is
child/chachapoly.py, its packet path child/packetizer.CipherPacketizer) and
the encrypt-then-MAC forms of hmac-sha1 and hmac-md5 that OpenSSH 9.2 has,
and its umac MACs (child/umac.py).

Which of them are offered is the configuration's business
(config/algorithms.py); this only teaches paramiko the names."""

from __future__ import annotations

import hashlib
import types
from hashlib import md5, sha1

import paramiko

from privsep.child import chachapoly, umac
# what computes the umac tags paramiko asks for (its compute_mac replaces
# paramiko's HMAC-only function when imported): wherever this table is
# used, that is in place
from privsep.child import packetizer
from privsep.child.chachapoly import ChaChaPoly

#: paramiko's cipher table plus chacha20-poly1305.  It is an AEAD to paramiko
#: (no separate MAC, 8-byte blocks for the padding, no IV: the sequence
#: number is the nonce), so paramiko's _activate_* builds it with
#: ``ChaChaPoly(key)`` and hands it to the packetizer, which recognises it.
CIPHER_INFO: dict[str, dict] = {
    **paramiko.Transport._cipher_info,
    chachapoly.NAME: {"class": chachapoly.ChaChaPoly, "block-size": 8,
                      "key-size": chachapoly.KEY_SIZE, "iv-size": 0, "is_aead": True},
}

#: paramiko's MACs plus OpenSSH's -etm forms of SHA-1 and MD5, and the four
#: umac MACs (child/umac.py; child/packetizer.compute_mac computes them).
#: paramiko tells encrypt-then-MAC from the name ("etm@openssh.com" in it).
MAC_INFO: dict[str, dict] = {
    **paramiko.Transport._mac_info,
    **umac.MAC_INFO,
    "hmac-sha1-etm@openssh.com": {"class": sha1, "size": 20},
    "hmac-sha1-96-etm@openssh.com": {"class": sha1, "size": 12},
    "hmac-md5-etm@openssh.com": {"class": md5, "size": 16},
    "hmac-md5-96-etm@openssh.com": {"class": md5, "size": 12},
}

#: What sshd 9.2 offers with ``Compression yes`` (or ``delayed``): no
#: compression before authentication, so never plain "zlib".
COMPRESSION_ON = ("none", "zlib@openssh.com")
COMPRESSION_OFF = ("none",)

#: compression that starts only after authentication: at the hand-off both
#: streams are still fresh (the net-child stops right after USERAUTH_SUCCESS,
#: which is the point where they begin), so only the name crosses
DELAYED = "zlib@openssh.com"


def _is_aead(name: str | None) -> bool:
    return bool(name) and CIPHER_INFO.get(name, {}).get("is_aead", False)


class CipherTransportMixin:
    """Mixed into both children's paramiko.Transport subclasses, before it."""

    _cipher_info = CIPHER_INFO
    _mac_info = MAC_INFO
    #: True while paramiko negotiates (its _parse_kex_init)
    _choosing_macs = False

    def _parse_kex_init(self, m) -> None:
        self._choosing_macs = True
        try:
            super()._parse_kex_init(m)
        finally:
            self._choosing_macs = False

    @property
    def preferred_macs(self) -> tuple[str, ...]:
        """The configured MACs; but while a negotiation that agreed on AEAD
        ciphers both ways (GCM, chacha20-poly1305) chooses its MAC, any MAC
        we know: the MAC is unused then, and OpenSSH does not negotiate it
        at all, where paramiko would fail on a MAC list with nothing in
        common (a client with ``MACs=x`` and a server without x, say).
        paramiko agrees on the ciphers before it reads this."""
        macs = super().preferred_macs
        if self._choosing_macs and _is_aead(self.local_cipher) and _is_aead(self.remote_cipher):
            return macs + tuple(n for n in MAC_INFO if n not in macs)
        return macs


def compression_for(setting: str) -> tuple[str, ...]:
    """The compression list offered for sshd's ``Compression`` value."""
    return COMPRESSION_OFF if setting == "no" else COMPRESSION_ON


#: The digests the key exchanges and host key signatures hash with, beyond
#: the MACs' (sha1, sha256, sha512, md5).
_KEX_DIGESTS = ("sha1", "sha256", "sha384", "sha512")


def warm_up() -> None:
    """Build and run, once, an engine of every cipher, every MAC and the key
    exchanges' digests, with all-zero keys, in the listener before it
    forks anything.

    OpenSSL 3 looks an algorithm up in its provider's tables the first time a
    process asks for it, and keeps what it found: done in the listener, that
    is in every monitor, net-child and session process as shared pages,
    where done in each of them it was about 0.6 MB of each session process
    (measured, docs/DESIGN.md "Memory per session") and time on every
    login.  Nothing secret or random is involved: no key is made, no random
    number drawn (OpenSSL's random generator stays untouched by the
    listener), the keys and data are zeros."""
    zeros = bytes(64)
    # paramiko's own engine factory, on a stand-in for a transport: the very
    # calls the children make.
    factory = types.SimpleNamespace(_cipher_info=CIPHER_INFO,
                                    _ENCRYPT=paramiko.Transport._ENCRYPT)
    for name, info in CIPHER_INFO.items():
        key, iv = zeros[:info["key-size"]], zeros[:info["block-size"]]
        aead = info.get("is_aead", False)
        try:
            if aead:
                engine = paramiko.Transport._get_engine(factory, name, key, aead=True)
                if isinstance(engine, ChaChaPoly):
                    engine.seal(0, zeros[:16])
                else:
                    engine.encrypt(zeros[:12], zeros[:16], zeros[:4])
                continue
            for operation in (paramiko.Transport._ENCRYPT, paramiko.Transport._DECRYPT):
                engine = paramiko.Transport._get_engine(factory, name, key, iv=iv,
                                                        operation=operation)
                engine.update(zeros[:info["block-size"]])
        except Exception:  # noqa: BLE001 (cryptography's UnsupportedAlgorithm, say)
            # a cipher this OpenSSL build lacks: nothing to warm, and the
            # daemon offers what it has as before
            pass
    for name, info in MAC_INFO.items():
        # through the one function the packetizers use (UMAC keys are 16 bytes)
        packetizer.compute_mac(zeros[:16] if name in umac.MAC_INFO else zeros[:32],
                               zeros, info["class"])
    for digest in _KEX_DIGESTS:
        hashlib.new(digest, zeros).digest()
