"""Real Debian 12 and 13 VMs with systemd as PID 1, for tests/test_vm.py.

``image(suite)`` builds a bootable root file system of one release
(``SUITES``: bookworm, trixie) with debootstrap and ``mkfs.ext4 -d`` (no
loop devices, no partition table) and caches it under
/var/cache/privsep-sshd-vm/<suite>-<hash of the recipe>/, with the image's
own kernel and initrd next to it, a root ssh key whose public half is in the
image, and a wheelhouse of the pinned Python packages built in the release's
own tree (chroot) by its own Python (3.11 on bookworm, 3.13 on trixie:
compiled wheels of one do not load in the other). The recipe is this file's
build constants plus install.sh's package lists (with --test's) and the
pins, so the guest already has every Debian package `make test` wants (the
guest can reach Debian's mirror and PyPI through qemu's user-mode NAT, but it
runs about 17 times slower than the host under TCG: what can be done once on
the host is done once on the host). For the same reason the image carries
the wheelhouse in /root/wheels and install.sh's venv, /opt/privsep-sshd
with the pinned dependencies, made in the tree as install.sh makes it (a
machine where an older checkout was installed): the guest's install.sh
then reinstalls only the package itself. Its --uninstall removes that venv,
so the clean-clone checks (PRIVSEP_VM_FULL) install from nothing.

``VM`` boots a throwaway copy-on-write overlay of that image with
``qemu-system-x86_64 -accel tcg`` and user-mode networking that forwards two
loopback ports of the host to the guest's 22 (Debian's sshd, used to run
commands as root and as the reference) and 2222 (privsep-sshd), and two
spare ones (SPARE_PORTS) to extra daemon instances a test starts. Root's
commands share one ssh connection (ControlMaster): a connection of its own
costs the TCG guest 6 to 9 s, a shared one under a second.
``push_checkout()`` copies the checkout's files and a git bundle of its
HEAD (for a clean clone in the guest) into the guest, so that install.sh runs there exactly as on any machine, with pip pointed at
the wheelhouse (``install.sh --wheels DIR``, or PIP_NO_INDEX and
PIP_FIND_LINKS in the environment of the README's own commands).
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
import tarfile
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PRIVSEP_VM_CACHE", "/var/cache/privsep-sshd-vm"))
MIRROR = os.environ.get("PRIVSEP_VM_MIRROR", "http://deb.debian.org/debian")
#: The releases the VM test boots, oldest first: Debian 12 and Debian 13.
SUITES = ("bookworm", "trixie")
IMAGE_SIZE = "6G"

#: Debian packages the guest needs besides install.sh's own lists.
GUEST_PACKAGES = [
    "systemd-sysv", "udev", "dbus", "libpam-systemd",  # systemd as PID 1, logind
    "linux-image-amd64", "initramfs-tools",             # its own kernel and initrd
    "openssh-server", "openssh-client",                  # the reference sshd, root's way in
    "iproute2", "less", "sudo",                         # the README's commands
    "make", "git",                                      # a clean clone, the README's make
    "build-essential", "debhelper", "dh-virtualenv",    # make deb (in the tree, chroot)
    # debootstrap does not resolve virtual packages: lintian's perl TLS
    # modules need perl-openssl-abi-3, which this one provides
    "perl-openssl-defaults",
]

#: What a standard install of each release has that the minimal one lacks
#: and the README's commands use: trixie's `last` is wtmpdb's (util-linux
#: dropped it), fed by pam_wtmpdb in common-session. (libre2-11: debootstrap
#: does not resolve virtual packages, and trixie's libgrpc, under vagrant,
#: depends on one that libre2-11 provides.)
SUITE_PACKAGES = {
    "bookworm": [],
    "trixie": ["wtmpdb", "libpam-wtmpdb", "libre2-11"],
}

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
    "e2scrub_all.timer fstrim.timer systemd-networkd-wait-online.service "
    "fail2ban.service",  # installed for `make test`'s fail2ban-regex only
    "passwd -l root",
]

KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"

#: install.sh's venv (its PREFIX), made in the tree with the pinned
#: dependencies (not the test extra: `install.sh --enable` has none).
VENV = "/opt/privsep-sshd"
#: The wheelhouse's place in the guest (install.sh --wheels=GUEST_WHEELS).
GUEST_WHEELS = "/root/wheels"


def install_sh_packages(array: str = "PACKAGES") -> list[str]:
    """An array of install.sh (PACKAGES, TEST_PACKAGES), comments stripped."""
    text = (REPO / "install.sh").read_text()
    block = re.search(rf"^{array}=\((.*?)^\)", text, re.S | re.M)
    if not block:
        raise RuntimeError(f"install.sh has no {array}=( ... ) array")
    words = []
    for line in block.group(1).splitlines():
        words += line.split("#", 1)[0].split()
    return words


def guest_packages(suite: str) -> list[str]:
    return sorted(set(GUEST_PACKAGES + SUITE_PACKAGES[suite] + install_sh_packages()
                      + install_sh_packages("TEST_PACKAGES")))


def recipe(suite: str) -> str:
    return repr((suite, MIRROR, IMAGE_SIZE, guest_packages(suite), sorted(GUEST_FILES.items()),
                 GUEST_SETUP, KERNEL_CMDLINE, pinned_requirements(("test",)),
                 (REPO / "constraints.txt").read_text(), VENV, GUEST_WHEELS, 4))


@dataclass(frozen=True)
class Image:
    root: Path           # cache directory
    rootfs: Path         # raw ext4 image (never written to: overlays are)
    kernel: Path
    initrd: Path
    key: Path            # root's ssh private key
    wheels: Path         # the release's wheelhouse of the pinned packages
    suite: str

    @property
    def tree(self) -> Path:
        """The release's debootstrapped tree the image was made from."""
        return self.root / "tree"

    @property
    def cmdline(self) -> str:
        return KERNEL_CMDLINE


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kwargs)


