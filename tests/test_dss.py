"""ssh-dss when configured (issue 13, section 6), as sshd 9.2 allows it: a
DSA HostKey offered with ``HostKeyAlgorithms +ssh-dss``, DSA user keys with
``PubkeyAcceptedAlgorithms +ssh-dss``; refused by both daemons otherwise.
paramiko 5 has no DSA: the verification is privsep/wire/dss.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from privsep.wire import dss
from tests.daemon import ssh

pytestmark = pytest.mark.filterwarnings("ignore:SSH DSA keys are deprecated")


def _keygen(path: Path, kind: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


def _fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


# --- pure: the verifier ----------------------------------------------------------

def test_verifies_what_a_dsa_key_signed_and_nothing_else():
    private = dsa.generate_private_key(1024)
    numbers = private.public_key().public_numbers()
    params = numbers.parameter_numbers
    public = dss.DSSPublicKey(params.p, params.q, params.g, numbers.y)
    assert dss.DSSPublicKey.from_blob(public.asbytes()) == public
    r, s = decode_dss_signature(private.sign(b"exchange hash", hashes.SHA1()))
    raw = r.to_bytes(20, "big") + s.to_bytes(20, "big")
    assert public.verify(b"exchange hash", raw)
    assert not public.verify(b"exchange hasH", raw)
    assert not public.verify(b"exchange hash", raw[:39] + bytes([raw[39] ^ 1]))
    assert not public.verify(b"exchange hash", raw[:39])
    assert not public.verify(b"exchange hash", bytes(40))


def test_blob_with_other_sizes_refused():
    private = dsa.generate_private_key(2048)  # OpenSSH allows only 1024/160
    numbers = private.public_key().public_numbers()
    params = numbers.parameter_numbers
    blob = dss.DSSPublicKey(params.p, params.q, params.g, numbers.y).asbytes()
    with pytest.raises(ValueError, match="Invalid key length"):
        dss.DSSPublicKey.from_blob(blob)
    with pytest.raises(ValueError):
        dss.DSSPublicKey.from_blob(blob + b"\0")


# --- host key -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["privsep", "openssh"])
@pytest.mark.parametrize("configured", [True, False])
def test_dsa_host_key_only_when_configured(server_with, user, tmp_path, kind, configured):
    host_dsa = _keygen(tmp_path / "host_dsa", "dsa")
    lines = [f"HostKey {host_dsa}", f"HostKey {_keygen(tmp_path / 'host_ed', 'ed25519')}"]
    if configured:
        lines.insert(0, "HostKeyAlgorithms +ssh-dss")
    server = server_with(*lines, kind=kind)
    result = ssh(server, user, "echo dss", options=["HostKeyAlgorithms=ssh-dss"], flags=["-v"])
    if configured:
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout == b"dss\n"
        fingerprint = _fingerprint(host_dsa.with_suffix(".pub"))
        assert f"Server host key: ssh-dss {fingerprint}".encode() in result.stderr
    else:
        assert result.returncode == 255
        assert b"no matching host key type found" in result.stderr


# --- user key ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["privsep", "openssh"])
@pytest.mark.parametrize("configured", [True, False])
def test_dsa_user_key_only_when_configured(server_with, user, tmp_path, kind, configured):
    key = _keygen(tmp_path / "user_dsa", "dsa")
    with (user.home / ".ssh" / "authorized_keys").open("a") as f:
        f.write(key.with_suffix(".pub").read_text())
    dsa_user = type(user)(**{**user.__dict__, "key_path": key})
    server = server_with(*(["PubkeyAcceptedAlgorithms +ssh-dss"] if configured else []),
                         kind=kind)
    result = ssh(server, dsa_user, "echo dss", options=["PubkeyAcceptedAlgorithms=+ssh-dss"])
    log = server.log_text()
    if configured:
        assert result.returncode == 0, result.stderr[-2000:]
        fingerprint = _fingerprint(key.with_suffix(".pub"))
        assert f"Accepted publickey for {user.name} from 127.0.0.1" in log
        assert f"ssh2: DSA {fingerprint}" in log
    else:
        assert result.returncode == 255
        assert b"Permission denied (publickey" in result.stderr
        # written as the client is told; it may leave before the line lands
        server.wait_for_log("userauth_pubkey: signature algorithm ssh-dss not in "
                            "PubkeyAcceptedAlgorithms")
