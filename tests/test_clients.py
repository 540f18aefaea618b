"""Every real client logs in and runs a command, against both daemons
(issue 13, section 8): OpenSSH's ssh, PuTTY's plink, Dropbear's dbclient,
AsyncSSH and paramiko.  dbclient sends its first key-exchange packet on a
guess (first_kex_packet_follows) for curve25519-sha256, which is neither
daemon's first choice: the guessed packet must be discarded."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import paramiko
import pytest

from tests.daemon import Server, ssh

COMMAND = "echo client-ok $USER"


def _fingerprints(server: Server) -> list[str]:
    """SHA256 fingerprints of every host key the server offers."""
    scan = subprocess.run(["ssh-keyscan", "-p", str(server.port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=30)
    listed = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan.stdout, capture_output=True,
                            text=True, check=True)
    return [line.split()[1] for line in listed.stdout.splitlines()]


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def login_ssh(server: Server, user) -> str:
    result = ssh(server, user, COMMAND)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def login_plink(server: Server, user) -> str:
    argv = ["plink", "-ssh", "-batch", "-P", str(server.port), "-l", user.name,
            "-pw", user.password]
    for fingerprint in _fingerprints(server):
        argv += ["-hostkey", fingerprint]
    result = _run([*argv, "127.0.0.1", COMMAND])
    assert result.returncode == 0, result.stderr
    return result.stdout


def login_dbclient(server: Server, user) -> str:
    result = _run(["dbclient", "-y", "-y", "-p", str(server.port), "-l", user.name,
                   "127.0.0.1", COMMAND], env={"DROPBEAR_PASSWORD": user.password})
    assert result.returncode == 0, result.stderr
    return result.stdout


def login_asyncssh(server: Server, user) -> str:
    asyncssh = pytest.importorskip("asyncssh")  # the test extra installs it

    async def run() -> str:
        async with asyncssh.connect("127.0.0.1", server.port, username=user.name,
                                    password=user.password, known_hosts=None,
                                    client_keys=None, agent_path=None) as conn:
            result = await conn.run(COMMAND, check=True)
            return result.stdout

    return asyncio.run(asyncio.wait_for(run(), 60))


def login_paramiko(server: Server, user) -> str:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect("127.0.0.1", server.port, username=user.name, password=user.password,
                       allow_agent=False, look_for_keys=False, timeout=30)
        _, stdout, _ = client.exec_command(COMMAND)
        out = stdout.read().decode()
        assert stdout.channel.recv_exit_status() == 0
        return out
    finally:
        client.close()


CLIENTS = {"ssh": login_ssh, "plink": login_plink, "dbclient": login_dbclient,
           "asyncssh": login_asyncssh, "paramiko": login_paramiko}
PROGRAMS = {"plink": "plink", "dbclient": "dbclient", "ssh": "ssh"}


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_logs_in_and_runs_a_command(server_with, user, kind: str, client: str) -> None:
    if client in PROGRAMS and shutil.which(PROGRAMS[client]) is None:
        pytest.skip(f"{PROGRAMS[client]} is not installed")
    server = server_with(kind=kind)
    assert CLIENTS[client](server, user) == f"client-ok {user.name}\n"


@pytest.mark.skipif(shutil.which("dbclient") is None, reason="dbclient is not installed")
@pytest.mark.parametrize("config, discarded", [
    # our first choices differ from dbclient's (curve25519-sha256, ssh-ed25519): discarded
    ((), True),
    # the same first choices: the guess is right and its packet is the exchange
    (("KexAlgorithms curve25519-sha256,ecdh-sha2-nistp256", "HostKeyAlgorithms ssh-ed25519"),
     False),
])
def test_kex_guess_discarded_only_when_wrong(server_with, user, config, discarded) -> None:
    server = server_with("LogLevel DEBUG", *config)
    assert login_dbclient(server, user) == f"client-ok {user.name}\n"
    log = server.log_text()
    assert ("discarded the guessed key-exchange packet (type 30)" in log) is discarded, log[-3000:]