def image(suite: str, log=print) -> Image:
    """The cached image of ``suite`` for the current recipe, built first if
    missing. Each release has its own cache entry; a new recipe replaces
    only that release's older one."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {SUITES}")
    digest = hashlib.sha256(recipe(suite).encode()).hexdigest()[:16]
    target = CACHE / f"{suite}-{digest}"
    CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(CACHE, 0o700)
    result = Image(target, target / "rootfs.ext4", target / "vmlinuz",
                   target / "initrd.img", target / "id_ed25519", target / "wheels", suite)
    with open(CACHE / f".lock-{suite}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per release
        if (target / "done").exists():
            return result
        started = time.monotonic()
        # A build that failed after debootstrap resumes from its tree.
        work = CACHE / f"build-{suite}-{digest}"
        _build(suite, work, log)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(work, target)
        (target / "recipe").write_text(recipe(suite) + "\n")
        (target / "done").write_text(f"{time.monotonic() - started:.0f} s\n")
        log(f"vm: built {target} in {time.monotonic() - started:.0f} s")
        # This release's older recipes are no use any more.
        for old in CACHE.glob(f"{suite}-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
    return result


def _build(suite: str, work: Path, log) -> None:
    tree = work / "tree"
    if not (work / "debootstrapped").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        _debootstrap(suite, tree, log)
        (work / "debootstrapped").touch()
    _finish(suite, work, tree, log)


def _debootstrap(suite: str, tree: Path, log) -> None:
    log(f"vm: debootstrap {suite} into {tree}")
    # The downloaded .debs are kept per release: a new recipe rebuilds
    # without downloading again what it already had.
    debs = CACHE / f"debs-{suite}"
    debs.mkdir(exist_ok=True)
    done = subprocess.run(["debootstrap", "--variant=minbase",
                           f"--include={','.join(guest_packages(suite))}", f"--cache-dir={debs}",
                           suite, str(tree), MIRROR], capture_output=True, text=True)
    if done.returncode != 0:
        log_file = tree / "debootstrap/debootstrap.log"
        detail = log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""
        shutil.rmtree(tree, ignore_errors=True)
        raise RuntimeError(f"debootstrap {suite} failed:\n{done.stderr[-2000:]}\n{detail}")


def _finish(suite: str, work: Path, tree: Path, log) -> None:
    """The rest of the image after debootstrap: files, set-up, root's key,
    kernel, wheelhouse, mkfs. Each step may run again on a resumed build."""
    for rel, content in GUEST_FILES.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for command in GUEST_SETUP:
        _run(["chroot", str(tree), "sh", "-c", command], stdout=subprocess.DEVNULL,
             stderr=subprocess.DEVNULL)
    for name in ("id_ed25519", "id_ed25519.pub"):
        (work / name).unlink(missing_ok=True)
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
    log(f"vm: wheelhouse with {suite}'s python3 (chroot)")
    _build_wheelhouse_in(tree, work / "wheels")
    guest_wheels = tree / GUEST_WHEELS.lstrip("/")
    shutil.rmtree(guest_wheels, ignore_errors=True)
    shutil.copytree(work / "wheels", guest_wheels)
    log(f"vm: install.sh's venv {VENV} (chroot)")
    _make_venv_in(tree)
    # Without apt's downloaded .debs the image is much smaller.
    for deb in (tree / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    log("vm: mkfs.ext4 -d")
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree),
          str(work / "rootfs.ext4"), IMAGE_SIZE])
    # The tree stays: build_deb() builds this release's .deb in it (chroot).


def build_deb(image: Image, dest: Path) -> Path:
    """``make deb`` for the image's release, at host speed: run in the
    release's own tree (chroot) on a copy of the checkout, with pip held to
    the image's wheelhouse. Returns the .deb, moved into ``dest``.

    A .deb made with dh-virtualenv holds a venv of the building release's
    python3.X (3.11 on bookworm, 3.13 on trixie), so each release gets its
    own build; building in the TCG guest instead would cost minutes."""
    build = image.tree / "tmp/privsep-sshd-deb"
    with open(CACHE / f".lock-{image.suite}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one user of a tree at a time
        shutil.rmtree(build, ignore_errors=True)
        (build / "src").mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(checkout_tar())) as tar:
            tar.extractall(build / "src")
        shutil.copytree(image.wheels, build / "wheels")
        env = {k: v for k, v in os.environ.items() if k.endswith("_proxy")}
        env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", HOME="/root", LC_ALL="C.UTF-8",
                   PIP_NO_INDEX="1", PIP_FIND_LINKS="/tmp/privsep-sshd-deb/wheels")
        try:
            done = subprocess.run(["chroot", str(image.tree), "make", "-C",
                                   "/tmp/privsep-sshd-deb/src", "deb"],
                                  env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"make deb in {image.tree} failed:\n{done.stdout[-4000:]}"
                                   f"{done.stderr[-4000:]}")
            (deb,) = (build / "src/dist").glob("privsep-sshd_*.deb")
            dest.mkdir(parents=True, exist_ok=True)
            return Path(shutil.move(str(deb), dest / deb.name))
        finally:
            shutil.rmtree(build, ignore_errors=True)


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


#: Guest ports forwarded from the host besides 22 and 2222, free for extra
#: daemon instances (connections through them arrive from 10.0.2.2, as
#: through the others).
SPARE_PORTS = (2223, 2224)


@dataclass
class VM:
    image: Image
    workdir: Path
    ssh_port: int = field(default_factory=free_port)     # guest 22
    privsep_port: int = field(default_factory=free_port)  # guest 2222
    #: host port of each spare guest port (SPARE_PORTS), for extra daemon
    #: instances a test starts beside the two services
    spare_ports: dict[int, int] = field(
        default_factory=lambda: {port: free_port() for port in SPARE_PORTS})
    process: subprocess.Popen | None = None
    #: root's one ssh connection that every root command rides on (ssh's
    #: ControlMaster), started once the guest answers
    master: subprocess.Popen | None = None

    @property
    def control_path(self) -> Path:
        return self.workdir / "root.ctl"

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
                       f"hostfwd=tcp:127.0.0.1:{self.privsep_port}-:2222"
                       + "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}"
                                 for guest, host in self.spare_ports.items()),
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
                self._start_master()
                return self
            time.sleep(2)
        raise RuntimeError(f"the VM did not answer ssh in {timeout} s; console:\n"
                           f"{self.console_tail()}")

    def _start_master(self, timeout: float = 120) -> None:
        """Root's commands as sessions of one connection (ssh's connection
        sharing): a fresh connection costs the guest a key exchange, an
        authentication and a PAM session with its motd scripts, 8 s or more
        of TCG time each (measured: 8 to 9 s, against 0.6 to 1 s shared),
        and the tests run hundreds of root commands. Only the harness's own
        commands share it: the logins the tests check (other users, a pty,
        another port or key) each make their own connection. Should the
        master die, ssh falls back to a connection of its own."""
        argv = self.ssh_argv(options=["ControlMaster=yes", f"ControlPath={self.control_path}",
                                      "ControlPersist=no"], shared=False)
        self.master = subprocess.Popen([*argv[:-1], "-N", argv[-1]], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_with_parent)
        check = ["ssh", "-F", "/dev/null", "-o", f"ControlPath={self.control_path}", "-O", "check", "root@127.0.0.1"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.master.poll() is None:
            if subprocess.run(check, capture_output=True).returncode == 0:
                return
            time.sleep(0.5)

    def console_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def ssh_argv(self, user: str = "root", key: Path | None = None, port: int | None = None,
                 tty: bool = False, connect_timeout: int = 30,
                 options: list[str] | None = None, shared: bool = True) -> list[str]:
        """The real ssh client's argv; ``options`` come first, so they win.
        A plain root command (root, its key, Debian's sshd, no pty, no
        options) goes over the master connection while it lives."""
        argv = ["ssh", "-F", "/dev/null", "-p", str(port or self.ssh_port)]
        for option in options or []:
            argv += ["-o", option]
        if (shared and self.master is not None and self.master.poll() is None
                and user == "root" and key is None
                and port in (None, self.ssh_port) and not tty and not options):
            argv += ["-o", "ControlMaster=no", "-o", f"ControlPath={self.control_path}"]
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
                      bundle_dest: str = "/root/privsep-sshd.bundle") -> None:
        """The checkout's files (with uncommitted edits) in ``dest`` and its
        HEAD as a git bundle to clone from, in one ssh command. (The
        wheelhouse is in the image, in GUEST_WHEELS.)"""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.addfile(_tar_member("checkout.tar", len(data := checkout_tar())),
                        io.BytesIO(data))
            tar.addfile(_tar_member("head.bundle", len(bundle := git_bundle())),
                        io.BytesIO(bundle))
        self.root(f"rm -rf {dest} && mkdir -p {dest} && t=$(mktemp -d) && tar -x -C $t && "
                  f"tar -x -C {dest} -f $t/checkout.tar && mv $t/head.bundle {bundle_dest} && "
                  f"rm -rf $t", input=buf.getvalue())

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.ssh("systemctl poweroff", timeout=20)
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        if self.master is not None:
            if self.master.poll() is None:
                self.master.kill()
            self.master.wait()
            self.master = None


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


def git_bundle() -> bytes:
    """The checkout's HEAD (committed work only) as a git bundle: what a
    clean clone in the guest is made from."""
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        path = Path(tmp) / "head.bundle"
        branch = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--abbrev-ref", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        # HEAD too, or the clone has nothing to check out.
        refs = ["HEAD"] + ([branch] if branch != "HEAD" else [])
        _run(["git", "-C", str(REPO), "bundle", "create", "-q", str(path), *refs],
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return path.read_bytes()


def _tar_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o600
    return info


def pinned_requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """pyproject's dependencies, build requirements and wheel: what
    install.sh asks pip for."""
    import tomllib
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = list(data["project"].get("dependencies", []))
    for extra in extras:
        wanted += data["project"].get("optional-dependencies", {}).get(extra, [])
    return wanted + data.get("build-system", {}).get("requires", []) + ["wheel"]


def _build_wheelhouse_in(tree: Path, dest: Path) -> None:
    """Wheels for every pinned requirement (the test extra's too, for `make
    test` in the guest) and their dependencies, at the versions of
    constraints.txt, built in the release's tree by its own python3 and pip
    through chroot (the host's network; the host's CA store, as install.sh
    gives pip)."""
    inside = tree / "tmp/wheelhouse"
    shutil.rmtree(inside, ignore_errors=True)
    inside.mkdir(parents=True)
    shutil.copy(REPO / "constraints.txt", inside / "constraints.txt")
    if os.path.exists("/etc/ssl/certs/ca-certificates.crt"):
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", inside / "ca.crt")
    # The host's resolver for the build, the tree's own back afterwards.
    resolv = tree / "etc/resolv.conf"
    saved = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    if os.path.exists("/etc/resolv.conf"):
        resolv.unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", resolv)
    script = ("set -e; rm -rf /tmp/wheelhouse/venv; python3 -m venv /tmp/wheelhouse/venv; "
              "test ! -e /tmp/wheelhouse/ca.crt || export PIP_CERT=/tmp/wheelhouse/ca.crt; "
              "/tmp/wheelhouse/venv/bin/pip wheel -q --disable-pip-version-check --use-pep517 "
              "-w /tmp/wheelhouse/wheels -c /tmp/wheelhouse/constraints.txt "
              + " ".join(f"'{r}'" for r in pinned_requirements(("test",))))
    # The host's PIP_* name host paths (a find-links directory, a CA file)
    # the tree has not: only the proxy settings go in.
    env = {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}
    env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", HOME="/root", LC_ALL="C.UTF-8")
    done = subprocess.run(["chroot", str(tree), "sh", "-c", script], env=env,
                          capture_output=True, text=True)
    if saved is not None:
        resolv.write_bytes(saved)
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel in the {tree} chroot failed:\n{done.stdout}{done.stderr}")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.move(str(inside / "wheels"), dest)
    shutil.rmtree(inside)


def _make_venv_in(tree: Path) -> None:
    """install.sh's venv with the pinned dependencies, made in the release's
    tree by its python3 from the wheelhouse, with the commands install.sh
    runs (make_venv, install_python_deps): the guest's install.sh finds
    every pin present and installs only the package."""
    shutil.rmtree(tree / VENV.lstrip("/"), ignore_errors=True)
    shutil.copy(REPO / "constraints.txt", tree / "tmp/constraints.txt")
    script = (f"set -e; /usr/bin/python3 -m venv {VENV}; "
              f"{VENV}/bin/python -m pip install -q --disable-pip-version-check --no-index "
              f"--find-links {GUEST_WHEELS} -c /tmp/constraints.txt --use-pep517 "
              + " ".join(f"'{r}'" for r in pinned_requirements()))
    env = dict(PATH="/usr/sbin:/usr/bin:/sbin:/bin", HOME="/root", LC_ALL="C.UTF-8")
    done = subprocess.run(["chroot", str(tree), "sh", "-c", script], env=env,
                          capture_output=True, text=True)
    (tree / "tmp/constraints.txt").unlink()
    if done.returncode != 0:
        raise RuntimeError(f"the venv in the {tree} chroot failed:\n{done.stdout}{done.stderr}")


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
