"""The session process's half of the transport hand-off: a server transport
that continues, on the same socket, the connection the net-child began.

paramiko has no API to move a live transport between processes.  These
subclasses override its single-underscore hooks and read the Packetizer's
private counters (privsep/child/packetizer.py); paramiko is pinned to the
exact version in pyproject.toml and tests/test_handoff_internals.py fails
loudly if the internals move.  What crosses is wire.messages.TransportState.
"""

from __future__ import annotations

import logging

import paramiko
from paramiko.common import MSG_KEXINIT

from privsep.child import transport_setup
from privsep.child.ciphers import CipherTransportMixin
from privsep.child.packetizer import CipherPacketizer, pkt_set
from privsep.wire.messages import DirectionState, TransportState


class ResumedPacketizer(CipherPacketizer):
    """Drops the version banner paramiko writes at start: the client has it already.

    Matched exactly, not as "the first write".  (The session process's
    packetizer, packets.SessionPacketizer, never writes it: its loop skips
    paramiko's start-up.)"""

    #: The banner bytes to swallow once (set by ResumedTransport).
    banner: bytes | None = None

    def write_all(self, out) -> None:
        if self.banner is not None and bytes(out) == self.banner:
            self.banner = None
            return
        super().write_all(out)


class AuthenticatedHandler(paramiko.auth_handler.AuthHandler):
    """The auth handler of a connection whose login is done: it handles no
    message, so a SERVICE_REQUEST or USERAUTH_* message after login gets
    UNIMPLEMENTED, as from sshd's dispatch_protocol_error.  (paramiko's own
    would read an INFO_RESPONSE's answers, as many as its count says: 2^32
    empty strings, a core spinning and memory filling.  Found by tests/fuzz.py.)"""

    @property
    def _server_handler_table(self):
        return {}


class ResumedTransport(CipherTransportMixin, paramiko.Transport):
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
        self.local_compression = state.outbound.compression
        self.remote_compression = state.inbound.compression
        self._resume_direction(state.outbound, outbound=True)
        self._resume_direction(state.inbound, outbound=False)
        pkt_set(self.packetizer, "remainder", state.pending)
        self.auth_handler = AuthenticatedHandler(self)
        self.auth_handler.authenticated = True
        self.auth_handler.auth_username = username
        self.authenticated = True
        self.clear_to_send.set()

    def _parse_newkeys(self, m) -> None:
        transport_setup.check_newkeys(self)
        super()._parse_newkeys(m)

    def _parse_debug(self, m) -> None:
        transport_setup.parse_debug(m)

    def _parse_ext_info(self, m) -> None:
        transport_setup.check_ext_info(m)
        super()._parse_ext_info(m)

    def _resume_direction(self, d: DirectionState, outbound: bool) -> None:
        """Set one direction of the packetizer to where the net-child left it.

        CTR runs its keystream on to the offset; CBC starts from the last
        ciphertext block (captured as ``iv``); GCM from its nonce;
        chacha20-poly1305 needs only its key, its nonce being the sequence
        number.  Delayed compression starts here, fresh, as it would have in
        the net-child had it carried on (paramiko's _auth_trigger)."""
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
            pkt_set(p, "sequence_number_out", d.seqno)
            pkt_set(p, "sent_packets", d.packets)
            pkt_set(p, "sent_bytes", d.bytes)
            p.total_sent = d.total
        else:
            p.set_inbound_cipher(iv_in=d.aead_iv if aead else None, **common)
            pkt_set(p, "sequence_number_in", d.seqno)
            pkt_set(p, "received_packets", d.packets)
            pkt_set(p, "received_bytes", d.bytes)
            p.total_received = d.total
        compressors = self._compression_info[d.compression]
        if compressors[0] is not None:
            if outbound:
                p.set_outbound_compressor(compressors[0]())
            else:
                p.set_inbound_compressor(compressors[1]())

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

