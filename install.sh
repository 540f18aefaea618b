#!/usr/bin/env bash
# install.sh - the one way privsep-sshd is installed on a Debian 12 machine.
#
#   ./install.sh              install (or bring up to date) from this checkout
#   ./install.sh --test       the same, plus the test dependencies (pytest)
#   ./install.sh --enable     the same, and enable and start the systemd unit
#   ./install.sh --wheels=DIR the same, with Python packages from the wheels
#                             in DIR only (no index: an offline machine, the VM)
#   ./install.sh --uninstall  remove everything install.sh added (but not the
#                             Debian packages, and not utmp/wtmp/lastlog)
#
# Run as root. It is idempotent: each step checks first and changes only what
# is missing or different, printing one line per change. The only thing done
# on every run is reinstalling the privsep-sshd package itself from this
# checkout, so that what is installed (and tested) is always this checkout's
# code.
#
# What it installs:
#   Debian packages      see PACKAGES below
#   /opt/privsep-sshd    a venv of Debian's /usr/bin/python3 with the pinned
#                        dependencies from pyproject.toml, theirs at the
#                        versions in constraints.txt, and this checkout
#   /usr/local/sbin/privsep-sshd -> /opt/privsep-sshd/bin/privsep-sshd
#   /usr/local/bin/privsep-tree  -> /opt/privsep-sshd/bin/privsep-tree
#   user privsep-sshd    system user (group nogroup, no home, no shell) that
#                        the pre-authentication net-child runs as
#   /run/privsep-sshd    its empty chroot directory, root:root 0755
#   /etc/privsep-sshd/   sshd_config (from privsep/sshd_config, never
#                        overwritten once edited); host keys are made there
#                        by the daemon on its first start
#   /etc/pam.d/privsep-sshd   from pam.d/privsep-sshd
#   /run/utmp, /var/log/wtmp, /var/log/lastlog   when missing
#   /etc/systemd/system/privsep-sshd.service  from systemd/, when the checkout
#                        has it and systemd is running
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=/opt/privsep-sshd
VENV_PY=$PREFIX/bin/python
LINK=/usr/local/sbin/privsep-sshd
# Every console script on PATH: the daemon where sshd is, the tool for everyone.
LINKS=("$LINK" /usr/local/bin/privsep-tree)
ETC=/etc/privsep-sshd
CONFIG=$ETC/sshd_config
# The shipped default config as last installed: tells an admin's edit apart
# from an older default, which may then be replaced by the new one.
CONFIG_DIST=$PREFIX/share/privsep-sshd/sshd_config.dist
PAM_FILE=/etc/pam.d/privsep-sshd
JAIL_FILE=/etc/fail2ban/jail.d/privsep-sshd.conf
PRIVSEP_USER=privsep-sshd
PRIVSEP_GROUP=nogroup
CHROOT=/run/privsep-sshd
PIDFILE=/run/privsep-sshd.pid
UNIT=privsep-sshd.service
UNIT_SRC=$SRC/systemd/$UNIT
UNIT_DST=/etc/systemd/system/$UNIT
# Exact versions of everything pip installs that pyproject.toml does not pin.
CONSTRAINTS=$SRC/constraints.txt

# libnettle (soname libnettle.so.8) is libnettle8 on Debian 12 and
# libnettle8t64 from Debian 13 on (testing and sid have no VERSION_ID).
nettle_package() {
    local release
    release=$(. /etc/os-release 2>/dev/null && echo "${VERSION_ID:-99}")
    if [[ ${release%%.*} =~ ^[0-9]+$ && ${release%%.*} -lt 13 ]]; then
        echo libnettle8
    else
        echo libnettle8t64
    fi
}

PACKAGES=(
    python3 python3-venv python3-dev gcc libc6-dev  # the venv; C builds
    libcap-dev       # python-prctl is built against it
    libseccomp2      # loaded by pyseccomp (ctypes)
    libpam0g         # loaded by python-pam (ctypes)
    openssh-client   # ssh, ssh-keygen (host keys), the tests' client
    openssh-server   # the reference server the tests compare with
    psmisc procps util-linux  # pstree; ps; utmpdump and last
)
# UMAC for the umac MACs (ctypes: privsep/child/umac.py); tests/vm.py's
# SUITE_PACKAGES names it for each release, as this array cannot
PACKAGES+=("$(nettle_package)")

