"""The Vagrantfile is valid for Debian's vagrant (with its libvirt provider,
both installed by install.sh --test). Booting it needs a hypervisor and the
debian/bookworm64 box from Vagrant Cloud, which CI has not: tests/test_vm.py
boots the same install in a qemu VM instead."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.vm import REPO


def test_vagrant_validate(tmp_path) -> None:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (install.sh --test installs it)")
    # Its state (.vagrant/, ~/.vagrant.d) goes to a scratch directory, not
    # into the checkout.
    env = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
               VAGRANT_HOME=str(tmp_path / "home"), VAGRANT_CHECKPOINT_DISABLE="1")
    done = subprocess.run(["vagrant", "validate"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout
