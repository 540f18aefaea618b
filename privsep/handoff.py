"""The transport hand-off: capture in the net-child, resume in the session process.

paramiko has no API to move a live transport between processes.  These
subclasses override its single-underscore hooks (``_get_engine``,
``_check_banner``, ``_send_kex_init``, ``_expect_packet``) and read the
Packetizer's private counters; paramiko is pinned to the exact version in
pyproject.toml and tests/test_handoff_internals.py fails loudly if the
internals move.

What crosses: per direction the cipher name, key, IV, how far a CTR keystream
has run (or the current GCM nonce), the MAC name and key, the sequence number
and rekey counters; the session id; both version strings; the strict-kex
flag; bytes read but not processed.
"""

from __future__ import annotations

import logging
import threading

import paramiko
from paramiko.common import MSG_KEXINIT
from paramiko.packet import Packetizer

from privsep.monitor_wire import DirectionState, TransportState

_PKT = "_Packetizer__"  # name-mangling prefix of Packetizer's private state


def _pkt_get(packetizer: Packetizer, name: str):
    return getattr(packetizer, _PKT + name)


def _pkt_set(packetizer: Packetizer, name: str, value) -> None:
    setattr(packetizer, _PKT + name, value)


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
            aead_iv=(_pkt_get(p, "iv_" + suffix) or b"") if aead else b"",
            mac="" if aead else mac,
            mac_key=b"" if aead else _pkt_get(p, "mac_key_" + suffix),
            seqno=_pkt_get(p, "sequence_number_" + suffix),
            packets=_pkt_get(p, counters[0]),
            bytes=_pkt_get(p, counters[1]),
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
            pending=_pkt_get(self.packetizer, "remainder"),
        )


class ResumedPacketizer(Packetizer):
    """Drops the version banner paramiko writes at start: the client has it already.

    Matched exactly, not as "the first write": another thread (the session's
    hostkeys-00 announcement) may send a packet before the transport thread
    gets to its banner."""

    #: The banner bytes to swallow once (set by ResumedTransport).
    banner: bytes | None = None

    def write_all(self, out) -> None:
        if self.banner is not None and bytes(out) == self.banner:
            self.banner = None
            return
        super().write_all(out)


class ResumedTransport(paramiko.Transport):
    """A server transport that continues a connection another process began."""

    def __init__(self, sock, state: TransportState, username: str, **kwargs) -> None:
        super().__init__(sock, packetizer_class=ResumedPacketizer, **kwargs)
        self._skip_initial_kex = True
        self.server_mode = True
        self.session_id = state.session_id
        self.local_version = state.local_version
        self.packetizer.banner = (state.local_version + "\r\n").encode()
        self.remote_version = state.remote_version
        self.agreed_on_strict_kex = state.strict_kex
        self._remote_ext_info = "ext-info-c" if state.client_ext_info else None
        self.initial_kex_done = self.packetizer._initial_kex_done = True
        self.local_cipher, self.remote_cipher = state.outbound.cipher, state.inbound.cipher
        self.local_mac, self.remote_mac = state.outbound.mac or None, state.inbound.mac or None
        self.local_compression = self.remote_compression = "none"
        self._resume_direction(state.outbound, outbound=True)
        self._resume_direction(state.inbound, outbound=False)
        _pkt_set(self.packetizer, "remainder", state.pending)
        self.auth_handler = paramiko.auth_handler.AuthHandler(self)
        self.auth_handler.authenticated = True
        self.auth_handler.auth_username = username
        self.authenticated = True
        self.clear_to_send.set()

    def _resume_direction(self, d: DirectionState, outbound: bool) -> None:
        info = self._cipher_info[d.cipher]
        aead = info.get("is_aead", False)
        operation = self._ENCRYPT if outbound else self._DECRYPT
        engine = self._get_engine(d.cipher, d.key, iv=d.iv, operation=operation, aead=aead)
        if not aead and d.stream_offset:
            engine.update(bytes(d.stream_offset))  # run the keystream to where it was
        mac = None if aead else self._mac_info[d.mac]
        common = dict(
            block_engine=engine,
            block_size=info["block-size"],
            mac_engine=None if aead else mac["class"],
            mac_size=16 if aead else mac["size"],
            mac_key=None if aead else d.mac_key,
            etm=(not aead) and "etm@openssh.com" in d.mac,
            aead=aead,
        )
        p = self.packetizer
        if outbound:
            p.set_outbound_cipher(sdctr=d.cipher.endswith("-ctr"),
                                  iv_out=d.aead_iv if aead else None, **common)
            _pkt_set(p, "sequence_number_out", d.seqno)
            _pkt_set(p, "sent_packets", d.packets)
            _pkt_set(p, "sent_bytes", d.bytes)
        else:
            p.set_inbound_cipher(iv_in=d.aead_iv if aead else None, **common)
            _pkt_set(p, "sequence_number_in", d.seqno)
            _pkt_set(p, "received_packets", d.packets)
            _pkt_set(p, "received_bytes", d.bytes)

    # The run loop begins with banner exchange and KEXINIT: both happened in
    # the net-child, so the first pass through them is skipped.

    def _check_banner(self) -> None:
        if not self._skip_initial_kex:
            super()._check_banner()

    def _send_kex_init(self) -> None:
        if not self._skip_initial_kex:
            super()._send_kex_init()

    def _expect_packet(self, *ptypes) -> None:
        if self._skip_initial_kex and ptypes == (MSG_KEXINIT,):
            self._skip_initial_kex = False
            return
        super()._expect_packet(*ptypes)

    #: "ADDR port N", for the log line when the client says goodbye.
    peer_text = "UNKNOWN port 65535"

    def _parse_disconnect(self, m) -> None:
        code, description = m.get_int(), m.get_text()
        logging.getLogger("privsep.session").info(
            "Received disconnect from %s:%d: %s", self.peer_text, code, description)

    def resume(self, server: paramiko.ServerInterface) -> None:
        """Start the transport thread serving ``server``; returns at once."""
        self.start_server(event=threading.Event(), server=server)
