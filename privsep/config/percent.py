"""OpenSSH's percent_expand, pure: the one %-token expander of the daemon's
settings (AuthorizedKeysFile, AuthorizedPrincipalsFile, the key commands,
ChrootDirectory, internal-sftp's -d)."""

from __future__ import annotations


class PercentError(ValueError):
    """A %-escape that cannot be expanded: ``key`` is its letter ("" for a
    lone trailing %)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"unknown key %{key}" if key else "invalid format")
        self.key = key


def percent_expand(template: str, tokens: dict[str, str]) -> str:
    """``%x`` replaced by ``tokens["x"]``, ``%%`` by ``%``.  Raises
    PercentError in OpenSSH's words: "invalid format" for a lone trailing
    ``%``, "unknown key %x" for an escape ``tokens`` does not name."""
    out: list[str] = []
    pos = 0
    while pos < len(template):
        char = template[pos]
        if char != "%":
            out.append(char)
            pos += 1
            continue
        key = template[pos + 1:pos + 2]
        if not key:
            raise PercentError("")
        if key == "%":
            out.append("%")
        elif key in tokens:
            out.append(tokens[key])
        else:
            raise PercentError(key)
        pos += 2
    return "".join(out)
