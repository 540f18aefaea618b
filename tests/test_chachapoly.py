"""chacha20-poly1305@openssh.com's sealing and opening (privsep/child/chachapoly.py)
against the construction written out from PROTOCOL.chacha20poly1305 with
cryptography's ChaCha20 and Poly1305, for both of the module's Poly1305s
(OpenSSL's EVP_MAC through ctypes, and cryptography's where OpenSSL 3 is
missing).  The end-to-end tests (test_ciphers.py, test_rekey.py,
test_channel_data_in.py) show that the stock client agrees."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.poly1305 import Poly1305

from privsep.child import chachapoly
from privsep.child.chachapoly import TAG_SIZE, BadTag, ChaChaPoly


def reference_seal(key: bytes, seqno: int, packet: bytes) -> bytes:
    """The packet as OpenSSH seals it: K_2 encrypts the length, K_1 the
    rest from block 1, its block 0 keys Poly1305 over both."""
    nonce = struct.pack(">Q", seqno)

    def stream(k: bytes, counter: int):
        return Cipher(algorithms.ChaCha20(k, struct.pack("<Q", counter) + nonce), None).encryptor()

    length = stream(key[32:], 0).update(packet[:4])
    body = stream(key[:32], 1).update(packet[4:])
    poly_key = stream(key[:32], 0).update(bytes(32))
    return length + body + Poly1305.generate_tag(poly_key, length + body)


def packet_of(payload: bytes) -> bytes:
    """A packet framed as the AEAD path frames it (length outside the blocks)."""
    pad = 8 - (1 + len(payload)) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + os.urandom(pad)


@pytest.fixture(params=["evp_mac", "cryptography"])
def engine_factory(request):
    """ChaChaPoly with each Poly1305."""
    if request.param == "evp_mac" and chachapoly._libcrypto is None:
        pytest.skip("no OpenSSL 3 libcrypto")

    def make(key: bytes) -> ChaChaPoly:
        engine = ChaChaPoly(key)
        if request.param == "cryptography":
            engine._mac = None
        return engine
    return make


@pytest.mark.parametrize("size", [9, 36, 1000, 32768])
@pytest.mark.parametrize("seqno", [0, 7, 0xFFFFFFFF])
def test_seal_is_openssh_construction(engine_factory, size: int, seqno: int) -> None:
    key = os.urandom(64)
    packet = packet_of(os.urandom(size))
    assert bytes(engine_factory(key).seal(seqno, packet)) == reference_seal(key, seqno, packet)


def test_seal_many_is_seal_in_turn_and_wraps(engine_factory) -> None:
    """The bulk path's batch, across the sequence number's wrap to 0."""
    key = os.urandom(64)
    packets = [packet_of(os.urandom(n)) for n in (32713, 9, 32713, 500)]
    sealed = engine_factory(key).seal_many(0xFFFFFFFE, [(p[:4], memoryview(p)[4:]) for p in packets])
    expected = [reference_seal(key, seqno, p)
                for seqno, p in zip((0xFFFFFFFE, 0xFFFFFFFF, 0, 1), packets)]
    assert [bytes(s) for s in sealed] == expected


@pytest.mark.parametrize("size", [9, 32768])
def test_open_sealed_opens_and_refuses_forgeries(engine_factory, size: int) -> None:
    key = os.urandom(64)
    packet = packet_of(os.urandom(size))
    sealed = bytearray(reference_seal(key, 42, packet)) + b"next packet"
    opener = engine_factory(key)
    length = opener.open_length(42, bytes(sealed[:4]))
    assert length == len(packet) - 4
    assert opener.open_sealed(42, memoryview(sealed), length) == packet[4:]
    for flip in (0, 4, 4 + length - 1, 4 + length, 4 + length + TAG_SIZE - 1):
        forged = bytearray(sealed)
        forged[flip] ^= 0x01
        with pytest.raises(BadTag):
            opener.open_sealed(42, memoryview(forged), length)
    with pytest.raises(BadTag):  # the right bytes under another sequence number
        opener.open_sealed(43, memoryview(sealed), length)
