"""The signer's life: forked, as root, by the monitor for one signature or by
the listener to check the host keys at start-up.  It writes its result to a
pipe and exits; nothing it read survives it."""

from __future__ import annotations

import os
from typing import NoReturn

import paramiko
from cryptography.hazmat.primitives.asymmetric import ed25519

from privsep.signer.agent_signer import load_host_key
from privsep.signer.keyfiles import Ed25519PrivateKey, public_key
from privsep.wire import hostkey_blobs
from privsep.wire.hostkey_blobs import HostKey


def sign(host_key: HostKey, algorithm: str, data: bytes, out_fd: int) -> NoReturn:
    """Sign ``data`` with the key in ``host_key.path``, which must still be the
    key the daemon started with; write the SSH signature blob to ``out_fd``."""
    code = 1
    try:
        key, _ = load_host_key(host_key.path)
        if key.asbytes() != host_key.blob:
            raise ValueError("the key file changed since start-up")
        signature = key.sign_ssh_data(data, algorithm).asbytes()
        public = public_key(key.get_name(), host_key.blob)
        if not public.verify_ssh_sig(data, paramiko.Message(signature)):
            raise ValueError("the signature does not verify")
        _write_all(out_fd, signature)
        code = 0
    except BaseException:
        pass
    os._exit(code)


def warm_up() -> None:
    """Sign and verify once with an Ed25519 key, in the listener before it
    forks, so that every signer and monitor starts with OpenSSL's Ed25519
    implementation looked up and libsodium's verifier touched: a signer's
    first signature cost 1.1 ms more, its check 0.3 ms more, on the key
    exchange's critical path (docs/DESIGN.md, "Login time").

    The key is the all-zero seed, a public test value: nothing secret is
    made or kept.  Ed25519 signing is deterministic, so no random number is
    drawn and OpenSSL's random generator stays untouched, as in
    child/ciphers.warm_up."""
    key = Ed25519PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)))
    signature = key.sign_ssh_data(b"", key.NAME).asbytes()
    public_key(key.NAME, key.asbytes()).verify_ssh_sig(b"", paramiko.Message(signature))


def check(paths: list[str], out_fd: int) -> NoReturn:
    """Load each host key, as sshd at start-up (file permissions checked);
    write, for each, its public blob or why it failed, and why its private
    file did not load when the agent holds the key."""
    results = []
    for path in paths:
        try:
            key, private_error = load_host_key(path, check_permissions=True)
            results.append((path, True, key.asbytes(),
                            "" if private_error is None else str(private_error)))
        except Exception as exc:
            results.append((path, False, str(exc).encode("utf-8", "replace"), ""))
    try:
        _write_all(out_fd, hostkey_blobs.encode_key_checks(results))
    except BaseException:
        os._exit(1)
    os._exit(0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
