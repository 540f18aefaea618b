"""What install.sh leaves on this machine (the test command ran it): every
console script on PATH, where the README says to type them, for root and
for an ordinary user alike; and what an ordinary user gets from the
README's two commands in a clean clone: a clear refusal that changes
nothing (issue 16.1). tests/test_vm.py runs the same two commands as root
from a clean clone in each release's VM."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
installed = pytest.mark.skipif(not os.path.exists("/opt/privsep-sshd/bin/python"),
                               reason="install.sh has not run here")

#: Debian's default PATH for an ordinary user's login, and root's
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@installed
@pytest.mark.parametrize("command, path", [
    ("privsep-sshd", ROOT_PATH), ("privsep-tree", ROOT_PATH), ("privsep-tree", USER_PATH),
])
def test_console_scripts_on_path(command: str, path: str) -> None:
    found = shutil.which(command, path=path)
    assert found is not None, f"{command} not on {path}"
    assert os.path.realpath(found) == f"/opt/privsep-sshd/bin/{command}"


@installed
def test_privsep_tree_runs_for_an_ordinary_user() -> None:
    result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                             "env", "-i", f"PATH={USER_PATH}", "privsep-tree", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--pidfile" in result.stdout


@pytest.fixture
def clean_clone():
    """A git clone of this checkout's commit, readable by everyone (pytest's
    tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="privsep-clone-"))
    try:
        os.chmod(top, 0o755)
        subprocess.run(["git", "clone", "-q", str(REPO), str(top / "clone")], check=True,
                       capture_output=True)
        subprocess.run(["chmod", "-R", "a+rX", str(top)], check=True)
        yield top / "clone"
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("target", ["run", "test"])
def test_readme_commands_refused_for_an_ordinary_user(clean_clone: Path, target: str) -> None:
    """`make run` and `make test` word for word, by an ordinary user, in a
    clean clone: install.sh says it must be run as root, before it looks at
    anything, and make fails with it."""
    argv = ["make", target]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", "-i",
                f"PATH={USER_PATH}", "HOME=/nonexistent", *argv]
    done = subprocess.run(argv, cwd=clean_clone, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done  # make's status for a failed recipe
    errors = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
    assert errors == ["install.sh: error: must be run as root (it installs system-wide: "
                      "run make as root, e.g. with sudo)"], done.stderr
    # The one line make echoed (the recipe) and nothing from install.sh.
    assert done.stdout.splitlines() == [f"{clean_clone}/install.sh"
                                        + (" --test" if target == "test" else "")], done.stdout
    status = subprocess.run(["git", "-C", str(clean_clone), "status", "--porcelain", "--ignored"],
                            capture_output=True, text=True, check=True)
    assert status.stdout == ""
