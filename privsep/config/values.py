"""Value parsers for sshd_config keywords: each takes a keyword's argument
words and returns the value, or raises ValueError with sshd's complaint.
Pure: no files, sockets or accounts."""

from __future__ import annotations

from typing import Callable

from privsep.config.algorithms import resolve_algorithms
from privsep.config.match import match_user

Parser = Callable[[list[str]], object]


class SshdError(ValueError):
    """A complaint already in sshd's whole words: servconf puts only
    "FILE line N: " before it (no keyword name)."""


def one(words: list[str]) -> str:
    if len(words) != 1:
        raise ValueError("takes exactly one argument" if words else "missing argument")
    return words[0]


def choice(*allowed: str, aliases: dict[str, str] | None = None) -> Parser:
    def parse(words: list[str]) -> str:
        value = one(words).lower()
        value = (aliases or {}).get(value, value)
        if value not in allowed:
            raise ValueError(f"unsupported option \"{words[0]}\"")
        return value
    return parse


_yes_no = choice("yes", "no")


def flag(words: list[str]) -> bool:
    return _yes_no(words) == "yes"


def integer(low: int = 0, high: int = 2**31 - 1) -> Parser:
    def parse(words: list[str]) -> int:
        text = one(words)
        if not text.isdigit() or not low <= int(text) <= high:
            raise ValueError(f"invalid number \"{text}\"")
        return int(text)
    return parse


def parse_time(text: str) -> int:
    """sshd's time format: 90, 1m30s, 2h, 1w."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total, number = 0, ""
    for ch in text.lower():
        if ch.isdigit():
            number += ch
        elif ch in units and number:
            total, number = total + int(number) * units[ch], ""
        else:
            raise ValueError(f"invalid time value \"{text}\"")
    if not text:
        raise ValueError("missing time value")
    return total + int(number or 0)


def time_value(words: list[str]) -> int:
    return parse_time(one(words))


def port(words: list[str]) -> list[int]:
    return [integer(1, 65535)(words)]


def words_list(words: list[str]) -> list[str]:
    if not words:
        raise ValueError("missing argument")
    return list(words)


def user_patterns(words: list[str]) -> list[str]:
    """AllowUsers/DenyUsers: a bad host list after '@' is refused here, as
    sshd does, so that no login meets it."""
    for word in words:
        if not word or match_user(None, None, None, word) < 0:
            raise ValueError(f'invalid pattern: "{word}"')
    return words_list(words)


def text(words: list[str]) -> str:
    """A single value; 'none' is kept as OpenSSH prints it."""
    return one(words)


def rest(words: list[str]) -> str:
    """The rest of the line (ForceCommand takes a command line)."""
    if not words:
        raise ValueError("missing argument")
    return " ".join(words)


def max_startups(words: list[str]) -> tuple[int, int, int]:
    parts = one(words).split(":")
    if not all(p.isdigit() for p in parts) or len(parts) not in (1, 3):
        raise SshdError("Invalid MaxStartups spec.")
    numbers = [int(p) for p in parts]
    if numbers[0] <= 0 or numbers[-1] <= 0:
        raise SshdError("Invalid MaxStartups spec.")
    if len(numbers) == 1:
        return (numbers[0], 100, numbers[0])
    start, rate, full = numbers
    if not (start <= full and 0 < rate <= 100):
        raise SshdError("Invalid MaxStartups spec.")
    return (start, rate, full)


def subsystem(words: list[str]) -> dict[str, str]:
    if len(words) < 2:
        raise ValueError("missing subsystem command")
    return {words[0]: " ".join(words[1:])}


def set_env(words: list[str]) -> list[str]:
    for word in words:
        if "=" not in word or word.startswith("="):
            raise ValueError(f"invalid environment assignment \"{word}\"")
    return words_list(words)


def x11(words: list[str]) -> bool:
    """X11Forwarding: a session's x11-req is served (session/x11.py)."""
    return flag(words)


def algorithms(kind: str) -> Parser:
    return lambda words: resolve_algorithms(kind, one(words))


def rekey_limit(words: list[str]) -> tuple[int, int]:
    if not 1 <= len(words) <= 2:
        raise ValueError("RekeyLimit takes a size and an optional time")
    size_text = words[0].lower()
    if size_text == "default":
        size = 0
    else:
        scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(size_text[-1:], 1)
        digits = size_text[:-1] if scale > 1 else size_text
        if not digits.isdigit():
            raise ValueError(f"invalid RekeyLimit size \"{words[0]}\"")
        size = int(digits) * scale
    seconds = 0
    if len(words) == 2 and words[1].lower() not in ("none", "default"):
        seconds = parse_time(words[1])
    return (size, seconds)


def _quote_word(word: str) -> str:
    """A word as it must be written for the line to split back into it."""
    if word and not any(c in word for c in " \t\"'"):
        return word
    return '"' + word.replace('"', '\\"') + '"'


def command(words: list[str]) -> str:
    """AuthorizedKeysCommand, AuthorizedPrincipalsCommand: "none" or a
    command line whose program is an absolute path (split into arguments
    again when it runs)."""
    if len(words) == 1 and words[0].lower() == "none":
        return "none"
    if not words or not words[0].startswith("/"):
        raise ValueError("must be an absolute path")
    return " ".join(_quote_word(w) for w in words)


PUBKEY_AUTH_OPTIONS = ("touch-required", "verify-required")


def pubkey_auth_options(words: list[str]) -> tuple[str, ...]:
    """PubkeyAuthOptions: none, touch-required, verify-required (any case),
    kept in sshd's order."""
    chosen = set()
    for word in words:
        name = word.lower()
        if name == "none":
            continue
        if name not in PUBKEY_AUTH_OPTIONS:
            raise ValueError(f"unsupported PubkeyAuthOptions option {word}")
        chosen.add(name)
    return tuple(o for o in PUBKEY_AUTH_OPTIONS if o in chosen)
