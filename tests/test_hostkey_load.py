"""Host keys that cannot be used and RequiredRSASize (issue 13, section 6),
side by side with sshd: a key that cannot be loaded or is too small is
logged in sshd's words and skipped, start-up goes on and fails only when no
key is left; a user's RSA key below RequiredRSASize is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.daemon import privsep_command, ssh


def _keygen(path: Path, kind: str, bits: int | None = None) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *(["-b", str(bits)] if bits else []),
                    "-N", "", "-f", str(path)], check=True)
    return path


def _test_config(argv: list[str], config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*argv, "-t", "-f", str(config)], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def keys(tmp_path) -> dict[str, Path]:
    return {"ed25519": _keygen(tmp_path / "ed25519", "ed25519"),
            "rsa1024": _keygen(tmp_path / "rsa1024", "rsa", 1024)}


@pytest.mark.parametrize("host_keys, code", [(["ed25519", "rsa1024"], 0), (["rsa1024"], 1)])
def test_small_rsa_host_key_skipped_as_sshd(tmp_path, keys, host_keys, code) -> None:
    config = tmp_path / "sshd_config"
    config.write_text("RequiredRSASize 2048\n" + "".join(f"HostKey {keys[k]}\n" for k in host_keys))
    ours = _test_config(privsep_command(), config)
    theirs = _test_config(["/usr/sbin/sshd"], config)
    assert ours.returncode == theirs.returncode == code, (ours.stderr, theirs.stderr)
    assert ours.stderr.splitlines() == theirs.stderr.splitlines()
    assert f"main: Host key {keys['rsa1024']}: Invalid key length" in ours.stderr


def test_unloadable_host_key_as_sshd(tmp_path, keys) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {garbage}\nHostKey {keys['ed25519']}\n")
    ours = _test_config(privsep_command(), config)
    theirs = _test_config(["/usr/sbin/sshd"], config)
    assert ours.returncode == theirs.returncode == 0
    assert ours.stderr.splitlines() == theirs.stderr.splitlines() == [
        f'Unable to load host key "{garbage}": error in libcrypto',
        f"Unable to load host key: {garbage}"]


def test_unloadable_host_key_logged_and_start_up_goes_on(server_with, user, tmp_path) -> None:
    """A HostKey that cannot be loaded among others: logged, skipped, the
    daemon starts and logs users in with the others."""
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    server = server_with(f"HostKey {garbage}", f"HostKey {_keygen(tmp_path / 'ed', 'ed25519')}")
    result = ssh(server, user, "echo up")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"up\n"
    assert f"Unable to load host key: {garbage}" in server.log_text()


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_required_rsa_size_refuses_small_user_keys(server_with, user, tmp_path, kind) -> None:
    key = _keygen(tmp_path / "user_rsa1024", "rsa", 1024)
    auth = user.home / ".ssh" / "authorized_keys"
    with auth.open("a") as f:
        f.write(key.with_suffix(".pub").read_text())
    argv_user = type(user)(**{**user.__dict__, "key_path": key})
    allowed = ssh(server_with(kind=kind), argv_user, "echo in")
    assert allowed.returncode == 0, allowed.stderr  # 1024 bits: sshd's default allows it
    server = server_with("RequiredRSASize 2048", kind=kind)
    refused = ssh(server, argv_user, "echo in")
    assert refused.returncode == 255
    assert b"Permission denied (publickey" in refused.stderr
    assert "refusing RSA key: Invalid key length" in server.log_text()
