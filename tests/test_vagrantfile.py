"""The Vagrantfile is valid for Debian's vagrant (with its libvirt provider,
both installed by install.sh --test), for both of its machines: Debian 12
(debian/bookworm64, the default) and Debian 13 (debian/trixie64); `vagrant
validate` checks every machine's configuration. Booting them needs a
hypervisor and the boxes from Vagrant Cloud, which CI has not:
tests/test_vm.py boots the same install of the same two releases in qemu VMs
instead, and runs the Vagrantfile's demo-user script there as tests/vm.py
reads it out of the Vagrantfile."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.vm import REPO, SUITES, vagrantfile_demo_user_script

#: The boxes the Vagrantfile offers, one per release the VM test boots.
BOXES = {"bookworm": "debian/bookworm64", "trixie": "debian/trixie64"}


def vagrant(tmp_path, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (install.sh --test installs it)")
    # Its state (.vagrant/, ~/.vagrant.d) goes to a scratch directory, not
    # into the checkout.
    env = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
               VAGRANT_HOME=str(tmp_path / "home"), VAGRANT_CHECKPOINT_DISABLE="1")
    return subprocess.run(["vagrant", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_vagrant_validate(tmp_path) -> None:
    done = vagrant(tmp_path, "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


def test_both_releases_offered(tmp_path) -> None:
    """`vagrant status` lists a machine per release of the VM test, and
    each uses its release's box (read as Ruby reads the Vagrantfile)."""
    assert set(BOXES) == set(SUITES)
    done = vagrant(tmp_path, "status", "--machine-readable")
    assert done.returncode == 0, done.stdout + done.stderr
    machines = {line.split(",")[1] for line in done.stdout.splitlines()
                if line.split(",")[2:3] == ["state"]}
    assert machines == set(BOXES), done.stdout
    load = ("module Vagrant; def self.configure(*) end; end; load ARGV[0]; "
            "MACHINES.each { |name, (box, *)| puts \"#{name} #{box}\" }")
    boxes = subprocess.run(["ruby", "-e", load, str(REPO / "Vagrantfile")], capture_output=True,
                           text=True, timeout=60)
    assert boxes.returncode == 0, boxes.stderr
    assert dict(line.split() for line in boxes.stdout.splitlines()) == BOXES


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
