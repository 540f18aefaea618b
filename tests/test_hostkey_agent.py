"""HostKeyAgent: a host key whose private half only an ssh-agent holds,
side by side with sshd.

The test starts its own ssh-agent, adds a fresh Ed25519 key to it and
deletes the private key file: HostKey then names the public key, as sshd
allows.  A login proves that the agent signed the exchange (the client
checks the signature against the key it was shown); a rekey proves the same
for the session process's signatures.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from privsep.signer import agent_signer
from tests.daemon import Server, free_port, privsep_command, remove_server, ssh, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("privsep", "openssh")
#: the client takes only Ed25519, so both daemons must use the agent's key
ED25519_ONLY = ["HostKeyAlgorithms=ssh-ed25519"]


@dataclass
class HostAgent:
    socket: Path
    public: Path
    fingerprint: str
    process: subprocess.Popen

    def run_add(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, SSH_AUTH_SOCK=str(self.socket))
        return subprocess.run(["ssh-add", *args], env=env, capture_output=True, text=True,
                              check=True)


@pytest.fixture
def host_agent(tmp_path) -> HostAgent:
    """A real ssh-agent of the test's own, holding a host key whose private
    file is gone afterwards."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(sock.exists)
        key = tmp_path / "host_agent_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)],
                       check=True)
        public = key.with_suffix(".pub")
        fingerprint = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True,
                                     text=True, check=True).stdout.split()[1]
        found = HostAgent(sock, public, fingerprint, agent)
        found.run_add("-q", str(key))
        key.unlink()  # from now on only the agent has the private key
        yield found
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)


class AgentKeyServer(Server):
    """A server whose only host keys are the test's: tests/daemon.py gives
    sshd three of its own, and sshd 9.2 with an agent key and a file key of
    the same type signs with the file's key while it announces the agent's
    ("incorrect signature" at the client)."""

    def config_lines(self) -> list[str]:
        return [line for line in super().config_lines()
                if not (line.startswith("HostKey ") and line not in self.extra_config)]


@pytest.fixture
def agent_server(pam_service) -> Iterator[Callable[..., Server]]:
    """``agent_server(*config_lines, kind=...)``: started, removed at teardown."""
    made: list[Server] = []

    def start(*lines: str, kind: str = "privsep") -> Server:
        workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-srv-"))
        os.chmod(workdir, 0o755)
        server = AgentKeyServer(kind, free_port(), workdir, extra_config=list(lines))
        made.append(server)
        return server.start()

    yield start
    for server in made:
        remove_server(server)


def _server_key(server: Server, user, *command: str, **kwargs) -> tuple[int, str, str]:
    """(exit code, the host key the client was shown, the command's output)."""
    result = ssh(server, user, *command, flags=["-v"],
                 options=ED25519_ONLY + kwargs.pop("options", []), **kwargs)
    stderr = result.stderr.decode(errors="replace")
    shown = re.search(r"Server host key: ssh-ed25519 (SHA256:\S+)", stderr)
    return result.returncode, shown.group(1) if shown else "", result.stdout.decode().strip()


@pytest.mark.parametrize("spelling", ["path", "SSH_AUTH_SOCK"])
def test_agent_signs_for_the_host_key(agent_server, user, host_agent: HostAgent,
                                      monkeypatch, spelling: str) -> None:
    if spelling == "SSH_AUTH_SOCK":  # the daemons read the socket from their environment
        monkeypatch.setenv("SSH_AUTH_SOCK", str(host_agent.socket))
        setting = "SSH_AUTH_SOCK"
    else:
        setting = str(host_agent.socket)
    outcomes = {}
    for kind in KINDS:
        server = agent_server(f"HostKey {host_agent.public}", f"HostKeyAgent {setting}",
                             kind=kind)
        # a rekey every 32 KiB: the session process's signatures come from the agent too
        outcomes[kind] = _server_key(server, user, "head -c 300000 /dev/zero | wc -c",
                                     options=["RekeyLimit=32K"])
    assert outcomes["privsep"] == outcomes["openssh"] == \
        (0, host_agent.fingerprint, "300000"), outcomes


