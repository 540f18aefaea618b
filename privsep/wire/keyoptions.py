"""authorized_keys options (sshd(8) "AUTHORIZED_KEYS FILE FORMAT"), pure.

The monitor parses them from the line that let the user in
(monitor/authorized_keys.py) and checks from= and expiry-time= at login; the
session process enforces the rest (session/policy.py).  Parsing is strict: a
line with an unknown or malformed option is dropped, as OpenSSH drops it.
"""

from __future__ import annotations

import calendar
import datetime
import math
import re
import time
from dataclasses import dataclass


#: Options that are bare words.  Most can be negated with a "no-" prefix
#: (OpenSSH's opt_flag with negation allowed); "restrict" and
#: "cert-authority" cannot.
_NEGATABLE_FLAGS = frozenset(
    {
        "port-forwarding",
        "agent-forwarding",
        "x11-forwarding",
        "pty",
        "user-rc",
        "touch-required",
        "verify-required",
    }
)


FLAG_OPTIONS = frozenset(
    {"restrict", "cert-authority"}
    | _NEGATABLE_FLAGS
    | {"no-" + name for name in _NEGATABLE_FLAGS}
)


#: Options that take a double-quoted value: name="value".
VALUE_OPTIONS = frozenset(
    {
        "command",
        "from",
        "environment",
        "permitopen",
        "permitlisten",
        "expiry-time",
        "principals",
        "tunnel",
    }
)


#: Value options that may appear only once per line.
_SINGLE_VALUE_OPTIONS = frozenset({"command", "from", "principals"})


# The largest tunnel device number OpenSSH accepts (SSH_TUNID_MAX).
_TUNID_MAX = 0x7FFFFFFF - 2


_ENV_NAME = re.compile(r"[A-Za-z0-9_]+\Z")


_EXPIRY_DIGITS = re.compile(r"[0-9]{8}(?:[0-9]{4}(?:[0-9]{2})?)?\Z")


BLANKS = " \t"


@dataclass(frozen=True)
class KeyOption:
    """One authorized_keys option: ``no-pty`` (value None) or ``command="..."``.

    ``name`` is lower-case; ``value`` has its quotes removed and ``\\"``
    turned into ``"``.
    """

    name: str
    value: str | None = None


def _dequote(text: str, pos: int) -> tuple[str, int]:
    """Read a double-quoted value starting at ``text[pos]``.

    Inside the quotes ``\\"`` stands for a quote; every other character,
    backslashes included, is literal.  Returns the value and the index after
    the closing quote.
    """
    if pos >= len(text) or text[pos] != '"':
        raise ValueError("missing start quote")
    pos += 1
    out: list[str] = []
    while pos < len(text) and text[pos] != '"':
        if text[pos] == "\\" and text[pos + 1 : pos + 2] == '"':
            pos += 1
        out.append(text[pos])
        pos += 1
    if pos >= len(text):
        raise ValueError("missing end quote")
    return "".join(out), pos + 1


def _check_permit(value: str, bare_port_ok: bool) -> None:
    """Validate a permitopen/permitlisten value: host:port (port may be *)."""
    if bare_port_ok and ":" not in value:
        value = "*:" + value
    if value.startswith("["):
        close = value.find("]")
        if close < 0 or value[close + 1 : close + 2] not in (":", "/"):
            raise ValueError("invalid permission hostname")
        host, port = value[1:close], value[close + 2 :]
    else:
        cut = min((i for i in (value.find(":"), value.find("/")) if i >= 0), default=-1)
        if cut < 0:
            raise ValueError("invalid permission port")
        host, port = value[:cut], value[cut + 1 :]
    if len(host) >= 1025:
        raise ValueError("invalid permission hostname")
    if port != "*" and not (port.isdigit() and 0 < int(port) <= 65535):
        raise ValueError("invalid permission port")


def _check_expiry(value: str) -> None:
    """Validate an expiry-time: YYYYMMDD[HHMM[SS]], optionally ending in Z."""
    if expiry_timestamp(value) is None:
        raise ValueError("invalid expires time")


def _check_option_value(name: str, value: str) -> None:
    """Reject option values OpenSSH would reject when it parses the line."""
    if name == "environment":
        env_name, eq, _ = value.partition("=")
        if not eq or not _ENV_NAME.match(env_name):
            raise ValueError("invalid environment string")
    elif name == "permitopen":
        _check_permit(value, bare_port_ok=False)
    elif name == "permitlisten":
        _check_permit(value, bare_port_ok=True)
    elif name == "expiry-time":
        _check_expiry(value)
    elif name == "tunnel":
        if value.lower() != "any" and not (
            value.isdigit() and int(value) <= _TUNID_MAX
        ):
            raise ValueError("invalid tun device")


def parse_key_options(text: str) -> tuple[KeyOption, ...]:
    """Parse the comma-separated options field of an authorized_keys line.

    Names are case-insensitive (returned lower-case).  Any unknown option,
    a flag given a value, a value option without a quoted value, a repeated
    command/from/principals, or a malformed value makes the whole field
    invalid: ValueError says why.
    """
    options: list[KeyOption] = []
    seen: set[str] = set()
    pos = 0
    while True:
        end = pos
        while end < len(text) and text[end] not in "=,":
            end += 1
        name = text[pos:end].lower()
        if name in FLAG_OPTIONS:
            if text[end : end + 1] == "=":
                raise ValueError(f"option {name!r} takes no value")
            options.append(KeyOption(name, None))
            pos = end
        elif name in VALUE_OPTIONS:
            if text[end : end + 1] != "=":
                raise ValueError(f"option {name!r} needs a value")
            value, pos = _dequote(text, end + 1)
            if name in _SINGLE_VALUE_OPTIONS and name in seen:
                raise ValueError(f'multiple "{name}" clauses')
            _check_option_value(name, value)
            options.append(KeyOption(name, value))
        else:
            raise ValueError(f"unknown key option {text[pos:end]!r}")
        seen.add(name)
        if pos == len(text):
            return tuple(options)
        if text[pos] != ",":
            raise ValueError("unexpected text after option " + repr(name))
        pos += 1
        if pos == len(text):
            raise ValueError("unexpected end-of-options")


def expiry_timestamp(value: str) -> int | None:
    """An expiry-time= value as sshd's parse_absolute_time() reads it: whole
    seconds since the epoch, or None if malformed.  One trailing Z (or UTC,
    either case) means UTC, else local time with tm_isdst=0 as sshd passes it
    to mktime(); a time at or before the epoch is refused as sshd does."""
    text, utc = value, False
    if len(text) > 1 and text[-1] in "Zz":
        text, utc = text[:-1], True
    elif len(text) > 3 and text[-3:].upper() == "UTC":
        text, utc = text[:-3], True
    if not _EXPIRY_DIGITS.match(text):
        return None
    fields = [int(text[i:i + 2]) for i in range(4, len(text), 2)]
    try:
        when = datetime.datetime(int(text[:4]), *fields)
        if utc:
            stamp = calendar.timegm(when.timetuple())
        else:
            stamp = int(time.mktime(when.timetuple()[:8] + (0,)))
    except (ValueError, OverflowError):
        return None
    return stamp if stamp > 0 else None


def key_expired(value: str, now: datetime.datetime | None = None) -> bool:
    """Whether an expiry-time= value is past at ``now``; a malformed one
    counts as past.  sshd refuses only when the expiry is before time(NULL),
    a whole second, so the named second itself is still valid."""
    stamp = expiry_timestamp(value)
    if stamp is None:
        return True
    moment = now or datetime.datetime.now(datetime.timezone.utc)
    return stamp < math.floor(moment.timestamp())
