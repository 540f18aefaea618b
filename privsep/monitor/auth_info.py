"""ExposeAuthInfo: the SSH_USER_AUTH file, written by the monitor.

sshd keeps one line per method that succeeded ("publickey ssh-ed25519
AAAA...", "password", "keyboard-interactive/pam"), partial successes
included, and with ExposeAuthInfo writes them to a fresh /tmp/sshauth.*
file owned by the user, mode 0600, named in the session's SSH_USER_AUTH and
removed when the connection ends.  The monitor writes it before it forks
the session process (with the user's rights, so the user owns it) and
removes it at cleanup.
"""

from __future__ import annotations

import base64
import logging
import os
import pwd
import secrets
import string

from privsep.common.ids import user_rights

log = logging.getLogger("privsep.monitor")

#: sshd's mkstemp template is /tmp/sshauth.XXXXXXXXXXXXXXX
PREFIX = "/tmp/sshauth."
_RANDOM = 15
_ALPHABET = string.ascii_letters + string.digits


def key_text(keytype: str, blob: bytes) -> str:
    """A public key as sshd writes it there: type and base64, no comment."""
    return f"{keytype} {base64.b64encode(blob).decode('ascii')}"


def line(method: str, info: str = "") -> str:
    """One line of the file: the method (with "/submethod") and its details."""
    if "\n" in info:  # sshd refuses the ambiguity too
        raise ValueError("auth info contains a newline")
    return f"{method} {info}" if info else method


def write(pw: pwd.struct_passwd, lines: list[str]) -> str | None:
    """Create the file as the user and write ``lines``; its path, or None
    (logged) when it could not be written."""
    data = "".join(f"{text}\n" for text in lines).encode("utf-8", "surrogateescape")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with user_rights(pw):
        for _ in range(100):
            path = PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM))
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                log.error("prepare_auth_info_file: mkstemp: %s", exc.strerror)
                return None
            try:
                os.write(fd, data)
            except OSError as exc:
                log.error("prepare_auth_info_file: write: %s", exc.strerror)
                os.unlink(path)
                return None
            finally:
                os.close(fd)
            return path
    log.error("prepare_auth_info_file: mkstemp: File exists")
    return None


def remove(path: str, pw: pwd.struct_passwd) -> None:
    """Remove the file at the end of the connection, as the user."""
    with user_rights(pw):
        try:
            os.unlink(path)
        except OSError as exc:
            log.error("auth info file %s: unlink: %s", path, exc.strerror)
