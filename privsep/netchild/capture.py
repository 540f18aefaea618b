"""The net-child's half of the transport hand-off: remember, while the key
exchange runs, what the session process will need to carry the connection on.

paramiko has no API to move a live transport between processes.  These
subclasses override its single-underscore hooks and read the Packetizer's
private counters (privsep/child/packetizer.py); paramiko is pinned to the
exact version in pyproject.toml and tests/test_handoff_internals.py fails
loudly if the internals move.  What crosses is wire.messages.TransportState.

Captured per direction: the cipher name, key, IV, how far a CTR keystream
has run (or the current GCM nonce), the MAC name and key, the sequence number
and rekey counters; and the session id, both version strings, the strict-kex
flag and bytes read but not processed.
"""

from __future__ import annotations

import paramiko

from privsep.child.packetizer import pkt_get
from privsep.wire.messages import DirectionState, TransportState


class _CountingCipher:
    """A CTR cipher context that counts the bytes it has processed."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.processed = 0

    def update(self, data: bytes) -> bytes:
        self.processed += len(data)
        return self._engine.update(data)

    def __getattr__(self, name: str):
        return getattr(self._engine, name)


class CapturingTransport(paramiko.Transport):
    """The net-child's transport: remembers what it needs to hand the state over."""

    def __init__(self, sock, **kwargs) -> None:
        super().__init__(sock, **kwargs)
        self._engines: dict[object, tuple[str, bytes, bytes, object]] = {}

    def _get_engine(self, name, key, iv=None, operation=None, aead=False):
        engine = super()._get_engine(name, key, iv=iv, operation=operation, aead=aead)
        if not aead:
            engine = _CountingCipher(engine)
        self._engines[operation] = (name, key, iv or b"", engine)
        return engine

    def _direction(self, operation, mac: str, suffix: str, counters: tuple[str, str]) -> DirectionState:
        name, key, iv, engine = self._engines[operation]
        p = self.packetizer
        aead = isinstance(engine, _CountingCipher) is False
        return DirectionState(
            cipher=name,
            key=key,
            iv=iv,
            stream_offset=0 if aead else engine.processed,
            aead_iv=(pkt_get(p, "iv_" + suffix) or b"") if aead else b"",
            mac="" if aead else mac,
            mac_key=b"" if aead else pkt_get(p, "mac_key_" + suffix),
            seqno=pkt_get(p, "sequence_number_" + suffix),
            packets=pkt_get(p, counters[0]),
            bytes=pkt_get(p, counters[1]),
        )

    def capture_state(self) -> TransportState:
        """The state after the last packet sent; call with nothing more to read."""
        return TransportState(
            session_id=self.session_id,
            local_version=self.local_version,
            remote_version=self.remote_version,
            strict_kex=self.agreed_on_strict_kex,
            client_ext_info=getattr(self, "_remote_ext_info", None) == "ext-info-c",
            inbound=self._direction(self._DECRYPT, self.remote_mac, "in",
                                    ("received_packets", "received_bytes")),
            outbound=self._direction(self._ENCRYPT, self.local_mac, "out",
                                     ("sent_packets", "sent_bytes")),
            pending=pkt_get(self.packetizer, "remainder"),
        )
