"""fail2ban's stock sshd filter, given our tag by the shipped jail, counts every
failed login of a scripted burst and no successful one (fail2ban-regex)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon import ssh, ssh_argv

JAIL = Path(__file__).resolve().parent.parent / "privsep" / "fail2ban-jail.conf"

pytestmark = pytest.mark.skipif(shutil.which("fail2ban-regex") is None,
                                reason="fail2ban is not installed (install.sh --test installs it)")


def test_jail_filter_counts_every_failure(server_with, make_user, tmp_path) -> None:
    jail = configparser.ConfigParser(interpolation=None)
    jail.read(JAIL)
    filter_spec = jail["privsep-sshd"]["filter"]
    assert filter_spec == "sshd[_daemon=privsep-sshd]"

    user = make_user(prefix="pfb")
    server = server_with("KbdInteractiveAuthentication yes")
    # The burst: two wrong passwords, an unknown user, a wrong
    # keyboard-interactive answer, then one good login.
    for _ in range(2):
        assert ssh(server, user, "true", password="wrong-one").returncode == 255
    ghost = type(user)(**{**user.__dict__, "name": "nosuchuser77"})
    assert ssh(server, ghost, "true", password="whatever").returncode == 255
    argv, env = ssh_argv(server, user, "true", password="wrong-kbd")
    argv = [a.replace("PreferredAuthentications=password",
                      "PreferredAuthentications=keyboard-interactive") for a in argv]
    assert subprocess.run(argv, env=env, capture_output=True, timeout=60).returncode == 255
    assert ssh(server, user, "true").returncode == 0
    text = server.wait_for_log(f"Accepted publickey for {user.name}")

    # The daemon's own lines, in syslog's file layout (as rsyslog writes them).
    log = tmp_path / "auth.log"
    lines = [f"Nov 21 06:00:00 privsep-sshd[4242]: {line}"
             for line in text.splitlines() if line]
    log.write_text("\n".join(lines) + "\n")
    failures = [l for l in lines if re.search(r": (Failed \S+ for|Invalid user) ", l)]
    assert len(failures) == 2 + 2 + 1  # 2 passwords, invalid user (2 lines), kbd-int

    result = subprocess.run(["fail2ban-regex", "--print-all-matched", str(log), filter_spec],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("Matched line(s):", 1)[1].split("`-", 1)[0]
    matched = re.findall(r"^\|\s+(Nov 21 .*)$", section, re.M)
    # every failure is matched
    for line in failures:
        assert line in matched, line
    # and nothing else, the successful login above all
    assert [m for m in matched if m not in failures] == []
    assert any("Accepted publickey" in line for line in lines)
