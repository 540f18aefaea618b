"""Host key files, at start-up as root: made when missing, by ssh-keygen,
so that the listener never reads a private key (privsep/signer/ does)."""

from __future__ import annotations

import os
import subprocess


_KEYGEN_ARGS = {"rsa": ["-t", "rsa", "-b", "3072"], "ecdsa": ["-t", "ecdsa"], "ed25519": ["-t", "ed25519"]}


def _type_from_path(path: str) -> str | None:
    name = os.path.basename(path)
    for kind in _KEYGEN_ARGS:
        if f"_{kind}_" in name:
            return kind
    return None


def made_at_start(path: str) -> bool:
    """Whether start-up as root makes the key file ``path`` (generate_missing):
    it is missing and its name says its type.  ``sshd -t`` skips those; any
    other it reads, and a missing one is sshd's "Unable to load host key"."""
    return os.geteuid() == 0 and not os.path.exists(path) and _type_from_path(path) is not None


def generate_missing(paths: list[str]) -> list[str]:
    """Make each missing key whose file name says its type, as ``ssh-keygen -A``."""
    made = []
    for path in paths:
        if not made_at_start(path):
            continue
        kind = _type_from_path(path)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", *_KEYGEN_ARGS[kind], "-N", "", "-C", "", "-f", path],
            check=True, stdin=subprocess.DEVNULL,
        )
        made.append(path)
    return made
