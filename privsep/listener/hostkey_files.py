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


def generate_missing(paths: list[str]) -> list[str]:
    """Make each missing key whose file name says its type, as ``ssh-keygen -A``."""
    made = []
    for path in paths:
        kind = _type_from_path(path)
        if os.path.exists(path) or kind is None:
            continue
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", *_KEYGEN_ARGS[kind], "-N", "", "-C", "", "-f", path],
            check=True, stdin=subprocess.DEVNULL,
        )
        made.append(path)
    return made
