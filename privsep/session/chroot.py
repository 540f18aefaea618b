"""ChrootDirectory: the session process's jail, entered as root just before
it becomes the user (as sshd's do_setusercontext does), so that everything
it serves afterwards (shells, commands, internal-sftp, forwarded Unix
sockets) sees only the jail.

sshd's rules, checked here in its words:

* the value is expanded for the user: ``~`` and ``~user``, then ``%h`` (the
  home directory), ``%u`` (the user name), ``%U`` (the uid) and ``%%``;
* the path must be absolute, and every component of it, ``/`` first, a
  directory owned by root that neither its group nor others may write;
* the process then changes its root to it and its directory to ``/``.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass

from privsep.config.percent import percent_expand as expand_tokens

#: The length sshd refuses (PATH_MAX).
_PATH_MAX = 4096


class ChrootRefused(Exception):
    """The jail cannot be entered; the text is sshd's fatal line."""


def percent_expand(template: str, tokens: dict[str, str]) -> str:
    """config/percent.py's, refused as the jail's fatal line."""
    try:
        return expand_tokens(template, tokens)
    except ValueError as exc:
        raise ChrootRefused(f"percent_expand: {exc}") from None


def tilde_expand(path: str, pw: pwd.struct_passwd) -> str:
    """``~`` or ``~/...`` is the user's home, ``~name/...`` that user's."""
    if not path.startswith("~"):
        return path
    name, sep, rest = path[1:].partition("/")
    if name:
        try:
            home = pwd.getpwnam(name).pw_dir
        except KeyError:
            raise ChrootRefused(f"tilde_expand: No such user {name}") from None
    else:
        home = pw.pw_dir
    return home.rstrip("/") + "/" + rest if sep else home


def expand(template: str, pw: pwd.struct_passwd) -> str:
    """ChrootDirectory's value for this user (sshd: %h, %u, %U after ~)."""
    return percent_expand(tilde_expand(template, pw),
                          {"h": pw.pw_dir, "u": pw.pw_name, "U": str(pw.pw_uid)})


def components(path: str) -> list[tuple[str, bool]]:
    """Each prefix of ``path`` sshd checks, ``/`` first, each with whether it
    is the last (sshd calls the others a "component")."""
    prefixes = []
    end = path.find("/")
    while end != -1:
        prefixes.append((path[:end + 1], False))
        end = path.find("/", end + 1)
    if not path.endswith("/"):
        prefixes.append((path, True))
    elif prefixes:
        prefixes[-1] = (prefixes[-1][0], True)
    return prefixes


def check(path: str) -> None:
    """sshd's safely_chroot checks, without entering: ChrootRefused if any."""
    if not path.startswith("/"):
        raise ChrootRefused("chroot path does not begin at root")
    if len(path) >= _PATH_MAX:
        raise ChrootRefused("chroot path too long")
    for component, last in components(path):
        what = "" if last else "component "
        try:
            st = os.stat(component)
        except OSError as exc:
            raise ChrootRefused(f"safely_chroot: stat(\"{component}\"): {exc.strerror}") from None
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise ChrootRefused(f"bad ownership or modes for chroot directory {what}\"{component}\"")
        if not stat.S_ISDIR(st.st_mode):
            raise ChrootRefused(f"chroot path {what}\"{component}\" is not a directory")


def _load_name_services() -> None:
    """Make glibc load every passwd and group module of nsswitch.conf while
    their files are still reachable: a name no module knows goes through
    them all.  In the jail, "systemd" then still names root and nobody
    (users-groups-by-id, ls -l), as it does for sshd, whose process loaded
    it before its chroot."""
    for lookup in (pwd.getpwnam, grp.getgrnam):
        try:
            lookup("privsep-sshd-nss-probe")
        except KeyError:
            pass


@dataclass(frozen=True)
class Jail:
    """Where the session process was jailed: ``path`` outside, "" for none."""

    path: str = ""

    @property
    def active(self) -> bool:
        return bool(self.path)


def enter(setting: str, pw: pwd.struct_passwd) -> Jail:
    """ChrootDirectory for this user, as root: checked, then entered (the
    working directory is then the jail's ``/``).  "none" enters nothing."""
    if not setting or setting.lower() == "none":
        return Jail()
    if os.geteuid() != 0:
        raise ChrootRefused("server lacks privileges to chroot to ChrootDirectory")
    path = expand(setting, pw)
    check(path)
    _load_name_services()
    try:
        os.chdir(path)
    except OSError as exc:
        raise ChrootRefused(f"Unable to chdir to chroot path \"{path}\": {exc.strerror}") from None
    try:
        os.chroot(path)
    except OSError as exc:
        raise ChrootRefused(f"chroot(\"{path}\"): {exc.strerror}") from None
    os.chdir("/")
    return Jail(path)
