"""Throwaway system users for tests that log in for real (needs root).

Each user gets a unique short name, a home made by useradd, optionally a
random password (set with chpasswd) and an ed25519 key whose public half is
in ~/.ssh/authorized_keys. The private key lives in a root-owned temp
directory, not in the user's home, so that nothing the user owns holds it
and removing the user cannot race with reading it.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TestUser", "create_user", "remove_user"]


@dataclass
class TestUser:
    __test__ = False  # a data class, not a pytest test class

    name: str
    uid: int
    gid: int
    home: Path
    password: str | None   # None: the account has no usable password
    key_path: Path | None  # private ed25519 key, root-owned, outside home
    pubkey: str | None     # one authorized_keys line

    @property
    def key_dir(self) -> Path | None:
        return self.key_path.parent if self.key_path is not None else None


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def create_user(prefix: str = "pst", password: bool = True,
                key: bool = True) -> TestUser:
    """Create a user named ``prefix`` + 8 hex digits (<= 16 characters so
    that utmp, ps and `last` show it whole)."""
    name = f"{prefix}{secrets.token_hex(4)}"
    if len(name) > 16:
        raise ValueError(f"user name {name!r} longer than 16 characters")
    _run("useradd", "-m", "-s", "/bin/bash", name)
    key_dir: Path | None = None
    try:
        pw = pwd.getpwnam(name)
        home = Path(pw.pw_dir)
        secret: str | None = None
        if password:
            # token_urlsafe never contains ':' or a newline, which chpasswd
            # would misread.
            secret = secrets.token_urlsafe(12)
            _run("chpasswd", stdin=f"{name}:{secret}\n")

        key_path: Path | None = None
        pubkey: str | None = None
        if key:
            key_dir = Path(tempfile.mkdtemp(prefix=f"{name}-key-"))
            os.chmod(key_dir, 0o700)  # mkdtemp already does; be explicit
            key_path = key_dir / "id_ed25519"
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                 f"{name}@test", "-f", str(key_path))
            pubkey = key_path.with_suffix(".pub").read_text().strip()
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            auth = ssh_dir / "authorized_keys"
            auth.write_text(pubkey + "\n")
            for path, mode in ((ssh_dir, 0o700), (auth, 0o600)):
                os.chown(path, pw.pw_uid, pw.pw_gid)
                os.chmod(path, mode)
        return TestUser(name, pw.pw_uid, pw.pw_gid, home, secret, key_path,
                        pubkey)
    except BaseException:
        _remove(name, None, key_dir)
        raise


def remove_user(user: TestUser) -> None:
    """Kill what the user still runs, delete the account, its home and mail,
    and the key directory."""
    _remove(user.name, user.uid, user.key_dir)


def _remove(name: str, uid: int | None, key_dir: Path | None) -> None:
    if uid is not None:
        # pkill exits 1 when nothing matched: not an error here.
        subprocess.run(["pkill", "-KILL", "-u", str(uid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # -f: even if a process of the user is still dying; userdel warns about
    # a missing mail spool, which is normal for useradd's defaults.
    subprocess.run(["userdel", "-r", "-f", name],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if key_dir is not None:
        shutil.rmtree(key_dir, ignore_errors=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    raise RuntimeError(f"test user {name} could not be removed")
