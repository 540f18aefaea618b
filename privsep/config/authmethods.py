"""AuthenticationMethods: the lists of methods a login must complete.  Pure.

sshd_config's ``AuthenticationMethods publickey,password publickey,keyboard-interactive``
names one or more comma-lists; a login succeeds once every method of one
list has succeeded, in order.  This module holds what OpenSSH's auth2.c does
with those lists: checking a list when the configuration is read (with the
methods' names, then with the methods enabled), which methods can still be
offered, and crossing a method off every list it starts.  The monitor keeps
one ``MethodLists`` per connection (monitor/policy.py's state); nothing a
child says changes it.

A list element may name a submethod (``keyboard-interactive:pam``): it is
offered as the bare method, and crossed off only by that submethod.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Collection

#: The methods in the order sshd offers them (its authmethods[] table);
#: "none" is never offered.  This daemon implements all but gssapi-with-mic,
#: a known name that is never enabled here.
METHOD_ORDER = ("none", "publickey", "gssapi-with-mic", "password", "keyboard-interactive",
                "hostbased")

#: The pseudo-method that turns the lists off.
ANY = "any"


def _split_element(element: str) -> tuple[str, str | None]:
    """"keyboard-interactive:pam" -> ("keyboard-interactive", "pam")."""
    method, colon, submethod = element.partition(":")
    return method, (submethod if colon else None)


def list_error(methods: str, enabled: Collection[str] | None = None) -> str | None:
    """Why the comma-list ``methods`` is unusable, in sshd's words, or None.

    With ``enabled`` given, every method must also be one of them (sshd's
    auth2_methods_valid with need_enable)."""
    if not methods:
        return "empty authentication method list"
    for element in methods.split(","):
        method, _ = _split_element(element)
        if method not in METHOD_ORDER:
            return f'Unknown authentication method "{method}" in list'
        if enabled is not None and method != "none" and method not in enabled:
            return f'Disabled method "{method}" in AuthenticationMethods list "{methods}"'
    return None


def parse(words: list[str]) -> tuple[str, ...]:
    """The AuthenticationMethods value: its lists, or ("any",).  Raises
    ValueError as sshd refuses the line."""
    if not words:
        raise ValueError("no AuthenticationMethods specified")
    if ANY in words and len(words) > 1:
        raise ValueError('"any" must appear alone in AuthenticationMethods')
    for methods in words:
        if methods != ANY:
            reason = list_error(methods)
            if reason:
                raise ValueError(f"{reason}: invalid AuthenticationMethods method list.")
    return tuple(words)


def start_error(configured: tuple[str, ...], enabled: Collection[str]) -> str | None:
    """sshd's check at start: at least one list must use only enabled
    methods.  The error lines and the fatal line, or None."""
    if configured == (ANY,) or not configured:
        return None
    reasons = [list_error(methods, enabled) for methods in configured]
    if all(reasons):
        return "\n".join([*(r for r in reasons if r),
                          "AuthenticationMethods cannot be satisfied by enabled "
                          "authentication methods"])
    return None


class Match(Enum):
    NONE = 0
    METHOD = 1  # the method, with no submethod in the list
    PARTIAL = 2  # the method, the list names a submethod, none was given
    BOTH = 3  # method and submethod


def starts_with(methods: str, method: str, submethod: str | None) -> Match:
    """How the first element of the comma-list ``methods`` matches."""
    first = methods.split(",", 1)[0]
    name, wanted = _split_element(first)
    if name != method:
        return Match.NONE
    if wanted is None:
        return Match.METHOD
    if submethod is None:
        return Match.PARTIAL
    return Match.BOTH if wanted == submethod else Match.NONE


@dataclass
class MethodLists:
    """The lists still to complete for one login (empty: no lists, any one
    method completes the login)."""

    remaining: list[str] = field(default_factory=list)

    @classmethod
    def setup(cls, configured: tuple[str, ...], enabled: Collection[str]
              ) -> tuple["MethodLists", list[str]]:
        """The lists that use only enabled methods, and sshd's log line for
        each one skipped.  Raises ValueError when lists were configured and
        none is left (sshd then ends the connection)."""
        if configured == (ANY,) or not configured:
            return cls(), []
        kept, skipped = [], []
        for methods in configured:
            if list_error(methods, enabled):
                skipped.append(f'Authentication methods list "{methods}" contains disabled '
                               "method, skipping")
            else:
                kept.append(methods)
        if not kept:
            raise ValueError("No AuthenticationMethods left after eliminating disabled methods")
        return cls(kept), skipped

    @property
    def active(self) -> bool:
        return bool(self.remaining)

    def allows(self, method: str) -> bool:
        """May ``method`` be tried now: does it start a list?"""
        return not self.active or any(
            starts_with(m, method, None) is not Match.NONE for m in self.remaining)

    def offered(self, enabled: Collection[str]) -> str:
        """The USERAUTH_FAILURE method list: the enabled methods that can
        start a remaining list, in sshd's order."""
        return ",".join(m for m in METHOD_ORDER
                        if m != "none" and m in enabled and self.allows(m))

    def complete(self, method: str, submethod: str | None) -> bool:
        """Cross ``method`` off the start of every list it starts; True when
        that finished a list (the login is complete).  Raises ValueError if
        no list started with it: the caller checked ``allows`` first."""
        if not self.active:
            return True
        found = False
        for i, methods in enumerate(self.remaining):
            match = starts_with(methods, method, submethod)
            if match not in (Match.METHOD, Match.BOTH):
                continue
            found = True
            rest = methods.split(",", 1)[1] if "," in methods else ""
            if not rest:
                return True
            self.remaining[i] = rest
        if not found:
            raise ValueError(f"method {method} not in AuthenticationMethods")
        return False
