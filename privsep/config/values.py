"""Value parsers for sshd_config keywords: each takes a keyword's argument
words and returns the value, or raises ValueError with sshd's complaint.
Pure: no files, sockets or accounts."""

from __future__ import annotations

import logging
from typing import Callable

from privsep.config.algorithms import OPENSSH_ALGORITHMS, UnknownAlgorithm, resolve_algorithms
from privsep.config.match import match_user, parse_port

log = logging.getLogger("privsep.servconf")

Parser = Callable[[list[str]], object]


class SshdError(ValueError):
    """A complaint already in sshd's whole words: servconf puts only
    "FILE line N: " before it (no keyword name)."""


class KeywordError(SshdError):
    """sshd's words after the keyword as the line spells it: servconf puts
    "FILE line N: KEYWORD " before it."""


class WholeLine(SshdError):
    """sshd's whole line, with no file or line: what it finds wrong only
    once the file is read."""


class ExtraArguments(ValueError):
    """More words than the keyword takes: an error sshd counts and reads
    past ("keyword K extra arguments at end of line")."""


def one(words: list[str]) -> str:
    if len(words) != 1:
        raise ExtraArguments() if words else ValueError("missing argument")
    return words[0]


def choice(*allowed: str, aliases: dict[str, str] | None = None,
           complaint: str = 'unsupported option "{}".') -> Parser:
    """One of ``allowed`` (any case); else sshd's ``complaint`` about it."""
    def parse(words: list[str]) -> str:
        value = one(words).lower()
        value = (aliases or {}).get(value, value)
        if value not in allowed:
            raise SshdError(complaint.format(words[0]))
        return value
    return parse


_yes_no = choice("yes", "no")


def flag(words: list[str]) -> bool:
    return _yes_no(words) == "yes"


_INT_MAX = 2**31 - 1


def integer(low: int = 0, high: int = _INT_MAX) -> Parser:
    """sshd's atoi_err(): a number 0..INT_MAX in strtonum's words; ``low``
    and ``high`` narrow it further (our own check, in our words)."""
    def parse(words: list[str]) -> int:
        text = one(words).lstrip(" \t")
        body = text[1:] if text[:1] in "+-" else text
        if not body.isdigit():
            raise KeywordError("integer value invalid.")
        number = int(text)
        if number < 0:
            raise KeywordError("integer value too small.")
        if number > _INT_MAX:
            raise KeywordError("integer value too large.")
        if not low <= number <= high:
            raise ValueError(f"invalid number \"{text}\"")
        return number
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
    text = one(words)
    try:
        return parse_time(text)
    except ValueError:
        raise SshdError("invalid time value.") from None


def port(words: list[str]) -> list[int]:
    text = one(words)
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SshdError("Badly formatted port number.")
    return [int(text)]


def listen_address(words: list[str]) -> list[str]:
    """ListenAddress, kept as written once split_listen_address accepts it."""
    entry = one(words)
    split_listen_address(entry)
    return [entry]


def split_listen_address(entry: str) -> tuple[str, int | None]:
    """A ListenAddress as sshd reads it: (host, its own port or None for
    every Port).  A bare IPv6 address has two colons or more and no
    brackets; else "host", "host:port", "[host]" or "[host]:port"
    (hpdelim).  A port must be 1-65535."""
    if "[" not in entry and entry.count(":") >= 2:
        return entry, None
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise SshdError("bad address:port usage")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = entry.partition(":")
        port_text = port_text if colon else None
    if port_text is None:
        return host, None
    port = parse_port(port_text)
    if not port:
        raise SshdError("bad port number")
    return host, port


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


#: sshd's name for each list where it assembles them (servconf.c's ASSEMBLE)
_ASSEMBLED = {"ciphers": "ciphers", "macs": "macs", "kex": "kex_algorithms",
              "hostkey": "hostkeyalgorithms", "hostbased": "hostbased_accepted_algos",
              "pubkey": "pubkey_accepted_algos", "casig": "ca_sign_algorithms"}
#: sshd's complaint about an unknown name, by list
_BAD_ALGORITHMS = {"ciphers": "Bad SSH2 cipher spec '{}'.", "macs": "Bad SSH2 mac spec '{}'.",
                   "kex": "Bad SSH2 KexAlgorithms '{}'."}


def algorithms(kind: str) -> Parser:
    def parse(words: list[str]) -> list[str]:
        spec = one(words)
        if not [n for n in spec.lstrip("+-^").split(",") if n]:
            raise WholeLine(f"assemble_algorithms: {_ASSEMBLED.get(kind, kind)}: "
                            "invalid argument")
        try:
            return resolve_algorithms(kind, spec)
        except UnknownAlgorithm:
            if kind == "kex":  # kex_names_valid()'s own line comes first
                unknown = next(n for n in (spec[1:] if spec[:1] in "+^" else spec).split(",")
                               if n not in OPENSSH_ALGORITHMS["kex"])
                log.error('Unsupported KEX algorithm "%s"', unknown)
            raise SshdError(_BAD_ALGORITHMS.get(kind, "Bad key types '{}'.").format(spec)) \
                from None
    return parse


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
