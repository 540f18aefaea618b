"""A real Debian 12 VM with systemd as PID 1, for tests/test_vm.py.

``image()`` builds a bootable root file system with debootstrap and
``mkfs.ext4 -d`` (no loop devices, no partition table) and caches it under
/var/cache/privsep-sshd-vm/<hash of the recipe>/, with the image's own kernel
and initrd next to it and a root ssh key whose public half is in the image.
The recipe is this file's build constants plus install.sh's package list, so
the guest already has every Debian package install.sh wants (the guest can
reach Debian's mirror and PyPI through qemu's user-mode NAT, but it runs
about 17 times slower than the host under TCG: what can be done once on the
host is done once on the host).

``VM`` boots a throwaway copy-on-write overlay of that image with
``qemu-system-x86_64 -accel tcg`` and user-mode networking that forwards two
loopback ports of the host to the guest's 22 (Debian's sshd, used to run
commands as root and as the reference) and 2222 (privsep-sshd).
``push_checkout()`` copies the checkout's files and a wheelhouse of the
pinned Python dependencies (built on the host with pip) into the guest, so
that install.sh runs there exactly as on any machine, with pip pointed at
the wheelhouse (``install.sh --wheels DIR``).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PRIVSEP_VM_CACHE", "/var/cache/privsep-sshd-vm"))
MIRROR = os.environ.get("PRIVSEP_VM_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
IMAGE_SIZE = "4G"

#: Debian packages the guest needs besides install.sh's own list.
GUEST_PACKAGES = [
    "systemd-sysv", "udev", "dbus", "libpam-systemd",  # systemd as PID 1, logind
    "linux-image-amd64", "initramfs-tools",             # its own kernel and initrd
    "openssh-server", "openssh-client",                  # the reference sshd, root's way in
    "iproute2", "less", "sudo",                         # the README's commands
]

#: Files written into the tree after debootstrap (path -> content).
GUEST_FILES = {
    "etc/hostname": "privsep-vm\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 privsep-vm\n",
    "etc/fstab": "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
    "etc/systemd/network/10-wired.network":
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
    # Nothing in the guest competes with the test for its slow CPU.
    "etc/ssh/sshd_config.d/vm.conf": "UseDNS no\nPermitRootLogin prohibit-password\n",
}

#: Commands run in the tree (chroot) after the files are written.
GUEST_SETUP = [
    "systemctl enable systemd-networkd.service",
    "systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer "
    "e2scrub_all.timer fstrim.timer systemd-networkd-wait-online.service",
    "passwd -l root",
]

KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"


def install_sh_packages() -> list[str]:
    """The PACKAGES=( ... ) array of install.sh, comments stripped."""
    text = (REPO / "install.sh").read_text()
    block = re.search(r"^PACKAGES=\((.*?)^\)", text, re.S | re.M)
    if not block:
        raise RuntimeError("install.sh has no PACKAGES=( ... ) array")
    words = []
    for line in block.group(1).splitlines():
        words += line.split("#", 1)[0].split()
    return words


def recipe() -> str:
    packages = sorted(set(GUEST_PACKAGES + install_sh_packages()))
    return repr((SUITE, MIRROR, IMAGE_SIZE, packages, sorted(GUEST_FILES.items()),
                 GUEST_SETUP, KERNEL_CMDLINE, 1))


@dataclass(frozen=True)
class Image:
    root: Path           # cache directory
    rootfs: Path         # raw ext4 image (never written to: overlays are)
    kernel: Path
    initrd: Path
    key: Path            # root's ssh private key

    @property
    def cmdline(self) -> str:
        return KERNEL_CMDLINE


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kwargs)


def image(log=print) -> Image:
    """The cached image for the current recipe, built first if missing."""
    digest = hashlib.sha256(recipe().encode()).hexdigest()[:16]
    target = CACHE / f"bookworm-{digest}"
    CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(CACHE, 0o700)
    result = Image(target, target / "rootfs.ext4", target / "vmlinuz",
                   target / "initrd.img", target / "id_ed25519")
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per machine
        if (target / "done").exists():
            return result
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
        try:
            _build(work, log)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(work, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        (target / "recipe").write_text(recipe() + "\n")
        (target / "done").write_text(f"{time.monotonic() - started:.0f} s\n")
        log(f"vm: built {target} in {time.monotonic() - started:.0f} s")
        # Older recipes' images are no use any more.
        for old in CACHE.glob("bookworm-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
    return result


def _build(work: Path, log) -> None:
    tree = work / "tree"
    packages = sorted(set(GUEST_PACKAGES + install_sh_packages()))
    log(f"vm: debootstrap {SUITE} into {tree}")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
          SUITE, str(tree), MIRROR], stdout=subprocess.DEVNULL)
    for rel, content in GUEST_FILES.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for command in GUEST_SETUP:
        _run(["chroot", str(tree), "sh", "-c", command], stdout=subprocess.DEVNULL,
             stderr=subprocess.DEVNULL)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "privsep-vm-root",
          "-f", str(work / "id_ed25519")])
    ssh_dir = tree / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(work / "id_ed25519.pub", ssh_dir / "authorized_keys")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # The image's own kernel and initrd, booted directly by qemu.
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise RuntimeError("debootstrap left no kernel or initrd in /boot")
    shutil.copy(kernels[-1], work / "vmlinuz")
    shutil.copy(initrds[-1], work / "initrd.img")
    # Without apt's downloaded .debs the image is much smaller.
    for deb in (tree / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    log("vm: mkfs.ext4 -d")
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree),
          str(work / "rootfs.ext4"), IMAGE_SIZE])
    shutil.rmtree(tree)


def _die_with_parent() -> None:
    """In qemu's child before exec: no VM outlives a killed test run."""
    import prctl  # python-prctl, one of the daemon's own dependencies
    prctl.set_pdeathsig(signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> "Result":
        if self.returncode != 0:
            raise AssertionError(f"exit {self.returncode}\nstdout:\n{self.stdout}\n"
                                 f"stderr:\n{self.stderr}")
        return self


@dataclass
class VM:
    image: Image
    workdir: Path
    ssh_port: int = field(default_factory=free_port)     # guest 22
    privsep_port: int = field(default_factory=free_port)  # guest 2222
    process: subprocess.Popen | None = None

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    def boot(self, timeout: float = 600) -> "VM":
        overlay = self.workdir / "overlay.qcow2"
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
              "-b", str(self.image.rootfs), str(overlay)])
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35",
            "-smp", str(min(2, os.cpu_count() or 1)), "-m", "2048",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", self.image.cmdline,
            "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,"
                       f"hostfwd=tcp:127.0.0.1:{self.privsep_port}-:2222",
            "-device", "virtio-net-pci,netdev=net0,romfile=",
            "-display", "none", "-serial", f"file:{self.console_log}",
            "-monitor", "none", "-no-reboot",
        ]
        with open(self.workdir / "qemu.log", "wb") as qemu_log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qemu_log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"qemu exited: {(self.workdir / 'qemu.log').read_text()}")
            probe = self.ssh("true", timeout=60, connect_timeout=10)
            if probe.returncode == 0:
                return self
            time.sleep(2)
        raise RuntimeError(f"the VM did not answer ssh in {timeout} s; console:\n"
                           f"{self.console_tail()}")

    def console_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def ssh_argv(self, user: str = "root", key: Path | None = None, port: int | None = None,
                 tty: bool = False, connect_timeout: int = 30,
                 options: list[str] | None = None) -> list[str]:
        """The real ssh client's argv; ``options`` come first, so they win."""
        argv = ["ssh", "-F", "/dev/null", "-p", str(port or self.ssh_port)]
        for option in options or []:
            argv += ["-o", option]
        argv += ["-i", str(key or self.image.key), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ServerAliveInterval=30"]
        argv.append("-tt" if tty else "-T")
        argv.append(f"{user}@127.0.0.1")
        return argv

    def ssh(self, command: str, user: str = "root", input: bytes | str | None = None,
            timeout: float = 300, **kwargs) -> Result:
        """Run ``command`` (a shell line) in the guest; never raises on failure."""
        data = input.encode() if isinstance(input, str) else (input or b"")
        try:
            done = subprocess.run([*self.ssh_argv(user, **kwargs), command], input=data,
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return Result(124, (exc.stdout or b"").decode(errors="replace"),
                          f"timed out after {timeout} s")
        return Result(done.returncode, done.stdout.decode(errors="replace"),
                      done.stderr.decode(errors="replace"))

    def root(self, command: str, **kwargs) -> str:
        """Run as root; its stdout, or AssertionError with its output."""
        return self.ssh(command, **kwargs).check().stdout

    def push_tar(self, data: bytes, dest: str) -> None:
        self.root(f"rm -rf {dest} && mkdir -p {dest} && tar -x -C {dest}", input=data)

    def push_checkout(self, dest: str = "/root/privsep-sshd",
                      wheels_dest: str = "/root/wheels") -> None:
        self.push_tar(checkout_tar(), dest)
        with tempfile.TemporaryDirectory(prefix="wheels-") as tmp:
            build_wheelhouse(Path(tmp))
            self.push_tar(tar_directory(Path(tmp)), wheels_dest)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.ssh("systemctl poweroff", timeout=20)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def checkout_files() -> list[str]:
    """The checkout's files: git's tracked and untracked-but-not-ignored
    files when it is a git work tree (a clean clone gives exactly the
    commit), else everything but .git and caches."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached",
                              "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts]
    return sorted(n for n in set(names) if (REPO / n).is_file())


def checkout_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in checkout_files():
            tar.add(REPO / name, arcname=name, recursive=False)
    return buf.getvalue()


def tar_directory(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for item in sorted(path.iterdir()):
            tar.add(item, arcname=item.name)
    return buf.getvalue()


def pinned_requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """pyproject's dependencies, build requirements and wheel: what
    install.sh asks pip for."""
    import tomllib
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = list(data["project"].get("dependencies", []))
    for extra in extras:
        wanted += data["project"].get("optional-dependencies", {}).get(extra, [])
    return wanted + data.get("build-system", {}).get("requires", []) + ["wheel"]


def build_wheelhouse(dest: Path) -> None:
    """Wheels for every pinned requirement and their dependencies (at the
    versions of constraints.txt, which install.sh holds the guest to), built
    on the host with this Python's pip (Debian's Python 3.11, as in the guest)."""
    env = dict(os.environ)
    if not env.get("PIP_CERT") and os.path.exists("/etc/ssl/certs/ca-certificates.crt"):
        env["PIP_CERT"] = "/etc/ssl/certs/ca-certificates.crt"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q",
                           "--disable-pip-version-check", "--use-pep517", "-w", str(dest),
                           "-c", str(REPO / "constraints.txt"), *pinned_requirements()],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{done.stdout}{done.stderr}")


def vagrantfile_demo_user_script() -> str:
    """The Vagrantfile's DEMO_USER_SCRIPT, the inline script of its demo-user
    provisioner: its ``<<~'SHELL'`` heredoc, whose common indentation Ruby
    strips as textwrap.dedent does (tests/test_vagrantfile.py checks that
    Ruby reads the same text)."""
    text = (REPO / "Vagrantfile").read_text()
    block = re.search(r"^DEMO_USER_SCRIPT = <<~'SHELL'\n(.*?)^SHELL$", text, re.S | re.M)
    if not block:
        raise RuntimeError("the Vagrantfile has no DEMO_USER_SCRIPT = <<~'SHELL' heredoc")
    return textwrap.dedent(block.group(1))
