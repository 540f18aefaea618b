"""PerSourcePenalties and PerSourcePenaltyExemptList, OpenSSH 10's keywords
(9.8 and later): their parsers, defaults and ``-T`` lines.  Pure.

They take effect in ProcessGeneration 10 only, as sshd 9.2 has neither
keyword.  Generation 9 still reads and checks them (one sshd_config can then
switch generation with one line), prints neither in ``-T`` (which stays sshd
9.2's) and says at start that they are unused (``unused_lines``).

sshd 10 reads PerSourcePenalties field by field, each first-wins across
lines: ``ServerOptions.per_source_penalties`` is a ``PenaltySpec`` that the
keyword table accumulates (``multi``) and ``PenaltySpec.resolve`` turns
into the ``PenaltyConfig`` the listener uses (servconf.c, sPerSourcePenalties).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from privsep.config.match import addr_match_list
from privsep.config.values import ExtraArguments, SshdError, parse_time

KEYWORD = "PerSourcePenalties"
_INT_MAX = 2**31 - 1

#: the duration fields, by the prefix that sets them
DURATIONS = {"crash:": "crash", "authfail:": "authfail", "noauth:": "noauth",
             "grace-exceeded:": "grace_exceeded", "refuseconnection:": "refuseconnection",
             "max:": "max", "min:": "min"}
#: the number fields (strtonum, not a time)
COUNTS = {"max-sources4:": "max_sources4", "max-sources6:": "max_sources6"}
#: the exact words that set an overflow mode
OVERFLOWS = {"overflow:deny-all": ("overflow", "deny-all"),
             "overflow:permissive": ("overflow", "permissive"),
             "overflow6:deny-all": ("overflow6", "deny-all"),
             "overflow6:permissive": ("overflow6", "permissive")}


@dataclass(frozen=True)
class PenaltyConfig:
    """The settings in effect, with sshd 10.0's defaults (servconf.c,
    fill_default_server_options); durations in seconds."""

    enabled: bool = True
    crash: int = 90
    authfail: int = 5
    noauth: int = 1
    grace_exceeded: int = 10
    refuseconnection: int = 10
    max: int = 600
    min: int = 15
    max_sources4: int = 65536
    max_sources6: int = 65536
    overflow: str = "permissive"
    #: None: the same as ``overflow``
    overflow6: str | None = None

    def overflow_for(self, version: int) -> str:
        return self.overflow if version == 4 else (self.overflow6 or self.overflow)

    def max_sources(self, version: int) -> int:
        return self.max_sources4 if version == 4 else self.max_sources6

    def dump(self) -> str:
        """sshd 10's ``-T`` line after "persourcepenalties "."""
        if not self.enabled:
            return "no"
        return (f"crash:{self.crash} authfail:{self.authfail} noauth:{self.noauth} "
                f"grace-exceeded:{self.grace_exceeded} "
                f"refuseconnection:{self.refuseconnection} max:{self.max} min:{self.min} "
                f"max-sources4:{self.max_sources4} max-sources6:{self.max_sources6} "
                f"overflow:{self.overflow} overflow6:{self.overflow_for(6)}")


@dataclass
class PenaltySpec:
    """What the PerSourcePenalties lines said: each field's first value,
    and the first "yes" or "no".  ``extend`` is how the keyword table adds
    a later line (first value wins per field, as in sshd)."""

    fields: dict[str, object] = field(default_factory=dict)
    #: the first "yes"/"no", or None
    switch: bool | None = None

    def extend(self, other: "PenaltySpec") -> None:
        for name, value in other.fields.items():
            self.fields.setdefault(name, value)
        if self.switch is None:
            self.switch = other.switch

    def resolve(self) -> PenaltyConfig:
        """sshd sets "enabled" from the first yes/no, but any field it sets
        enables penalties, whatever came before or after."""
        enabled = True if self.fields else (True if self.switch is None else self.switch)
        return replace(PenaltyConfig(enabled=enabled), **self.fields)  # type: ignore[arg-type]


