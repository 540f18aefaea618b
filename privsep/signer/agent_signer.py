"""HostKeyAgent: host keys whose private halves an ssh-agent holds.

As sshd 9.2 does it: a HostKey whose private key does not load, but whose
public key does (the file itself, or the same name with ".pub"), is used
through the agent named by HostKeyAgent (a socket path, or "SSH_AUTH_SOCK"
for the environment's).  The private key never enters any process of this
daemon, not even a signer: the signer asks the agent to sign
(SSH2_AGENTC_SIGN_REQUEST) and checks the signature as it checks its own.

The listener calls ``configure`` once at start (sshd connects to the agent
then, and says so when it cannot); the socket's path is inherited by every
process forked afterwards, and each signer connects afresh, for its one
signature.  ``load_host_key`` is the signer's one hook.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket

import paramiko
from paramiko.agent import AgentKey, AgentSSH

from privsep.signer.keyfiles import load_private

#: The agent's socket, once ``configure`` reached it; None: no agent.
_socket_path: str | None = None
#: How long a signer waits for the agent (the monitor's own limit is 10 s).
AGENT_TIMEOUT = 8.0
#: What HostKeyAgent says to take the socket from the environment.
FROM_ENVIRONMENT = "SSH_AUTH_SOCK"


def configure(setting: str) -> str | None:
    """Use the agent that HostKeyAgent names; None, or sshd's error line
    when it cannot be reached (the keys then need their private files)."""
    global _socket_path
    _socket_path = None
    if setting.lower() == "none":
        return None
    path = os.environ.get(FROM_ENVIRONMENT) if setting == FROM_ENVIRONMENT else setting
    if not path:
        return f'Could not connect to agent "{setting}": agent not present'
    try:
        _connect(path).close()
    except OSError as exc:
        return f'Could not connect to agent "{setting}": {exc.strerror or exc}'
    _socket_path = path
    return None


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(AGENT_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def load_public(path: str) -> bytes:
    """The public key blob of an OpenSSH public key file: ``path`` itself,
    or else ``path``.pub (sshkey_load_public's order)."""
    for candidate in (path, f"{path}.pub"):
        try:
            with open(candidate, "rb") as handle:
                words = handle.read(64 * 1024).split()
            blob = base64.b64decode(words[1], validate=True)
            return paramiko.PKey.from_type_string(words[0].decode(), blob).asbytes()
        except (OSError, IndexError, ValueError, binascii.Error, paramiko.SSHException):
            continue
    raise ValueError(f"no public key in {path} or {path}.pub")


class AgentHostKey(AgentKey):
    """A host key that signs through the agent; everything else (name,
    blob, verification) is its public half's."""

    def __init__(self, socket_path: str, blob: bytes) -> None:
        super().__init__(agent=None, blob=blob)
        self.socket_path = socket_path

    def sign_ssh_data(self, data: bytes, algorithm: str | None = None) -> paramiko.Message:
        """The agent's signature, as a paramiko key's: a Message.  An agent
        that answers with another algorithm (ssh-rsa for rsa-sha2-256) is
        refused, as sshd's ssh_agent_sign refuses it."""
        sock = _connect(self.socket_path)
        try:
            self.agent = AgentSSH()
            self.agent._conn = sock
            blob = super().sign_ssh_data(data, algorithm)
        finally:
            self.agent = None
            sock.close()
        signed_with = paramiko.Message(blob).get_text()
        if algorithm is not None and signed_with != algorithm:
            raise paramiko.SSHException(f"agent signed with {signed_with}, not {algorithm}")
        return paramiko.Message(blob)


def load_host_key(path: str, check_permissions: bool = False
                  ) -> tuple[paramiko.PKey, Exception | None]:
    """The host key in ``path``: its private key, or, when that does not
    load and an agent is configured, the agent's key that the public key
    names, with why the private key did not load (sshd logs that as well).
    The private key's error stands when neither loads."""
    try:
        return load_private(path, check_permissions), None
    except Exception as exc:
        if _socket_path is None:
            raise
        try:
            blob = load_public(path)
        except ValueError:
            pass
        else:
            return AgentHostKey(_socket_path, blob), exc
        raise
