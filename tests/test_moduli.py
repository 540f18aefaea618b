"""The moduli file and sshd's choice from it, pure (privsep/config/moduli.py),
against Debian's /etc/ssh/moduli and hand-made lines; no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from privsep.config import moduli
from privsep.config.moduli import Modulus

DEBIAN_MODULI = Path("/etc/ssh/moduli")
#: A real 2048-bit safe prime with generator 2 (RFC 3526 group 14): the file
#: lists the size of (p-1)/2, 2047.
P14 = format(moduli.GROUP14_P, "X")
GOOD = f"20230101000000 2 6 100 2047 2 {P14}"


def test_good_line():
    assert moduli.parse_line(GOOD, 1) == Modulus(2048, 2, moduli.GROUP14_P)


@pytest.mark.parametrize("line", ["", "   ", "# comment", "  # indented comment"])
def test_blank_and_comment_lines(line):
    assert moduli.parse_line(line, 1) is None


@pytest.mark.parametrize("line, words", [
    (f"20230101000000 5 6 100 2047 2 {P14}", "moduli:7: type is not 2"),
    (f"20230101000000 2 7 100 2047 2 {P14}", "moduli:7: invalid moduli tests flag"),
    (f"20230101000000 2 0 100 2047 2 {P14}", "moduli:7: invalid moduli tests flag"),
    (f"20230101000000 2 6 0 2047 2 {P14}", "moduli:7: invalid primality trial count"),
    (f"20230101000000 2 6 100 0 2 {P14}", "moduli:7: invalid prime length"),
    (f"20230101000000 2 6 100 3071 2 {P14}",
     "moduli:7: prime has wrong size: actual 2048 listed 3071"),
    (f"20230101000000 2 6 100 2047 1 {P14}", "moduli:7: generator is invalid"),
    (f"20230101000000 2 6 100 2047 zz {P14}", "moduli:7: could not parse generator value"),
    ("20230101000000 2 6 100 2047 2 XYZ", "moduli:7: could not parse prime value"),
    ("20230101000000 2 6 100 2047 2", "moduli:7: truncated"),
    (f"{GOOD} trailing", "moduli:7: truncated"),
])
def test_bad_lines_refused_in_sshds_words(line, words):
    with pytest.raises(moduli.ModuliLineError) as caught:
        moduli.parse_line(line, 7)
    assert str(caught.value) == words
    errors: list[str] = []
    assert moduli.parse(["# header", line, GOOD], errors) == [Modulus(2048, 2, moduli.GROUP14_P)]
    assert errors == [words.replace("moduli:7:", "moduli:2:")]


def _sizes(*bits: int) -> list[Modulus]:
    return [Modulus(b, 2, i) for i, b in enumerate(bits)]


@pytest.mark.parametrize("low, want, high, best", [
    (2048, 3072, 8192, 3072),   # the size asked for
    (2048, 5000, 8192, 6144),   # else the smallest above it
    (2048, 8192, 8192, 8192),
    (2048, 8192, 7000, 6144),   # nothing above within max: the largest below
    (4096, 4096, 4096, 4096),
    (2048, 2048, 2048, None),   # no 2048 in this file
])
def test_best_size_as_choose_dh(low, want, high, best):
    assert moduli.best_size(_sizes(3072, 4096, 6144, 8192, 3072), low, want, high) == best


def test_choose_picks_among_the_best_size_only():
    groups = _sizes(3072, 4096, 3072, 8192, 3072)
    seen = {moduli.choose(groups, 2048, 3072, 8192, lambda n: i).prime for i in range(3)}
    assert seen == {0, 2, 4}
    assert moduli.choose(groups, 2048, 2048, 2048, lambda n: 0) is None


@pytest.mark.parametrize("high, bits", [(2048, 2048), (3071, 2048), (3072, 4096), (6143, 4096),
                                        (6144, 8192), (8192, 8192)])
def test_fallback_as_sshd(high, bits):
    group = moduli.fallback(high)
    assert group.bits == bits == group.prime.bit_length() and group.generator == 2


@pytest.mark.skipif(not DEBIAN_MODULI.exists(), reason="no /etc/ssh/moduli")
def test_debians_file_parses_whole():
    errors: list[str] = []
    with DEBIAN_MODULI.open() as lines:
        groups = moduli.parse(lines, errors)
    assert errors == []
    assert len(groups) > 100
    assert {g.bits for g in groups} >= {3072, 4096, 8192}
    assert all(g.prime.bit_length() == g.bits and g.generator > 1 for g in groups)


def test_fixed_groups_have_their_sizes():
    assert [p.bit_length() for p in (moduli.GROUP1_P, moduli.GROUP14_P, moduli.GROUP16_P,
                                     moduli.GROUP18_P)] == [1024, 2048, 4096, 8192]
