"""Process titles as OpenSSH shows them: ``privsep-sshd: alice [priv]``.

setproctitle (PyPI) rewrites the whole argv/environ area, so long titles are
not cut; python-prctl's version truncates and crashes with an empty
environment (measured on Debian 12).  The comm name (``ps -o comm``) stays short.

In process generation 10 (OpenSSH 10's model) the exec'd per-connection and
pre-auth programs call ``use_program`` first: their titles then read
``privsep-sshd-session: alice [priv]`` and ``privsep-sshd-auth: alice [net]``,
and their comm names are OpenSSH 10's binaries' (``sshd-session``,
``sshd-auth``), which is what ``pstree`` shows.
"""

from __future__ import annotations

import prctl
import setproctitle

PREFIX = "privsep-sshd: "


#: The comm name (``ps -o comm``, pstree's process name), as sshd's is "sshd".
COMM = "privsep-sshd"


def use_program(prefix: str, comm: str) -> None:
    """Title this process (and what it forks) as another program of the daemon:
    ``prefix`` starts every title, ``comm`` is the kernel's 15-byte name."""
    global PREFIX, COMM
    PREFIX, COMM = prefix, comm


def set(title: str) -> None:  # noqa: A001 - reads as proctitle.set(...)
    setproctitle.setproctitle(PREFIX + title)
    # setproctitle also renames comm to the title's first 15 bytes
    # ("privsep-sshd: d"); keep the program's name there instead.
    prctl.set_name(COMM)
