"""Which OpenSSH process model to imitate when sshd_config does not say
(``ProcessGeneration``): the one of the OpenSSH installed on this machine.

OpenSSH 9.x (Debian 12) forks its per-connection and pre-auth processes
(generation 9); OpenSSH 10 (Debian 13) execs ``sshd-session`` and
``sshd-auth`` (generation 10).  dpkg's record of openssh-server says which
is installed without running anything; failing that, ``sshd -V`` does.
Without OpenSSH: 9, the model this daemon began with.
"""

from __future__ import annotations

import re
import shutil
import subprocess

DPKG_STATUS = "/var/lib/dpkg/status"
#: the generation when no OpenSSH is installed
FALLBACK = 9


def generation_of_version(major: int) -> int:
    """OpenSSH 10 and later exec sshd-session and sshd-auth."""
    return 10 if major >= 10 else 9


def dpkg_openssh_major(status_text: str) -> int | None:
    """The major version of the installed openssh-server in dpkg's status
    file (``Version: 1:10.0p1-7+deb13u4`` -> 10), or None."""
    for stanza in status_text.split("\n\n"):
        if not re.search(r"^Package: openssh-server$", stanza, re.M):
            continue
        if not re.search(r"^Status: install ok installed$", stanza, re.M):
            return None
        version = re.search(r"^Version: (?:\d+:)?(\d+)\.", stanza, re.M)
        return int(version.group(1)) if version else None
    return None


def sshd_v_major(text: str) -> int | None:
    """From ``sshd -V``'s ``OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL ...``."""
    found = re.search(r"OpenSSH_(\d+)\.", text)
    return int(found.group(1)) if found else None


def installed() -> int:
    """The generation of the OpenSSH installed here."""
    try:
        with open(DPKG_STATUS, encoding="utf-8", errors="replace") as handle:
            major = dpkg_openssh_major(handle.read())
        if major is not None:
            return generation_of_version(major)
    except OSError:
        pass
    sshd = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/usr/local/sbin")
    if sshd:
        try:
            done = subprocess.run([sshd, "-V"], capture_output=True, text=True, timeout=5,
                                  stdin=subprocess.DEVNULL)
            major = sshd_v_major(done.stderr + done.stdout)
            if major is not None:
                return generation_of_version(major)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return FALLBACK
