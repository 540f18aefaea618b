"""Process titles as OpenSSH shows them: ``privsep-sshd: alice [priv]``.

setproctitle (PyPI) rewrites the whole argv/environ area, so long titles are
not cut; python-prctl's version truncates and crashes with an empty
environment (DESIGN.md).  The comm name (``ps -o comm``) stays short.
"""

from __future__ import annotations

import setproctitle

PREFIX = "privsep-sshd: "


def set(title: str) -> None:  # noqa: A001 - reads as proctitle.set(...)
    setproctitle.setproctitle(PREFIX + title)
