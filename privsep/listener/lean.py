"""What the daemon does not import: imported first by the listener's command
line, before paramiko.

Every module the listener imports is in every monitor, net-child and session
process it forks: in their memory (a bigger image makes each fork and each
exit slower, since the kernel copies and then tears down its page tables)
and in what they touch.  paramiko's ``paramiko.config`` imports ``invoke``
only for the client's ``Match exec`` and does without it when the import
fails; ``invoke`` brings about a hundred modules (``unittest.mock``,
``asyncio``, ``ssl``, ``json``, a YAML parser), about 5 MB of every
process.  A server never reads an ssh_config, so the import is made to fail
here: a ``None`` entry in ``sys.modules`` makes ``import invoke`` raise
ImportError.
"""

from __future__ import annotations

import sys

#: Modules that no process of the daemon uses, kept out of the image.
NEVER_IMPORTED = ("invoke",)


def keep_out() -> None:
    """Make importing each of NEVER_IMPORTED fail (unless already imported)."""
    for name in NEVER_IMPORTED:
        sys.modules.setdefault(name, None)


keep_out()