# With --test, also what tests/test_vm.py needs on the host to build and boot
# Debian 12 and 13 VMs (tests/vm.py), and vagrant for tests/test_vagrantfile.py.
TEST_PACKAGES=(
    debootstrap e2fsprogs        # the guest's tree; mkfs.ext4 -d
    qemu-system-x86 qemu-utils   # qemu-system-x86_64 -accel tcg; qemu-img
    seabios                      # the firmware qemu loads (a Recommends)
    vagrant vagrant-libvirt      # `vagrant validate` of the Vagrantfile
    fail2ban                     # the tests read the log with fail2ban-regex
    putty-tools dropbear-bin     # plink and dbclient: tests/test_clients.py
    xauth                        # X11 forwarding, both daemons: tests/test_x11.py
    iproute2                     # ip: tests/test_tunnel.py's interfaces and namespaces
    lintian                      # the .deb's check in tests/test_vm.py
)

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

MODE=install
WITH_TEST=0
ENABLE=0
for arg in "$@"; do
    case $arg in
        --test) WITH_TEST=1 ;;
        --enable) ENABLE=1 ;;
        --wheels=?*)
            WHEELS=$(realpath -e "${arg#--wheels=}") || die "no such directory: ${arg#--wheels=}"
            export PIP_NO_INDEX=1 PIP_FIND_LINKS=$WHEELS ;;
        --uninstall) MODE=uninstall ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

# An ordinary user (`make run` without sudo) is told at once, before
# anything is looked at or changed.
if [[ $EUID -ne 0 ]]; then
    if [[ -n ${MAKELEVEL:-} ]]; then
        die "must be run as root (it installs system-wide: run make as root, e.g. with sudo)"
    fi
    die "must be run as root (it installs system-wide: sudo $0${*:+ $*})"
fi

# Two installs at once (two checkouts, two `make test`) would write into the
# same venv: take turns. The lock is on /opt itself so that no lock file is
# left behind.
exec 9</opt
flock 9

systemd_running() { [[ -d /run/systemd/system ]]; }

# ----------------------------------------------------------------- uninstall

uninstall() {
    if [[ -e $UNIT_DST ]]; then
        if systemd_running; then
            if systemctl is-enabled -q "$UNIT" 2>/dev/null || systemctl is-active -q "$UNIT"; then
                systemctl disable -q --now "$UNIT"
                say "stopped and disabled $UNIT"
            fi
        fi
        rm -f "$UNIT_DST"
        say "removed $UNIT_DST"
        if systemd_running; then
            systemctl daemon-reload
        fi
    fi
    local link
    for link in "${LINKS[@]}"; do
        if [[ -L $link || -e $link ]]; then
            rm -f "$link"
            say "removed $link"
        fi
    done
    if [[ -e $PREFIX ]]; then
        rm -rf "$PREFIX"
        say "removed $PREFIX"
    fi
    if [[ -e $ETC ]]; then
        rm -rf "$ETC"
        say "removed $ETC (configuration and host keys)"
    fi
    if [[ -e $JAIL_FILE ]]; then
        rm -f "$JAIL_FILE"
        say "removed $JAIL_FILE"
    fi
    if [[ -e $PAM_FILE ]]; then
        rm -f "$PAM_FILE"
        say "removed $PAM_FILE"
    fi
    if [[ -f $PIDFILE ]] && ! kill -0 "$(head -c 20 "$PIDFILE" | tr -cd 0-9)" 2>/dev/null; then
        rm -f "$PIDFILE"
        say "removed stale $PIDFILE"
    fi
    if [[ -d $CHROOT ]]; then
        if rmdir "$CHROOT" 2>/dev/null; then
            say "removed $CHROOT"
        else
            say "warning: $CHROOT is not empty, left in place"
        fi
    fi
    if getent passwd "$PRIVSEP_USER" >/dev/null; then
        userdel "$PRIVSEP_USER"
        say "removed user $PRIVSEP_USER"
    fi
    remove_stale_group
    local pids
    pids=$(pgrep -d ' ' -f '^privsep-sshd: .*\[listener\]' || true)
    if [[ -n $pids ]]; then
        say "note: privsep-sshd listeners still running (pid $pids); not touched"
    fi
}

