"""FIDO/U2F security keys (sk-ssh-ed25519, sk-ecdsa-sha2-nistp256 and its
webauthn signatures), plain and certified, driven by a software
authenticator (tests/sk_authenticator.py) through paramiko's client, with
privsep-sshd and Debian's sshd side by side: the same verdict and the same
log lines, user presence required unless no-touch-required, user
verification when verify-required.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
from pathlib import Path

import paramiko
import pytest

from tests.daemon import Server
from tests.sk_authenticator import USER_PRESENT, USER_VERIFIED, SoftSecurityKey
from tests.test_certificates import both, make_ca, side_by_side
from tests.test_key_options import log_mark, logged
from tests.userutil import TestUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def authenticate(server: Server, user: TestUser, key: SoftSecurityKey) -> bool:
    """One publickey attempt with ``key`` by paramiko's client."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=20)
        try:
            transport.auth_publickey(user.name, key)
        except paramiko.AuthenticationException:
            return False
        return transport.is_authenticated()
    finally:
        transport.close()


def authorize(user: TestUser, line: str) -> None:
    (user.home / ".ssh" / "authorized_keys").write_text(line + "\n")


def attempt(server: Server, user: TestUser, key: SoftSecurityKey,
            *patterns: str) -> dict[str, object]:
    mark = log_mark(server)
    seen: dict[str, object] = {"authenticated": authenticate(server, user, key)}
    for pattern in patterns:
        seen[pattern] = logged(server, mark, pattern, timeout=5)
    return seen


def fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@pytest.mark.parametrize("kind,webauthn", [("ed25519", False), ("ecdsa", False),
                                           ("ecdsa", True)])
def test_security_key_login(server_with, user, kind: str, webauthn: bool) -> None:
    key = SoftSecurityKey(kind, webauthn=webauthn)
    authorize(user, key.public_line())
    servers = both(server_with)
    pattern = r"Accepted publickey for "
    seen = side_by_side(servers, lambda s: attempt(s, user, key, pattern))
    assert seen["authenticated"] is True
    label = "ED25519-SK" if kind == "ed25519" else "ECDSA-SK"
    assert seen[pattern].endswith(f"ssh2: {label} {fingerprint(key.plain_blob)}")


@pytest.mark.parametrize("options,flags,accepted,reason", [
    ("", 0, False, "user presence (authenticator touch) requirement not met "),
    ("no-touch-required", 0, True, None),
    ("verify-required", USER_PRESENT, False, "user verification requirement not met "),
    ("verify-required", USER_PRESENT | USER_VERIFIED, True, None),
])
def test_presence_and_verification(server_with, user, options: str, flags: int,
                                   accepted: bool, reason: str | None) -> None:
    """Touch required unless no-touch-required; verify-required wants the
    user-verified flag; refusals logged in sshd's words."""
    key = SoftSecurityKey("ed25519", flags=flags)
    authorize(user, (options + " " if options else "") + key.public_line())
    servers = both(server_with)
    pattern = r"signature for .* rejected: "
    seen = side_by_side(servers, lambda s: attempt(s, user, key, pattern))
    assert seen["authenticated"] is accepted
    if reason is None:
        assert seen[pattern] is None
    else:
        assert seen[pattern].endswith(
            f"public key ED25519-SK {fingerprint(key.plain_blob)} signature for {user.name} "
            f"from 127.0.0.1 port <port> rejected: {reason}")


def test_tampered_signature_refused(server_with, user) -> None:
    """A signature over other data (a counter changed after signing) fails."""
    key = SoftSecurityKey("ecdsa")
    authorize(user, key.public_line())
    original = key.sign_ssh_data

    def tampered(data: bytes, algorithm: str | None = None) -> paramiko.Message:
        blob = bytearray(original(data, algorithm).asbytes())
        blob[-1] ^= 1  # the counter's last byte
        return paramiko.Message(bytes(blob))

    key.sign_ssh_data = tampered  # type: ignore[method-assign]
    seen = side_by_side(both(server_with), lambda s: attempt(s, user, key,
                                                             r"Failed publickey for "))
    assert seen["authenticated"] is False and seen[r"Failed publickey for "] is not None


@pytest.mark.parametrize("extension,flags,accepted", [
    ("no-touch-required", 0, True), (None, 0, False), (None, USER_PRESENT, True)])
def test_certified_security_key(server_with, user, tmp_path: Path, extension: str | None,
                                flags: int, accepted: bool) -> None:
    """A security key certified by ssh-keygen -s: the no-touch-required
    extension waives user presence, as the key option does."""
    os.chmod(tmp_path, 0o755)
    ca = make_ca(tmp_path, "ed25519")
    key = SoftSecurityKey("ed25519", flags=flags)
    pub = tmp_path / "sk.pub"
    pub.write_text(key.public_line() + "\n")
    argv = ["ssh-keygen", "-q", "-s", str(ca.private), "-I", "sk-cert", "-z", "5",
            "-n", user.name]
    if extension:
        argv += ["-O", extension]
    subprocess.run(argv + [str(pub)], check=True, capture_output=True)
    cert_line = (tmp_path / "sk-cert.pub").read_text().split()
    key.certificate = base64.b64decode(cert_line[1])
    authorize(user, "")
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}")
    pattern = r"Accepted publickey for "
    seen = side_by_side(servers, lambda s: attempt(s, user, key, pattern))
    assert seen["authenticated"] is accepted
    if accepted:
        assert seen[pattern].endswith(f"ssh2: ED25519-SK-CERT {fingerprint(key.plain_blob)} "
                                      f"ID sk-cert (serial 5) CA ED25519 {ca.fingerprint()}")

