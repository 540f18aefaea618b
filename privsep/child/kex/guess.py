"""Key-exchange guesses, RFC 4253 section 7.1: a client may send its first
key-exchange packet right after its KEXINIT (first_kex_packet_follows),
guessing the algorithms.  The guess is right when both sides' first key
exchange and first host key algorithm are the same (OpenSSH's
proposals_match); a wrong guess's packet is discarded, a right one used.

paramiko reads the flag and ignores it, so it took Dropbear's guessed
curve25519 packet for the real one and died on the next ("Expecting packet
from (21,), got 30").  This mixin, put on every engine, skips exactly one
packet after a wrong guess."""

from __future__ import annotations

import logging

from paramiko.message import Message

log = logging.getLogger("privsep.transport")

#: The message numbers a key exchange method may use that paramiko's run
#: loop hands to the engine (RFC 4250 reserves 30..49 for them).
KEX_METHOD_TYPES = tuple(range(30, 42))


def _first_choices(transport, kexinit: bytes) -> tuple[str, str, bool]:
    """The first key exchange and host key algorithms of a KEXINIT (with its
    message byte), and its first_kex_packet_follows flag."""
    parsed = transport._really_parse_kex_init(Message(kexinit), ignore_first_byte=True)
    kex, hostkey = parsed["kex_algo_list"], parsed["server_key_algo_list"]
    return (kex[0] if kex else "", hostkey[0] if hostkey else "", parsed["kex_follows"])


def wrong_guess(transport) -> bool:
    """Whether the client sent a guessed packet that must be discarded."""
    theirs_kex, theirs_hostkey, follows = _first_choices(transport, transport.remote_kex_init)
    if not follows:
        return False
    ours_kex, ours_hostkey, _ = _first_choices(transport, transport.local_kex_init)
    return (theirs_kex, theirs_hostkey) != (ours_kex, ours_hostkey)


class GuessMixin:
    """On a server engine: after a wrong guess, the next key-exchange packet
    is read and dropped, and the engine then expects its own first packet."""

    _expected_after_guess: tuple[int, ...] | None = None

    def start_kex(self, *args) -> None:
        super().start_kex(*args)  # type: ignore[misc]
        transport = self.transport  # type: ignore[attr-defined]
        if transport.server_mode and wrong_guess(transport):
            log.debug("the client guessed the key exchange wrong: its next key-exchange "
                      "packet is discarded (RFC 4253 7.1)")
            self._expected_after_guess = transport._expected_packet
            transport._expected_packet = KEX_METHOD_TYPES

    def parse_next(self, ptype: int, m: Message):
        if self._expected_after_guess is not None:
            self.transport._expect_packet(*self._expected_after_guess)  # type: ignore[attr-defined]
            self._expected_after_guess = None
            log.debug("discarded the guessed key-exchange packet (type %d)", ptype)
            return None
        return super().parse_next(ptype, m)  # type: ignore[misc]


def with_guesses(engine: type) -> type:
    """``engine`` with guess handling, under the same class name."""
    return type(engine.__name__, (GuessMixin, engine), {"__doc__": engine.__doc__})
