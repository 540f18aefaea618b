"""The benchmark suite runs end to end (tests/bench.py): a smoke run with small
counts and sizes. Nothing here looks at speed; the figures are only checked
to be there."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import BENCHMARKS, DAEMONS, FORCED, FORCED_BENCHMARKS
from tests.daemon import REPO, privsep_command


def test_quick_bench_reports_every_benchmark_for_both_daemons(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed (install.sh --test installs it)")
    out = tmp_path / "bench.json"
    # The environment passes through: PRIVSEP_SSHD (and PYTHONPATH) select
    # the same daemon as for the other tests.
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--json", str(out),
         "--login-rounds", "3", "--size", "4M", "--bulk-rounds", "2",
         "--keystrokes", "20", "--sessions", "10", "--many-sessions", "12",
         "--rekey-size", "4M", "--only", ",".join(BENCHMARKS)],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    document = json.loads(out.read_text())
    assert document["environment"]["cpus"] >= 1
    assert document["environment"]["privsep_command"] == " ".join(privsep_command())
    for kind in DAEMONS:
        assert document["environment"]["negotiated"][kind]["cipher"] != "?"
    results = document["benchmarks"]
    assert set(results) == set(BENCHMARKS)
    for kind in DAEMONS:  # the soak reports samples, not a speed
        soak = results.pop("soak")[kind] if kind == DAEMONS[-1] else results["soak"][kind]
        assert soak["failures"] == 0 and soak["logins"] > 0
        assert all(soak[when]["fds"] > 0 and soak[when]["rss_kib"] > 0
                   for when in ("start", "middle", "end"))
    for name, result in results.items():
        for kind in DAEMONS:
            value = result[kind]["value"]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, kind)
        assert math.isfinite(result["ratio"]) and result["ratio"] > 0, name
        assert isinstance(result["ok"], bool) and result["target"], name
        assert name in done.stdout  # a row of the table
    for name in ("concurrency", "sessions1000"):
        for kind in DAEMONS:
            assert results[name][kind]["failures"] == 0, (name, kind, results[name][kind])
            assert results[name][kind]["rss_per_session_mb"] > 0
            by_role = results[name][kind]["pss_per_session_by_role_mb"]
            assert by_role["monitor"] > 0 and by_role["session"] > 0, (name, kind, by_role)
    assert results["sessions1000"]["privsep"]["sessions"] == 12
    for name in ("login", "download", "upload", *FORCED_BENCHMARKS):
        # each row names what both daemons negotiated, as the table does
        algorithms = results[name]["algorithms"]
        for kind in DAEMONS:
            assert all(algorithms[kind][k] != "?" for k in ("kex", "cipher", "mac")), name
            assert f"got: privsep kex {algorithms['privsep']['kex']}" in done.stdout
    for name in ("download", "upload", *(n for n in FORCED_BENCHMARKS if "login" not in n)):
        for kind in DAEMONS:  # the session process was found and measured
            cpu = results[name][kind]["session_cpu_ms_per_mb"]
            assert math.isfinite(cpu) and cpu >= 0, (name, kind, cpu)
    for label, options in FORCED.items():  # the forced algorithms are the ones got
        kex, cipher = (option.split("=", 1)[1] for option in options)
        for which in ("login", "download", "upload"):
            for kind in DAEMONS:
                got = results[f"{which}-{label}"]["algorithms"][kind]
                assert (got["kex"], got["cipher"]) == (kex, cipher), (label, kind, got)
    for kind in DAEMONS:  # every transfer through the rekeys arrived whole
        rekey = results["rekey"][kind]
        assert rekey["mismatches"] == 0 and rekey["failures"] == 0, (kind, rekey)
        assert all(leg["key_exchanges"] > 1 for leg in rekey["legs"].values()), (kind, rekey)


def test_login_phases_reports_every_phase_for_both_daemons() -> None:
    """tests/login_phases.py finds each phase's line in the client's output
    for both daemons (a phase missing would raise) and prints every row."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed (install.sh --test installs it)")
    from tests.login_phases import PHASES
    done = subprocess.run([sys.executable, "-m", "tests.login_phases", "--logins", "1"],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line[:40].strip(): line[40:].split() for line in done.stdout.splitlines()}
    for phase in PHASES:
        side, *cells = rows[phase.name]
        assert side == phase.side and len(cells) == 2, (phase.name, rows[phase.name])
        assert all(float(cell) >= 0 for cell in cells)
    assert all(float(cell) > 0 for cell in rows["total"])
