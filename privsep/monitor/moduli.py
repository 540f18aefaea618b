"""Group exchange, root side: the monitor reads ModuliFile and chooses a
group for the child (OpenSSH's mm_answer_moduli and choose_dh).  Parsing and
the choice itself are pure (privsep/config/moduli.py)."""

from __future__ import annotations

import logging
import secrets

from privsep.config import moduli

log = logging.getLogger("privsep.monitor")


def choose_moduli(path: str, min_bits: int, want_bits: int, max_bits: int) -> moduli.Modulus:
    """A group from ``path`` of the size sshd would pick, chosen at random
    among those of that size; a fixed group, as sshd, when the file cannot be
    read or has none that fits."""
    try:
        with open(path, encoding="ascii", errors="replace") as lines:
            errors: list[str] = []
            groups = moduli.parse(lines, errors)
    except OSError as exc:
        log.info("WARNING: could not open %s (%s), using fixed modulus", path, exc.strerror)
        return moduli.fallback(max_bits)
    for text in errors:
        log.error("%s", text)
    group = moduli.choose(groups, min_bits, want_bits, max_bits, secrets.randbelow)
    if group is None:
        log.info("WARNING: no suitable primes in %s", path)
        return moduli.fallback(max_bits)
    log.debug("moduli: chose a %d-bit group for %d <= %d <= %d", group.bits, min_bits,
              want_bits, max_bits)
    return group


def int_bytes(value: int) -> bytes:
    """An unsigned integer, big-endian, in as few bytes as it needs."""
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