# An earlier install may have given the privsep user a group of its own;
# OpenSSH's net-child runs with gid nogroup, and so does this one's.
remove_stale_group() {
    local gid
    gid=$(getent group "$PRIVSEP_USER" | cut -d: -f3) || return 0
    [[ -n $gid ]] || return 0
    if [[ -z $(getent group "$PRIVSEP_USER" | cut -d: -f4) ]] \
        && ! getent passwd | awk -F: -v g="$gid" '$4 == g { found = 1 } END { exit !found }'; then
        groupdel "$PRIVSEP_USER"
        say "removed unused group $PRIVSEP_USER"
    fi
}

if [[ $MODE == uninstall ]]; then
    uninstall
    exit 0
fi

# ------------------------------------------------------------------- install

# 1. Debian packages. The package lists are refreshed only when something
# has to be installed and they are missing or more than a day old; if the
# install still fails (lists out of date), refresh once and retry.
install_packages() {
    local missing=() pkg wanted=("${PACKAGES[@]}")
    [[ $WITH_TEST -eq 0 ]] || wanted+=("${TEST_PACKAGES[@]}")
    for pkg in "${wanted[@]}"; do
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) != installed ]]; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -gt 0 ]] || return 0
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300)
    # The lists keep the mirror's modification times, so their age is read
    # from their change times (set when an update writes them).
    local lists recent
    lists=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -print -quit 2>/dev/null)
    recent=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -cmin -1440 -print -quit 2>/dev/null)
    if [[ -z $lists || -z $recent ]]; then
        "${apt[@]}" update >/dev/null
        say "refreshed the apt package lists"
    fi
    # openssh-server's postinst tries to start ssh.service; without systemd
    # (a container, a chroot) that fails harmlessly and nothing here needs it.
    local log
    log=$(mktemp /tmp/privsep-sshd-apt.XXXXXX)
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        "${apt[@]}" update >/dev/null
        "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$log" 2>&1 \
            || { cat "$log" >&2; rm -f "$log"; die "apt-get install ${missing[*]} failed"; }
    fi
    rm -f "$log"
    say "installed Debian packages: ${missing[*]}"
}

# 2. The venv, with Debian's Python (never a pyenv or other python3 on PATH).
make_venv() {
    if [[ -x $VENV_PY ]] && "$VENV_PY" -c 'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null; then
        return 0
    fi
    if [[ -e $PREFIX ]]; then
        rm -rf "$PREFIX"
        say "removed the broken venv $PREFIX"
    fi
    /usr/bin/python3 -m venv "$PREFIX"
    say "created the venv $PREFIX ($(/usr/bin/python3 -V))"
}

# The requirements the venv must satisfy: pyproject's pinned dependencies
# (and its `test` extra with --test), plus its build requirements and wheel,
# since the package itself is built without build isolation (offline, fast).
# `requirements all` prints them all, `requirements missing` those not
# installed at a matching version, and any package of constraints.txt that
# is installed at another version than its pin (left by an older install).
requirements() {
    local extras=()
    [[ $WITH_TEST -eq 0 ]] || extras=(test)
    "$VENV_PY" - "$1" "$SRC/pyproject.toml" "$CONSTRAINTS" "${extras[@]}" <<'EOF'
import sys, tomllib
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement

mode, path, constraints, extras = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with open(path, "rb") as handle:
    data = tomllib.load(handle)
project = data["project"]
wanted = list(project.get("dependencies", []))
for extra in extras:
    wanted += project.get("optional-dependencies", {}).get(extra, [])
wanted += data.get("build-system", {}).get("requires", []) + ["wheel"]


def installed_as_wanted(req):
    """True or False by the installed version; None when not installed."""
    try:
        return req.specifier.contains(metadata.version(req.name), prereleases=True)
    except metadata.PackageNotFoundError:
        return None


for line in wanted:
    if mode == "missing" and installed_as_wanted(Requirement(line)):
        continue
    print(line)
if mode == "missing":
    # Installed ones only: a pin by itself installs nothing (pytest's
    # dependencies without --test).
    with open(constraints) as handle:
        pins = [line.split("#", 1)[0].strip() for line in handle]
    for line in filter(None, pins):
        if installed_as_wanted(Requirement(line)) is False:
            print(line)
EOF
}

# pip install, held to the versions of constraints.txt.
pip_install() {
    "$VENV_PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$@"
}

