"""What install.sh leaves on this machine (the test command ran it): every
console script on PATH, where the README says to type them, for root and
for an ordinary user alike (issue 16.1)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/opt/privsep-sshd/bin/python"),
                                reason="install.sh has not run here")

#: Debian's default PATH for an ordinary user's login, and root's
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.mark.parametrize("command, path", [
    ("privsep-sshd", ROOT_PATH), ("privsep-tree", ROOT_PATH), ("privsep-tree", USER_PATH),
])
def test_console_scripts_on_path(command: str, path: str) -> None:
    found = shutil.which(command, path=path)
    assert found is not None, f"{command} not on {path}"
    assert os.path.realpath(found) == f"/opt/privsep-sshd/bin/{command}"


def test_privsep_tree_runs_for_an_ordinary_user() -> None:
    result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                             "env", "-i", f"PATH={USER_PATH}", "privsep-tree", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--pidfile" in result.stdout
