"""Process titles as OpenSSH shows them: ``privsep-sshd: alice [priv]``.

setproctitle (PyPI) rewrites the whole argv/environ area, so long titles are
not cut; python-prctl's version truncates and crashes with an empty
environment (measured on Debian 12).  The comm name (``ps -o comm``) stays short.
"""

from __future__ import annotations

import prctl
import setproctitle

PREFIX = "privsep-sshd: "


#: The comm name (``ps -o comm``, pstree's process name), as sshd's is "sshd".
COMM = "privsep-sshd"


def set(title: str) -> None:  # noqa: A001 - reads as proctitle.set(...)
    setproctitle.setproctitle(PREFIX + title)
    # setproctitle also renames comm to the title's first 15 bytes
    # ("privsep-sshd: d"); keep the program's name there instead.
    prctl.set_name(COMM)
