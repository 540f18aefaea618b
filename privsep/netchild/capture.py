"""The net-child's half of the transport hand-off: remember, while the key
exchange runs, what the session process will need to carry the connection on.

paramiko has no API to move a live transport between processes.  These
subclasses override its single-underscore hooks and read the Packetizer's
private counters (privsep/child/packetizer.py); paramiko is pinned to the
exact version in pyproject.toml and tests/test_handoff_internals.py fails
loudly if the internals move.  What crosses is wire.messages.TransportState.

Captured per direction: the cipher name, key, IV (for CBC the last
ciphertext block), how far a CTR keystream has run (or the current GCM
nonce; chacha20-poly1305 needs only its key and the sequence number), the MAC
name and key, the sequence number and rekey counters, the compression; and
the session id, both version strings, the strict-kex flag and bytes read but
not processed.

Compression: sshd offers only zlib@openssh.com, which starts after
USERAUTH_SUCCESS, exactly where the net-child stops.  So no byte has gone
through either zlib stream when the state is captured, and the session
process starts both afresh: the name is the whole state.
"""

from __future__ import annotations

import paramiko

from privsep.child.ciphers import DELAYED, CipherTransportMixin
from privsep.child.packetizer import pkt_get
from privsep.wire.messages import DirectionState, TransportState


class _CountingCipher:
    """A CTR or CBC cipher context that counts the bytes it has processed and
    keeps the last ciphertext block (CBC's chaining value: the IV to resume
    from).  Only the net-child's few packets pass through it."""

    def __init__(self, engine, iv: bytes, encrypt: bool) -> None:
        self._engine = engine
        self._encrypt = encrypt
        self.processed = 0
        self.last_block = iv

    def update(self, data: bytes) -> bytes:
        out = self._engine.update(data)
        self.processed += len(data)
        block = out if self._encrypt else data
        if block:
            self.last_block = bytes(block[-len(self.last_block):])
        return out

    def __getattr__(self, name: str):
        return getattr(self._engine, name)


class CapturingTransport(CipherTransportMixin, paramiko.Transport):
    """The net-child's transport: remembers what it needs to hand the state over."""

    def __init__(self, sock, **kwargs) -> None:
        super().__init__(sock, **kwargs)
        self._engines: dict[object, tuple[str, bytes, bytes, object]] = {}

    def _get_engine(self, name, key, iv=None, operation=None, aead=False):
        engine = super()._get_engine(name, key, iv=iv, operation=operation, aead=aead)
        if not aead:
            engine = _CountingCipher(engine, iv, operation is self._ENCRYPT)
        self._engines[operation] = (name, key, iv or b"", engine)
        return engine

    def _direction(self, operation, mac: str, compression: str, suffix: str,
                   counters: tuple[str, str]) -> DirectionState:
        name, key, iv, engine = self._engines[operation]
        p = self.packetizer
        aead = isinstance(engine, _CountingCipher) is False
        cbc = name.endswith("-cbc")
        return DirectionState(
            cipher=name,
            key=key,
            iv=engine.last_block if cbc else iv,
            stream_offset=0 if aead or cbc else engine.processed,
            aead_iv=(pkt_get(p, "iv_" + suffix) or b"") if aead else b"",
            mac="" if aead else mac,
            mac_key=b"" if aead else pkt_get(p, "mac_key_" + suffix),
            seqno=pkt_get(p, "sequence_number_" + suffix),
            packets=pkt_get(p, counters[0]),
            bytes=pkt_get(p, counters[1]),
            compression=compression,
            total=p.total_sent if suffix == "out" else p.total_received,
        )

    def capture_state(self) -> TransportState:
        """The state after the last packet sent; call with nothing more to read."""
        for name in (self.local_compression, self.remote_compression):
            if name not in ("none", DELAYED):  # zlib from the start: never offered
                raise paramiko.SSHException(f"compression {name} cannot cross the hand-off")
        return TransportState(
            session_id=self.session_id,
            local_version=self.local_version,
            remote_version=self.remote_version,
            strict_kex=self.agreed_on_strict_kex,
            client_ext_info=getattr(self, "_remote_ext_info", None) == "ext-info-c",
            inbound=self._direction(self._DECRYPT, self.remote_mac, self.remote_compression,
                                    "in", ("received_packets", "received_bytes")),
            outbound=self._direction(self._ENCRYPT, self.local_mac, self.local_compression,
                                     "out", ("sent_packets", "sent_bytes")),
            pending=pkt_get(self.packetizer, "remainder"),
        )
