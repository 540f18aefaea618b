"""Agent forwarding (ssh -A) and UpdateHostKeys (hostkeys-00 / hostkeys-prove-00)
with the real client, both daemons."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.daemon import Server, ssh_argv, wait_until


@pytest.fixture
def agent(user):
    directory = tempfile.mkdtemp(prefix="agent-test-")
    sock = os.path.join(directory, "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_until(lambda: os.path.exists(sock))
    env = {**os.environ, "SSH_AUTH_SOCK": sock}
    subprocess.run(["ssh-add", str(user.key_path)], env=env, check=True, capture_output=True)
    listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, text=True).stdout
    yield sock, listed.split()[1]
    proc.kill()
    proc.wait()
    shutil.rmtree(directory, ignore_errors=True)


def test_agent_forwarding(session_server: Server, user, agent) -> None:
    sock, fingerprint = agent
    argv, env = ssh_argv(session_server, user,
                         'echo "$SSH_AUTH_SOCK"; ssh-add -l; '
                         'stat -c "%U %a" "$(dirname "$SSH_AUTH_SOCK")" "$SSH_AUTH_SOCK"',
                         flags=["-A"])
    env["SSH_AUTH_SOCK"] = sock
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    path = lines[0]
    assert path.startswith("/tmp/ssh-") and os.path.basename(path).startswith("agent.")
    assert fingerprint in lines[1]
    assert lines[2] == f"{user.name} 700"
    assert lines[3].split()[0] == user.name
    # removed at logout
    wait_until(lambda: not os.path.exists(os.path.dirname(path)))


def test_no_agent_without_dash_a(session_server: Server, user, agent) -> None:
    sock, _ = agent
    argv, env = ssh_argv(session_server, user, 'echo "${SSH_AUTH_SOCK-none}"')
    env["SSH_AUTH_SOCK"] = sock
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert result.stdout == b"none\n"


def test_update_host_keys_learns_every_key(session_server: Server, user, tmp_path) -> None:
    """known_hosts holds the ed25519 key only; after one login with
    UpdateHostKeys=yes it holds all three, proved by signatures that (for
    privsep-sshd) the monitor made."""
    scan = subprocess.run(["ssh-keyscan", "-p", str(session_server.port), "-t", "ed25519",
                           "127.0.0.1"], capture_output=True, text=True, timeout=30).stdout
    known = tmp_path / "known_hosts"
    known.write_text(scan)
    argv, env = ssh_argv(session_server, user, "true", flags=["-v"])
    argv = [a.replace("UserKnownHostsFile=/dev/null", f"UserKnownHostsFile={known}")
             .replace("StrictHostKeyChecking=no", "StrictHostKeyChecking=yes") for a in argv]
    argv[1:1] = ["-o", "UpdateHostKeys=yes"]
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"hostkeys-00@openssh.com" in result.stderr
    types = sorted(line.split()[1] for line in known.read_text().splitlines()
                   if line and not line.startswith("#"))
    assert types == ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"], result.stderr.decode()[-3000:]