# pip trusts only the CA bundle it carries. Like Debian's own pip, use the
# machine's store instead when there is one (it holds any local CA the admin
# added, e.g. for a TLS-inspecting proxy), unless pip is told otherwise.
use_system_cas() {
    [[ -z ${PIP_CERT:-} && -s /etc/ssl/certs/ca-certificates.crt ]] || return 0
    local config
    config=$("$VENV_PY" -m pip config list 2>/dev/null || true)
    if [[ $config != *.cert=* ]]; then
        export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
    fi
}

install_python_deps() {
    local missing
    mapfile -t missing < <(requirements missing)
    if [[ ${#missing[@]} -eq 0 ]]; then
        # All pins present; is anything underneath them missing or broken?
        "$VENV_PY" -m pip check >/dev/null 2>&1 && return 0
        mapfile -t missing < <(requirements all)
    fi
    # Only a download needs the CA store, and asking pip for its config
    # costs seconds (16 in a VM): not on a run that installs nothing.
    use_system_cas
    pip_install --use-pep517 "${missing[@]}"
    say "installed Python packages into $PREFIX: ${missing[*]}"
}

# A digest of the installed package's files (empty when not installed):
# tells whether a reinstall brought new code, which a running service then
# loads by a reload (a re-exec in place that leaves sessions alone).
installed_code() {
    "$VENV_PY" -I - <<'EOF' 2>/dev/null || true
import hashlib, importlib.util, pathlib
spec = importlib.util.find_spec("privsep")
root = pathlib.Path(spec.origin).parent
digest = hashlib.sha256()
for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
    digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
print(digest.hexdigest())
EOF
}

RELOAD=0        # new code or configuration: a running service reloads
UNIT_CHANGED=0  # new unit file: a running service restarts

# 3. The package itself, from a copy of the checkout, so that the build's
# build/ and *.egg-info directories never land in the working tree.
install_package() {
    local tmp before
    before=$(installed_code)
    tmp=$(mktemp -d /tmp/privsep-sshd-build.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    (cd "$SRC" && shopt -s nullglob && tar -cf - --exclude=__pycache__ --exclude='*.pyc' \
        pyproject.toml privsep privsep_tree README* LICENSE*) | tar -xf - -C "$tmp"
    pip_install --force-reinstall --no-deps --no-build-isolation "$tmp"
    rm -rf "$tmp"
    trap - EXIT
    [[ -x $PREFIX/bin/privsep-sshd ]] || die "the privsep-sshd package did not install"
    [[ $(installed_code) == "$before" ]] || RELOAD=1
    say "reinstalled privsep-sshd $("$VENV_PY" -c 'from importlib.metadata import version; print(version("privsep-sshd"))') from $SRC"
}

# install_if_changed MODE SRC DST [quiet]: copy when DST is missing or differs.
install_if_changed() {
    local mode=$1 from=$2 to=$3 quiet=${4:-}
    if [[ -f $to ]] && cmp -s "$from" "$to" \
        && [[ $(stat -c '%a %U %G' "$to") == "${mode#0} root root" ]]; then
        return 1
    fi
    install -D -o root -g root -m "$mode" "$from" "$to"
    [[ -n $quiet ]] || say "installed $to"
    return 0
}

link_command() {
    local link target
    for link in "${LINKS[@]}"; do
        target=$PREFIX/bin/$(basename "$link")
        if [[ $(readlink "$link" 2>/dev/null) != "$target" ]]; then
            mkdir -p "$(dirname "$link")"
            ln -sfn "$target" "$link"
            say "linked $link -> $target"
        fi
    done
}

# 4. The privilege-separation user and its empty chroot directory.
privsep_user() {
    if ! getent passwd "$PRIVSEP_USER" >/dev/null; then
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --gid "$PRIVSEP_GROUP" "$PRIVSEP_USER"
        say "created system user $PRIVSEP_USER (group $PRIVSEP_GROUP)"
    else
        local gid home shell want_gid
        IFS=: read -r _ _ _ gid _ home shell < <(getent passwd "$PRIVSEP_USER")
        want_gid=$(getent group "$PRIVSEP_GROUP" | cut -d: -f3)
        if [[ $gid != "$want_gid" || $home != /nonexistent || $shell != /usr/sbin/nologin ]]; then
            usermod --gid "$PRIVSEP_GROUP" --home /nonexistent --shell /usr/sbin/nologin "$PRIVSEP_USER"
            say "set user $PRIVSEP_USER to group $PRIVSEP_GROUP, home /nonexistent, shell nologin"
        fi
        if [[ $(id -G "$PRIVSEP_USER") != "$want_gid" ]]; then
            usermod --groups '' "$PRIVSEP_USER"
            say "removed user $PRIVSEP_USER from its supplementary groups"
        fi
    fi
    remove_stale_group
    ensure_dir "$CHROOT" 755 root root
}

# ensure_dir PATH MODE OWNER GROUP
ensure_dir() {
    local path=$1 mode=$2 owner=$3 group=$4
    if [[ ! -d $path ]]; then
        install -d -o "$owner" -g "$group" -m "$mode" "$path"
        say "created $path"
    elif [[ $(stat -c '%a %U %G' "$path") != "$mode $owner $group" ]]; then
        chown "$owner:$group" "$path"
        chmod "$mode" "$path"
        say "set $path to $owner:$group $mode"
    fi
}

# 5. /etc/privsep-sshd and its sshd_config. An existing config that differs
# from the shipped default is an admin's edit and is kept; one that is the
# default previously shipped is updated to the new default.
install_config() {
    ensure_dir "$ETC" 755 root root
    local shipped=$SRC/privsep/sshd_config
    if [[ ! -e $CONFIG ]]; then
        install -o root -g root -m 0644 "$shipped" "$CONFIG"
        say "installed $CONFIG"
    elif ! cmp -s "$shipped" "$CONFIG"; then
        if [[ -f $CONFIG_DIST ]] && cmp -s "$CONFIG_DIST" "$CONFIG"; then
            install -o root -g root -m 0644 "$shipped" "$CONFIG"
            say "updated $CONFIG to the new default"
            RELOAD=1
        else
            say "kept $CONFIG: it differs from $shipped (a local edit?); not overwritten"
        fi
    fi
    # Remember the default shipped now, for the next run's comparison.
    install_if_changed 0644 "$shipped" "$CONFIG_DIST" quiet || true
}

# 6. PAM service.
install_pam() {
    install_if_changed 0644 "$SRC/pam.d/privsep-sshd" "$PAM_FILE" || true
    # The fail2ban jail (disabled until the admin enables it), if fail2ban is here.
    if [[ -d /etc/fail2ban/jail.d ]]; then
        install_if_changed 0644 "$SRC/privsep/fail2ban-jail.conf" "$JAIL_FILE" || true
    fi
}

# 7. Login record files (systemd-tmpfiles and Debian's packages normally
# make them; a minimal image may lack them).
login_records() {
    local file
    for file in /run/utmp /var/log/wtmp /var/log/lastlog; do
        if [[ ! -e $file ]]; then
            install -o root -g utmp -m 0664 /dev/null "$file"
            say "created $file"
        fi
    done
}

# 8. The systemd unit, when the checkout has one and systemd is PID 1.
install_unit() {
    [[ -f $UNIT_SRC ]] || return 0
    systemd_running || return 0
    if install_if_changed 0644 "$UNIT_SRC" "$UNIT_DST"; then
        systemctl daemon-reload
        UNIT_CHANGED=1
    fi
    if [[ $ENABLE -eq 1 ]]; then
        if ! systemctl is-enabled -q "$UNIT" 2>/dev/null; then
            systemctl enable -q "$UNIT"
            say "enabled $UNIT"
        fi
        if ! systemctl is-active -q "$UNIT"; then
            systemctl start "$UNIT"
            say "started $UNIT"
            return 0
        fi
    fi
    # A running service picks up what changed; its sessions live on either
    # way (KillMode=process, and a reload re-executes only the listener).
    systemctl is-active -q "$UNIT" || return 0
    if [[ $UNIT_CHANGED -eq 1 ]]; then
        systemctl restart "$UNIT"
        say "restarted $UNIT (new unit file)"
    elif [[ $RELOAD -eq 1 ]]; then
        systemctl reload "$UNIT"
        say "reloaded $UNIT (new code or configuration)"
    fi
}

install_packages
make_venv
install_python_deps
install_package
link_command
privsep_user
install_config
install_pam
login_records
install_unit

# Finally the daemon checks its configuration, as sshd -t does.
if ! "$LINK" -t; then
    die "privsep-sshd -t rejected $CONFIG"
fi
