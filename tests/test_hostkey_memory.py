"""No host private key in the memory of any long-lived process (issue 11.1).

The daemon runs with an RSA, an ECDSA and an Ed25519 host key, each of
which signs a key exchange.  Then, with one connection waiting at the
authentication prompt (its net-child alive) and one user logged in (a
session process alive), the memory of the listener, both monitors, the
net-child and the session process is read from /proc/PID/mem and searched for
every secret of every key: the Ed25519 seed, the ECDSA scalar, RSA's d, p and
q (big- and little-endian, as OpenSSL's bignums hold them), and each line of
the key files' base64 text.

A positive control runs the same scan over a fresh Python process that
loaded the keys with the daemon's own key reader: it must find every key,
so a clean result means the keys are absent, not that the scan is blind.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.daemon import REPO, Server, descendants, ssh_background, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (reads /proc/PID/mem)")

KEY_TYPES = {"rsa": ["-b", "3072"], "ecdsa": ["-b", "256"], "ed25519": []}
#: the host-key algorithm that makes each key sign a key exchange
ALGORITHM = {"rsa": "rsa-sha2-512", "ecdsa": "ecdsa-sha2-nistp256", "ed25519": "ssh-ed25519"}


def _secrets(path: Path) -> dict[str, list[bytes]]:
    """Every byte string that would betray the private key in ``path``."""
    text = path.read_bytes()
    key = serialization.load_ssh_private_key(text, password=None)
    found: dict[str, list[bytes]] = {}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        found["seed"] = [key.private_bytes_raw()]
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        scalar = key.private_numbers().private_value
        found["scalar"] = _both_ends(scalar, 32)
    elif isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        for name, value in (("d", numbers.d), ("p", numbers.p), ("q", numbers.q)):
            found[name] = _both_ends(value, (value.bit_length() + 7) // 8)
    body = [line for line in text.splitlines() if line and not line.startswith(b"-----")]
    # The first line is the same in every unencrypted key file (the format's
    # magic and "none" cipher): not a secret.
    found["file text"] = [line for line in body[1:] if len(line) >= 40]
    return found


def _both_ends(value: int, size: int) -> list[bytes]:
    """A bignum as it sits in memory: big-endian (Python, DER) or as
    little-endian limbs (OpenSSL's BIGNUM on x86-64); the top 24 bytes are
    enough to recognise it and survive a shorter limb array."""
    big = value.to_bytes(size, "big")
    little = value.to_bytes(size, "little")
    return [big[:24], little[-24:]]


def read_memory(pid: int) -> bytes:
    """Every readable mapping of ``pid``, concatenated."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except OSError:
                continue  # a mapping the kernel will not read (a guard page)
    return b"".join(chunks)


def leaks(memory: bytes, secrets: dict[str, dict[str, list[bytes]]]) -> list[str]:
    return [f"{kind} {what}" for kind, parts in secrets.items()
            for what, needles in parts.items() if any(n in memory for n in needles)]


@pytest.fixture(scope="module")
def host_keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostkeys")
    paths = {}
    for kind, args in KEY_TYPES.items():
        path = folder / f"ssh_host_{kind}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *args, "-N", "", "-f", str(path)],
                       check=True, stdin=subprocess.DEVNULL)
        paths[kind] = path
    return paths


@pytest.fixture(scope="module")
def secrets(host_keys) -> dict[str, dict[str, list[bytes]]]:
    return {kind: _secrets(path) for kind, path in host_keys.items()}


@pytest.fixture
def keyed_server(server_with, host_keys) -> Server:
    return server_with(*(f"HostKey {path}" for path in host_keys.values()))


def _kex(server: Server, algorithm: str) -> paramiko.Transport:
    """A connection whose key exchange was signed with ``algorithm``'s host
    key, left waiting for authentication."""
    transport = paramiko.Transport(("127.0.0.1", server.port))
    transport.get_security_options().key_types = (algorithm,)
    transport.start_client(timeout=20)
    assert transport.host_key_type == algorithm
    return transport


def test_the_scan_finds_keys_where_they_are(host_keys, secrets) -> None:
    """Positive control: a process that loaded the keys with the signer's
    own reader shows every key type to the scan."""
    code = ("import sys; from privsep.signer.keyfiles import load_private\n"
            "keys = [load_private(p) for p in sys.argv[1:]]\n"
            "print('loaded', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, *map(str, host_keys.values())],
                             cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"loaded\n"
        found = leaks(read_memory(child.pid), secrets)
    finally:
        child.stdin.close()
        child.wait()
    for kind in KEY_TYPES:
        assert any(item.startswith(kind) for item in found), (kind, found)


def test_no_host_key_in_any_long_lived_process(keyed_server: Server, user, secrets) -> None:
    # Every key signs a key exchange first: the keys have been used.
    for algorithm in ALGORITHM.values():
        _kex(keyed_server, algorithm).close()
    waiting = _kex(keyed_server, ALGORITHM["ed25519"])  # its net-child waits for userauth
    session = ssh_background(keyed_server, user, "sleep 60")
    try:
        procs = wait_until(lambda: _roles_present(keyed_server))
        scanned = {}
        for proc in procs:
            try:
                memory = read_memory(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                continue  # a monitor of a closed connection, gone since
            scanned[f"{proc.pid} {proc.args}"] = leaks(memory, secrets)
        assert {title.split(" ", 1)[1].split(": ", 1)[-1] for title in scanned} >= {
            "[net]", f"{user.name}@notty"}, scanned
        assert {title: found for title, found in scanned.items() if found} == {}
    finally:
        waiting.close()
        session.kill()
        session.wait()


def _roles_present(server: Server):
    """The listener and its descendants, once a net-child and a session
    process are both there."""
    procs = descendants(server.pid)
    titles = " | ".join(p.args for p in procs)
    if "[net]" in titles and "@notty" in titles:
        return [p for p in [*procs] if "privsep-sshd:" in p.args] + [_listener(server)]
    return None


def _listener(server: Server):
    from tests.daemon import processes
    return processes()[server.pid]
