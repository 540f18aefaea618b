"""Group exchange through the monitor (MONITOR_REQ_MODULI), with the
hostile net-child harness of tests/test_hostile_child.py: a group of the
size sshd would choose, from /etc/ssh/moduli; sizes out of order or out of
range refused with a log line, the connection dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from privsep.config import moduli
from privsep.wire import messages as wire
from tests.test_hostile_child import (  # noqa: F401  (fixtures)
    NetChild, assert_refused, host_key_path, hostile,
)

DEBIAN_MODULI = Path("/etc/ssh/moduli")


@pytest.mark.skipif(not DEBIAN_MODULI.exists(), reason="no /etc/ssh/moduli")
@pytest.mark.parametrize("after_kex", [False, True], ids=["first-kex", "rekey"])
def test_control_group_from_the_moduli_file(hostile, after_kex):
    with DEBIAN_MODULI.open() as lines:
        listed = {(g.prime, g.generator) for g in moduli.parse(lines)}
    groups = []

    def steps(child: NetChild) -> None:
        if after_kex:
            child.kex()
        for sizes in ((2048, 3072, 8192), (2048, 8192, 8192), (2048, 5000, 8192)):
            answer, _ = child.ch.call(wire.ModuliRequest(*sizes), wire.ModuliAnswer)
            groups.append((int.from_bytes(answer.prime, "big"),
                           int.from_bytes(answer.generator, "big")))

    outcome = hostile(steps)
    assert "fatal" not in outcome.log, str(outcome)
    assert [p.bit_length() for p, _ in groups] == [3072, 8192, 6144]
    assert all(group in listed for group in groups)


@pytest.mark.parametrize("sizes", [(4096, 3072, 2048), (3072, 2048, 8192), (2048, 8192, 4096),
                                   (1024, 1024, 1024), (2048, 4096, 2**40)])
def test_bad_sizes_refused(hostile, sizes):
    def steps(child: NetChild) -> None:
        child.attack(wire.ModuliRequest(*sizes))

    low, want, high = sizes
    assert_refused(hostile(steps), f"ModuliRequest bad parameters: {low} {want} {high}")
