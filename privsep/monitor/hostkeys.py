"""Host keys, root side: each signature is made by a signer child that reads
the private key from its file (privsep/signer/), so that the monitor, and
every process forked from it, only ever holds the public halves.

``read_host_keys`` is the same idea at start-up: the listener learns each
key's public half from a signer, and never reads a private key itself.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import select
import signal
import warnings
from typing import Callable

import paramiko

from privsep.child import hostkey_proxy
from privsep.monitor import pubkey
from privsep.signer import signer
from privsep.wire.hostkey_blobs import BAD_PERMISSIONS, unprotected_key_warning
from privsep.wire import certs, hostkey_blobs
from privsep.wire.hostkey_blobs import HostKey, algorithms_for_type

log = logging.getLogger("privsep.monitor")

#: A signer that has not answered by then is killed (a key file on a hung
#: file system must not hang the connection).
SIGNER_TIMEOUT = 10.0
#: The most a signer may write: a signature, or the start-up report.
MAX_SIGNER_OUTPUT = 1024 * 1024


class SignerFailed(Exception):
    """The signer wrote nothing usable: the key could not be read or used."""


def key_for(keys: list[HostKey], algorithm: str) -> HostKey | None:
    """The host key that signs for ``algorithm``, if this server has one."""
    return next((k for k in keys if algorithm in algorithms_for_type(k.key_type)), None)


def sign(key: HostKey, algorithm: str, data: bytes) -> bytes:
    """The SSH signature blob of ``data`` by ``key``, made by a signer child."""
    return _run_signer(lambda out_fd: signer.sign(key, algorithm, data, out_fd))


#: What a signer's exception says, in sshd's words (ssh_err()), by prefix.
_SSH_ERR_WORDS = (
    ("UnknownKeyType", "unknown or unsupported key type"),
    ("Unable to load PEM file", "error in libcrypto"),
    ("Could not deserialize", "error in libcrypto"),
    ("Not OpenSSH private key format", "invalid format"),
)


def _sshd_reason(text: str) -> str:
    return next((words for prefix, words in _SSH_ERR_WORDS if text.startswith(prefix)), text)


def _private_key_problems(path: str, text: str) -> list[str]:
    """sshd's lines for a private key file that did not load: the warning
    about its permissions first when those were the reason; nothing when
    the system refused it (a missing file, a directory: an OSError, sshd's
    SSH_ERR_SYSTEM_ERROR, on which it is silent)."""
    if text.startswith(BAD_PERMISSIONS):
        return unprotected_key_warning(path, text) + [
            f"Unable to load host key \"{path}\": bad permissions"]
    if text.startswith("[Errno "):
        return []
    return [f"Unable to load host key \"{path}\": {_sshd_reason(text)}"]


def read_host_keys(paths: list[str], cert_paths: list[str] | tuple[str, ...] = (),
                   required_rsa_size: int = 1024) -> tuple[list[HostKey], list[str]]:
    """The keys that load and are usable, each with its HostCertificate from
    ``cert_paths`` if one certifies it, and sshd's words for the others,
    which start-up skips as sshd does (it fails only when none is left)."""
    # cryptography warns on every DSA key it reads; sshd 9.2 says nothing.
    warnings.filterwarnings("ignore", message="SSH DSA keys are deprecated")
    report = hostkey_blobs.decode_key_checks(
        _run_signer(lambda out_fd: signer.check(list(paths), out_fd)))
    keys, problems = [], []
    for path, ok, payload, private_error in report:
        if not ok:
            # sshd: the private half's reason, then that the public half failed too
            problems += _private_key_problems(path, payload.decode("utf-8", "replace"))
            problems.append(f"Unable to load host key: {path}")
            continue
        if private_error:  # HostKeyAgent holds it; sshd still says why the file did not load
            problems += _private_key_problems(path, private_error)
        least = max(required_rsa_size, pubkey.RSA_MINIMUM_BITS)
        if (pubkey.rsa_bits(payload) or least) < least:
            problems.append(f"main: Host key {path}: Invalid key length")
        else:
            keys.append(HostKey(path, payload))
    for cert_path in cert_paths:
        keys = _attach_certificate(keys, cert_path, problems)
    return keys, problems


def _attach_certificate(keys: list[HostKey], path: str, problems: list[str]) -> list[HostKey]:
    """Give the host key that ``path`` certifies its certificate (a public
    file, read as root at start-up), as sshd: the problems in its words."""
    try:
        with open(path, "rb") as handle:
            words = handle.read(1024 * 1024).split()
        blob = base64.b64decode(words[1], validate=True)
    except OSError as exc:
        problems.append(f"Could not load host certificate \"{path}\": {exc.strerror}")
        return keys
    except (IndexError, ValueError):
        problems.append(f"Could not load host certificate \"{path}\": invalid format")
        return keys
    try:
        cert = certs.parse_certificate(blob)
    except ValueError:
        problems.append(f"Certificate file is not a certificate: {path}")
        return keys
    for index, key in enumerate(keys):
        if key.blob == cert.key_blob:
            return keys[:index] + [dataclasses.replace(key, certificate=blob)] + keys[index + 1:]
    problems.append(f"No matching private key for certificate: {path}")
    return keys


def public_keys(keys: list[HostKey]) -> list[paramiko.PKey]:
    """The public halves as paramiko keys (child/hostkey_proxy.py's, which
    the exec'd sshd-auth of generation 10 uses as well)."""
    return hostkey_proxy.public_keys(keys)


def _run_signer(body: Callable[[int], object]) -> bytes:
    """Fork a signer running ``body(out_fd)``; what it wrote, once it exited 0."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        body(write_fd)  # exits
        os._exit(1)
    os.close(write_fd)
    try:
        output = _read_until_eof(read_fd)
    finally:
        os.close(read_fd)
        if output is None:  # timed out
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if output is None or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or not output:
        raise SignerFailed(f"signer {pid} failed (wait status {status})")
    return output


def _read_until_eof(fd: int) -> bytes | None:
    """Everything written to ``fd`` until the writer closed it; None past the
    time limit or the size limit."""
    chunks: list[bytes] = []
    size = 0
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        if not poller.poll(SIGNER_TIMEOUT * 1000):
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_SIGNER_OUTPUT:
            return None
        chunks.append(chunk)