def _strtonum(text: str) -> int:
    """atoi_err(): strtonum's complaint ("missing", "invalid", "too small",
    "too large") in sshd's "PerSourcePenalties value X." words."""
    problem = None
    stripped = text.lstrip(" \t\n\v\f\r")
    body = stripped[1:] if stripped[:1] in "+-" else stripped
    if not text:
        problem = "missing"
    elif not body.isdigit() or not body.isascii():
        problem = "invalid"
    elif int(stripped) < 0:
        problem = "too small"
    elif int(stripped) > _INT_MAX:
        problem = "too large"
    if problem is not None:
        raise SshdError(f"{KEYWORD} value {problem}.")
    return int(stripped)


def _duration(text: str) -> int:
    """convtime(): sshd's time format, at most INT_MAX seconds."""
    try:
        value = parse_time(text)
    except ValueError:
        value = -1
    if not 0 <= value <= _INT_MAX:
        raise SshdError(f"invalid {KEYWORD} time value.")
    return value


def _word(arg: str) -> tuple[str, object]:
    """One "name:value" word: (field, value), or sshd's fatal words."""
    for prefix, name in DURATIONS.items():
        if arg.startswith(prefix):  # strncmp: case matters
            return name, _duration(arg[len(prefix):])
    for prefix, name in COUNTS.items():
        if arg.startswith(prefix):
            return name, _strtonum(arg[len(prefix):])
    if arg in OVERFLOWS:
        return OVERFLOWS[arg]
    raise SshdError(f"unsupported {KEYWORD} keyword {arg}")


def parse(words: list[str]) -> PenaltySpec:
    """A PerSourcePenalties line: "yes" or "no" alone (sshd only checks
    that nothing follows it), or name:value words."""
    spec = PenaltySpec()
    for index, arg in enumerate(words):
        if arg.lower() in ("yes", "no"):
            if index + 1 < len(words):
                raise SshdError(f'keyword {KEYWORD} "{arg}" argument must appear alone.')
            if spec.switch is None:
                spec.switch = arg.lower() == "yes"
            continue
        name, value = _word(arg)
        spec.fields.setdefault(name, value)
    return spec


def parse_exempt(words: list[str]) -> str | None:
    """PerSourcePenaltyExemptList: an address list (CIDR or wildcards);
    "none" (any case) is no list."""
    if len(words) > 1:
        raise ExtraArguments()
    text = words[0]
    if not text:
        raise SshdError("missing argument.")
    if addr_match_list(None, text) != 0:
        raise SshdError("keyword PerSourcePenaltyExemptList invalid address argument.")
    return None if text.lower() == "none" else text


#: ServerOptions fields of these keywords, which only generation 10 has
GENERATION_10_ONLY = frozenset(("per_source_penalties", "per_source_penalty_exempt_list"))

#: (keyword, ServerOptions attr, parser, values accumulate) for servconf's table
KEYWORD_ROWS = (
    (KEYWORD, "per_source_penalties", parse, True),
    ("PerSourcePenaltyExemptList", "per_source_penalty_exempt_list", parse_exempt, False),
)


@dataclass
class PenaltyOptions:
    """The ServerOptions fields of these keywords (a base of ServerOptions)."""

    per_source_penalties: PenaltySpec = field(default_factory=lambda: PenaltySpec())
    #: an address list, or None
    per_source_penalty_exempt_list: str | None = None


#: attr -> its ``-T`` lines
DUMP: dict[str, Callable[[object], list[str]]] = {
    "per_source_penalties": lambda spec: [spec.resolve().dump()],  # type: ignore[attr-defined]
    "per_source_penalty_exempt_list": lambda text: [text or "none"],  # type: ignore[list-item]
}


def shown(attr: str, generation: int) -> bool:
    """Whether ``-T`` prints this option in this generation."""
    return attr not in GENERATION_10_ONLY or generation == 10


def unused_lines(settings: list, generation: int) -> list[tuple[str, str]]:
    """(where, keyword) of each line of these keywords that generation 9
    does not use, for the listener's start-up log."""
    if generation == 10:
        return []
    return [(s.where, s.keyword.name) for s in settings
            if s.keyword.attr in GENERATION_10_ONLY]
