"""The transport hand-off leans on paramiko internals (privsep/child/packetizer.py,
privsep/netchild/capture.py, privsep/session/resume.py).  These tests fail loudly when a paramiko upgrade moves them, and prove the hand-off
for every cipher and MAC it offers, with the real client."""

from __future__ import annotations

import inspect

import paramiko
import pytest
from paramiko.auth_handler import AuthHandler
from paramiko.packet import Packetizer

from privsep.child.chachapoly import NAME as CHACHA
from privsep.child.ciphers import CIPHER_INFO, MAC_INFO
from privsep.child.transport_setup import HANDOFF_CIPHERS
from privsep.config.algorithms import implemented
from tests.daemon import Server, ssh

PACKETIZER_STATE = [
    "sequence_number_out", "sequence_number_in", "sent_bytes", "sent_packets",
    "received_bytes", "received_packets", "mac_key_out", "mac_key_in", "iv_out", "iv_in",
    "remainder",
    # CipherPacketizer's chacha20-poly1305 path
    "write_lock", "compress_engine_out", "compress_engine_in", "need_rekey",
    "received_bytes_overflow", "received_packets_overflow",
]


def test_paramiko_is_the_pinned_version() -> None:
    assert paramiko.__version__ == "5.1.0", "re-check privsep/child/packetizer.py before moving the pin"


def test_packetizer_private_state_exists() -> None:
    import socket
    a, b = socket.socketpair()
    try:
        packetizer = Packetizer(a)
        for name in PACKETIZER_STATE:
            assert hasattr(packetizer, "_Packetizer__" + name), name
        assert hasattr(packetizer, "_initial_kex_done")
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("owner,name", [
    (paramiko.Transport, "_get_engine"), (paramiko.Transport, "_check_banner"),
    (paramiko.Transport, "_send_kex_init"), (paramiko.Transport, "_expect_packet"),
    (paramiko.Transport, "_parse_newkeys"), (paramiko.Transport, "_send_user_message"),
    (AuthHandler, "_generate_key_from_request"), (AuthHandler, "_send_auth_result"),
    (Packetizer, "start_handshake"), (Packetizer, "write_all"), (Packetizer, "_build_packet"),
    (Packetizer, "_trigger_rekey"), (paramiko.Transport, "_auth_trigger"),
])
def test_overridden_hooks_exist(owner, name) -> None:
    assert callable(getattr(owner, name)), f"{owner.__name__}.{name} is gone"


def test_hook_signatures() -> None:
    params = list(inspect.signature(paramiko.Transport._get_engine).parameters)
    assert params == ["self", "name", "key", "iv", "operation", "aead"]
    assert "packetizer_class" in inspect.signature(paramiko.Transport.__init__).parameters
    for cipher in HANDOFF_CIPHERS:
        assert cipher in CIPHER_INFO
        assert cipher == CHACHA or cipher in paramiko.Transport._cipher_info
    for mac in implemented("macs"):
        assert mac in MAC_INFO
    # the compressor classes delayed compression restarts after the hand-off
    assert "zlib@openssh.com" in paramiko.Transport._compression_info


def test_packet_macs_go_through_compute_mac() -> None:
    """paramiko computes every packet's MAC through the module function
    compute_hmac, which child/packetizer.py replaces so that umac works:
    if paramiko stops calling it there, umac would silently be HMAC."""
    import paramiko.packet
    from privsep.child.packetizer import compute_mac
    assert paramiko.packet.compute_hmac is compute_mac
    for method in (Packetizer.send_message, Packetizer.read_message):
        source = inspect.getsource(method)
        assert "compute_hmac(" in source and "HMAC(" not in source, method.__name__
    # HMAC through compute_mac is the HMAC paramiko would have computed
    import hashlib
    import hmac
    assert compute_mac(b"k" * 32, b"data", hashlib.sha256) == \
        hmac.HMAC(b"k" * 32, b"data", hashlib.sha256).digest()


@pytest.mark.parametrize("cipher,mac", [
    ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
    ("aes192-ctr", "hmac-sha2-512"),
    ("aes256-ctr", "hmac-sha2-256"),
    ("aes128-ctr", "umac-64-etm@openssh.com"),
    ("aes256-ctr", "umac-128@openssh.com"),
    ("aes128-gcm@openssh.com", None),
    ("aes256-gcm@openssh.com", None),
])
def test_handoff_carries_every_cipher(privsep_server: Server, user, cipher: str, mac) -> None:
    """Data flows both ways after the hand-off, then through a rekey."""
    options = [f"Ciphers={cipher}", "RekeyLimit=64K"]
    if mac:
        options.append(f"MACs={mac}")
    payload = bytes(range(256)) * 2048  # 512 KiB: several rekeys each way
    result = ssh(privsep_server, user, "cat", input=payload, options=options)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload
