"""sftp and scp with the real client, both daemons, hashes compared."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from tests.daemon import Server, ssh, ssh_argv

SIZE = 3 * 1024 * 1024 + 77


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _client_argv(tool: str, server: Server, user) -> tuple[list[str], dict[str, str]]:
    """The same options ssh_argv gives ssh, for sftp or scp (-P for the port)."""
    argv, env = ssh_argv(server, user)
    options = argv[3:-1]  # after "ssh -p PORT", before user@host
    return [tool, "-P", str(server.port), *options], env


@pytest.fixture
def payload(tmp_path):
    data = os.urandom(SIZE)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    os.chmod(tmp_path, 0o755)
    return path, _digest(data)


def test_sftp_batch(session_server: Server, user, payload, tmp_path) -> None:
    path, digest = payload
    back = tmp_path / "back.bin"
    batch = tmp_path / "batch"
    batch.write_text("\n".join([
        f"put {path} up.bin",
        "ls -l up.bin",
        "rename up.bin moved.bin",
        f"get moved.bin {back}",
        "mkdir newdir",
        "ls",
        "rm moved.bin",
        "rmdir newdir",
        "ls",
    ]) + "\n")
    argv, env = _client_argv("sftp", session_server, user)
    argv = ["sftp", *argv[1:]]
    result = subprocess.run([*argv, "-b", str(batch), f"{user.name}@127.0.0.1"], env=env,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert _digest(back.read_bytes()) == digest
    out = result.stdout.decode()
    assert "moved.bin" in out and "newdir" in out
    listing = ssh(session_server, user, "ls").stdout.decode().split()
    assert "moved.bin" not in listing and "newdir" not in listing and "up.bin" not in listing


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "scp-O"])
def test_scp_both_ways(session_server: Server, user, payload, tmp_path, legacy: bool) -> None:
    path, digest = payload
    argv, env = _client_argv("scp", session_server, user)
    if legacy:
        argv.append("-O")
    up = subprocess.run([*argv, str(path), f"{user.name}@127.0.0.1:copied.bin"], env=env,
                        capture_output=True, timeout=120)
    assert up.returncode == 0, up.stderr
    remote = ssh(session_server, user, "sha256sum copied.bin").stdout.split()[0].decode()
    assert remote == digest
    back = tmp_path / "scp-back.bin"
    down = subprocess.run([*argv, f"{user.name}@127.0.0.1:copied.bin", str(back)], env=env,
                          capture_output=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert _digest(back.read_bytes()) == digest


def test_scp_missing_file_fails_like_openssh(privsep_session_server: Server,
                                             openssh_session_server: Server, user,
                                             tmp_path) -> None:
    results = []
    for server in (privsep_session_server, openssh_session_server):
        argv, env = _client_argv("scp", server, user)
        r = subprocess.run([*argv, f"{user.name}@127.0.0.1:nonexistent", str(tmp_path / "x")],
                           env=env, capture_output=True, timeout=60)
        results.append((r.returncode, b"No such file" in r.stderr))
    assert results[0] == results[1] == (1, True)


def test_sftp_runs_as_the_user(privsep_session_server: Server, user, tmp_path) -> None:
    batch = tmp_path / "batch"
    batch.write_text("put /etc/hostname owned.txt\n")
    argv, env = _client_argv("sftp", privsep_session_server, user)
    subprocess.run([*argv, "-b", str(batch), f"{user.name}@127.0.0.1"], env=env,
                   capture_output=True, timeout=60, check=True)
    st = os.stat(user.home / "owned.txt")
    assert st.st_uid == user.uid
    privsep_session_server.wait_for_log(f"subsystem request for sftp by user {user.name}")