def test_an_agent_without_the_key_signs_nothing(agent_server, user,
                                                host_agent: HostAgent) -> None:
    """The agent lost the key after start-up: no login, on either daemon."""
    servers = {kind: agent_server(f"HostKey {host_agent.public}",
                                 f"HostKeyAgent {host_agent.socket}", kind=kind)
               for kind in KINDS}
    host_agent.run_add("-D")
    outcomes = {kind: _server_key(server, user, "true")[:2] for kind, server in servers.items()}
    assert outcomes["privsep"] == outcomes["openssh"], outcomes
    assert outcomes["privsep"][0] == 255


def test_private_key_file_wins_over_the_agent(agent_server, user, tmp_path,
                                              host_agent: HostAgent) -> None:
    """A HostKey whose private key loads is used from its file, agent or not."""
    key = tmp_path / "host_file_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)],
                   check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(key)], capture_output=True,
                                 text=True, check=True).stdout.split()[1]
    outcomes = {kind: _server_key(agent_server(f"HostKey {key}",
                                              f"HostKeyAgent {host_agent.socket}", kind=kind),
                                  user, "true")[:2]
                for kind in KINDS}
    assert outcomes["privsep"] == outcomes["openssh"] == (0, fingerprint), outcomes


def _t(kind: str, config: Path) -> subprocess.CompletedProcess:
    argv = ([*privsep_command()] if kind == "privsep" else ["/usr/sbin/sshd"])
    return subprocess.run([*argv, "-t", "-f", str(config)], capture_output=True, text=True,
                          timeout=60)


def test_unreachable_agent_in_sshds_words(tmp_path, host_agent: HostAgent) -> None:
    """An agent that is not there is named as sshd names it; a public key
    alone is then no host key, and a daemon with no other key has none."""
    missing = tmp_path / "no-agent.sock"
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {host_agent.public}\nHostKeyAgent {missing}\n")
    results = {kind: _t(kind, config) for kind in KINDS}
    line = f'Could not connect to agent "{missing}": No such file or directory'
    for kind, result in results.items():
        assert line in result.stderr, (kind, result.stderr)
    # reached, the same file passes -t
    config.write_text(f"HostKey {host_agent.public}\nHostKeyAgent {host_agent.socket}\n")
    assert [_t(kind, config).returncode for kind in KINDS] == [0, 0]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
@pytest.mark.parametrize("agent", [True, False])
def test_key_file_permissions_in_sshds_words(tmp_path, host_agent: HostAgent, mode: int,
                                             agent: bool) -> None:
    """sshd loads every HostKey as a private key first: a file root owns
    that group or others may read gets its UNPROTECTED PRIVATE KEY FILE
    warning and "bad permissions", even the ".pub" that HostKeyAgent uses
    (which then still serves); a ".pub" that is private is "error in
    libcrypto".  Without the agent, a private key file open to others is
    refused the same way.  Compared whole, with sshd's CRs dropped."""
    config = tmp_path / "sshd_config"
    if agent:
        key = host_agent.public
        config.write_text(f"HostKey {key}\nHostKeyAgent {host_agent.socket}\n")
    else:
        key = tmp_path / "host_rsa_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(key)],
                       check=True)
        config.write_text(f"HostKey {key}\n")
    os.chmod(key, mode)
    results = {kind: _t(kind, config) for kind in KINDS}
    ours, theirs = (results[k] for k in KINDS)
    assert (ours.returncode, ours.stderr) == (theirs.returncode,
                                              theirs.stderr.replace("\r", "")), results
    assert ("UNPROTECTED PRIVATE KEY FILE" in ours.stderr) == (mode != 0o600)


def test_configure_refuses_what_is_not_an_agent(tmp_path) -> None:
    assert agent_signer.configure("none") is None
    assert agent_signer.configure(str(tmp_path / "nothing")) == \
        f'Could not connect to agent "{tmp_path / "nothing"}": No such file or directory'
    env_before = os.environ.pop("SSH_AUTH_SOCK", None)
    try:
        assert agent_signer.configure("SSH_AUTH_SOCK") == \
            'Could not connect to agent "SSH_AUTH_SOCK": agent not present'
    finally:
        if env_before is not None:
            os.environ["SSH_AUTH_SOCK"] = env_before
        agent_signer.configure("none")
