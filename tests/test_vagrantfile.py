"""The Vagrantfile is valid for Debian's vagrant (with its libvirt provider,
both installed by install.sh --test). Booting it needs a hypervisor and the
debian/bookworm64 box from Vagrant Cloud, which CI has not: tests/test_vm.py
boots the same install in a qemu VM instead, and runs the Vagrantfile's
demo-user script there as tests/vm.py reads it out of the Vagrantfile."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.vm import REPO, vagrantfile_demo_user_script


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


def test_demo_user_script_reads_as_ruby_reads_it() -> None:
    """The demo-user script tests/test_vm.py runs is the text Ruby (and so
    Vagrant) takes from the Vagrantfile's heredoc, and is valid sh."""
    script = vagrantfile_demo_user_script()
    assert script.startswith("#!/bin/sh\n") and "useradd" in script and "chpasswd" in script
    syntax = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (vagrant brings it)")
    # The Vagrantfile, loaded with a stand-in for Vagrant.configure.
    load = "module Vagrant; def self.configure(*) end; end; load ARGV[0]; $stdout.write(DEMO_USER_SCRIPT)"
    done = subprocess.run(["ruby", "-e", load, str(REPO / "Vagrantfile")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == script
