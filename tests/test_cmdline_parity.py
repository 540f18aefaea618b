"""sshd(8)'s command line and its refusals, side by side with Debian's sshd
9.2: the same arguments to both, the exit status, stdout and stderr compared
whole (normalised only for the program's name and version in the usage text and
for the CR LF that sshd's log lines end with on stderr)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.daemon import OPENSSH, privsep_command

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not Path(OPENSSH).exists(), reason="no openssh-server")]

#: the version line that opens the usage text: sshd's release, ours
_VERSION_LINE = re.compile(r"^(OpenSSH_\S+( \S+)?|privsep-sshd \S+), OpenSSL .*$", re.M)


def _normalised(stderr: str) -> str:
    text = stderr.replace("\r\n", "\n")
    text = _VERSION_LINE.sub("VERSION, OpenSSL", text)
    text = text.replace("usage: privsep-sshd", "usage: sshd")
    return re.sub(r"\n +", "\n ", text)  # the usage's continuation lines, aligned to the name


@pytest.fixture
def config(tmp_path: Path) -> Path:
    key = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    path = tmp_path / "sshd_config"
    path.write_text(f"HostKey {key}\nListenAddress 127.0.0.1\n")
    return path


def _both(*args: str, logfile: Path | None = None) -> dict[str, tuple]:
    """(exit status, stderr, stdout) of each daemon for ``args``; with
    ``logfile``, given as -E (made afresh for each), what it holds too."""
    seen = {}
    for kind, command in (("openssh", [OPENSSH]), ("privsep", privsep_command())):
        extra = []
        if logfile is not None:
            logfile.unlink(missing_ok=True)
            extra = ["-E", str(logfile)]
        result = subprocess.run([*command, *extra, *args], capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL)
        seen[kind] = (result.returncode, _normalised(result.stderr), result.stdout)
        if logfile is not None:
            seen[kind] += (_normalised(logfile.read_text()) if logfile.exists() else None,
                           logfile.stat().st_mode & 0o777 if logfile.exists() else None)
    return seen


CASES = {
    # -o: an unknown keyword is an error sshd's parser returns (exit 1); a
    # bad value is its fatal() (255), in its words
    "unknown keyword": ["-o", "Unknown=1"],
    "bad port value": ["-o", "Port=abc"],
    "bad time value": ["-o", "LoginGraceTime=xyz"],
    "bad flag value": ["-o", "PasswordAuthentication=maybe"],
    "bad integer": ["-o", "MaxAuthTries=3x"],
    "negative integer": ["-o", "MaxAuthTries=-1"],
    "huge integer": ["-o", "MaxAuthTries=99999999999"],
    "bad cipher": ["-o", "Ciphers=+rot13"],
    "bad kex": ["-o", "KexAlgorithms=nope"],
    "bad log level": ["-o", "LogLevel=LOUD"],
    "no value": ["-o", "Port="],
    "Match on the command line": ["-o", "Match User x"],
    "bare Match": ["-o", "Match"],
    "Include on the command line": ["-o", "Include=/nonexistent"],
    # the flags' own refusals
    "bad -p": ["-p", "abc"],
    "-p 0": ["-p", "0"],
    "-p too large": ["-p", "70000"],
    "bad -g": ["-g", "5x"],
    "-u too large": ["-u", "66"],
    "unknown flag": ["-Z"],
    "unknown flag in a cluster": ["-tZ"],
    "flag without its argument": ["-o"],
    "-C without -T": ["-C", "user=x"],
    "bad -C": ["-T", "-C", "planet=mars"],
    "unwritable -E": ["-E", "/nonexistent/dir/log"],
    "extra argument": ["extra"],
    "extra argument after --": ["--", "extra"],
    # the order: the first bad flag decides, -o lines included
    "unknown keyword before a bad flag": ["-o", "Unknown=1", "-Z"],
    "bad flag before an unknown keyword": ["-Z", "-o", "Unknown=1"],
    "bad value before an unknown keyword": ["-o", "Port=abc", "-o", "Unknown=1"],
    # a host key that does not load is a line, and skipped: the file's
    # key still serves (-h and -o add to the file's HostKey lines)
    "missing -h key": ["-h", "/nonexistent/key"],
    "two missing -h keys": ["-h", "/nonexistent/key", "-h", "/nonexistent/other"],
    "missing -o HostKey": ["-o", "HostKey=/nonexistent/key"],
    "-h naming a directory": ["-h", "/"],
    # a subsystem named twice is sshd's fatal(), whichever line comes second
    "Subsystem twice on the command line": ["-o", "Subsystem=sftp internal-sftp",
                                            "-o", "Subsystem=sftp /bin/true"],
    # accepted: the same silence and status
    "ignored flags": ["-4", "-r", "-Q", "-b", "1024", "-k", "3600", "-u", "0"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_command_line_as_sshd(config: Path, name: str) -> None:
    seen = _both("-t", "-f", str(config), *CASES[name])
    assert seen["privsep"] == seen["openssh"], seen


def test_missing_config_file(tmp_path: Path) -> None:
    """sshd's perror() and exit 1 for a -f it cannot open."""
    seen = _both("-t", "-f", str(tmp_path / "nonexistent"))
    assert seen["openssh"] == (1, f"{tmp_path / 'nonexistent'}: No such file or directory\n", "")
    assert seen["privsep"] == seen["openssh"]


def test_usage_and_version(config: Path) -> None:
    """The usage text is sshd's, with our name; -V prints a version line
    and exits 0, as sshd's."""
    seen = _both("-t", "-f", str(config), "-Z")
    assert seen["openssh"][0] == 1
    assert "usage: sshd [-46DdeiqTtV] [-C connection_spec]" in seen["openssh"][1]
    assert seen["privsep"] == seen["openssh"]
    for kind, command in (("openssh", [OPENSSH]), ("privsep", privsep_command())):
        result = subprocess.run([*command, "-V"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, kind
        assert re.fullmatch(r"\S+( \S+)?, OpenSSL [^\n]+\n", result.stderr), (kind, result.stderr)


def test_no_host_key_loads(tmp_path: Path) -> None:
    """Without a key that loads: sshd's line for each, then its last line
    and exit 1 (sshd.c: "no hostkeys available")."""
    path = tmp_path / "sshd_config"
    path.write_text("ListenAddress 127.0.0.1\n")
    seen = _both("-t", "-f", str(path), "-h", "/nonexistent/key", "-h", str(path))
    assert seen["openssh"][0] == 1, seen
    assert seen["openssh"][1].startswith("Unable to load host key: /nonexistent/key\n"), seen
    assert seen["openssh"][1].endswith(f"Unable to load host key: {path}\n"
                                       "sshd: no hostkeys available -- exiting.\n"), seen
    assert seen["privsep"] == seen["openssh"]


def test_subsystem_twice_in_the_file(config: Path) -> None:
    config.write_text(config.read_text() + "Subsystem sftp internal-sftp\n"
                      "Subsystem sftp /usr/lib/openssh/sftp-server\n")
    seen = _both("-t", "-f", str(config))
    assert seen["openssh"] == (255, f"{config} line 4: Subsystem 'sftp' already defined.\n", "")
    assert seen["privsep"] == seen["openssh"]


def test_include_of_nothing_and_of_a_directory(config: Path, tmp_path: Path) -> None:
    """sshd skips an Include that matches no file (wildcards or not), and a
    directory it opens reads as empty; so does a -f naming a directory."""
    config.write_text(config.read_text() + f"Include /nonexistent/x.conf\nInclude {tmp_path}\n")
    seen = _both("-t", "-f", str(config))
    assert seen["openssh"] == (0, "", ""), seen
    assert seen["privsep"] == seen["openssh"]
    seen = _both("-t", "-f", str(tmp_path), "-h", str(config.with_name("hostkey")))
    assert seen["openssh"] == (0, "", ""), seen
    assert seen["privsep"] == seen["openssh"]


#: -E: sshd reads its flags and -o lines first, their errors on stderr
#: and no file made; then it opens the file (0600) and sends its log there,
#: the configuration file's errors included (name: (lines added to the
#: file, arguments, where the words go: "flags", "stderr", "log" or None))
LOGFILE_CASES = {
    "bad -o value": ("", ["-o", "Port=abc"], "flags"),
    "unknown -o keyword": ("", ["-o", "Unknown=1"], "flags"),
    "bad -p": ("", ["-p", "0"], "flags"),
    "bad value in the file": ("Port abc\n", [], "log"),
    "unknown keyword in the file": ("Bogus 1\nPort 22\n", [], "log"),
    "-C without -T": ("", ["-C", "user=x"], "log"),
    "missing host key": ("", ["-h", "/nonexistent/key"], "log"),
    "extra argument": ("", ["extra"], "stderr"),
    "fine": ("", [], None),
}


@pytest.mark.parametrize("name", list(LOGFILE_CASES))
def test_errors_with_a_logfile_as_sshd(config: Path, tmp_path: Path, name: str) -> None:
    text, args, where = LOGFILE_CASES[name]
    config.write_text(config.read_text() + text)
    seen = _both("-t", "-f", str(config), *args, logfile=tmp_path / "sshd.log")
    assert seen["privsep"] == seen["openssh"], seen
    status, stderr, stdout, log, mode = seen["openssh"]
    assert stdout == ""
    if where == "flags":
        assert stderr and (log, mode) == (None, None), seen
    else:
        assert mode == 0o600, seen
        assert (bool(stderr), bool(log)) == (where == "stderr", where == "log"), seen


def test_missing_config_file_with_a_logfile(tmp_path: Path) -> None:
    """sshd's perror() for a -f it cannot open writes on stderr, -E or not."""
    seen = _both("-t", "-f", str(tmp_path / "nonexistent"), logfile=tmp_path / "sshd.log")
    assert seen["openssh"][:4] == (1, f"{tmp_path / 'nonexistent'}: No such file or directory\n",
                                   "", "")
    assert seen["privsep"] == seen["openssh"]


@pytest.mark.parametrize("args", [
    ["-o", "Port=2025"], ["-p", "2024"], ["-o", "Port=2025", "-p", "2024"],
    ["-p", "2024", "-o", "Port=2025"], ["-p", "2024", "-o", "Port=abc"],
    ["-h", "/nonexistent/key", "-o", "AcceptEnv=FOO", "-o", "AllowUsers=al"],
], ids=" ".join)
def test_command_line_adds_to_the_files_lists(config: Path, args: list[str]) -> None:
    """-o and -h add to the file's lists, as sshd's; -p alone replaces
    the file's ports, and -o Port lines after it are not read at all."""
    config.write_text(config.read_text() + "Port 2022\nAcceptEnv BAR\nAllowUsers bob\n")
    seen = _both("-T", "-f", str(config), *args)
    lists = re.compile(r"^(port|hostkey|acceptenv|allowusers) .*$", re.M)
    for kind in seen:
        status, stderr, stdout = seen[kind]
        seen[kind] = (status, stderr, [m.group(0) for m in lists.finditer(stdout)])
    assert seen["privsep"] == seen["openssh"], seen
    assert seen["openssh"][0] == 0 and seen["openssh"][2], seen


@pytest.mark.parametrize("address", ["127.0.0.3:2030", "[::1]:2031", "::1", "[127.0.0.4]",
                                     "127.0.0.1:", "127.0.0.1:0", "[::1]x", "[::1",
                                     "127.0.0.1:abc"])
def test_listen_address_forms_as_sshd(config: Path, address: str) -> None:
    """ListenAddress as sshd's hpdelim reads it: a port of its own after
    the host ("host:port", "[host]:port"), a bare IPv6 address, and sshd's
    words for a bad one; -T's listenaddress lines compared."""
    config.write_text(config.read_text() + "Port 2022\n")
    seen = _both("-T", "-f", str(config), "-o", f"ListenAddress={address}")
    for kind in seen:
        status, stderr, stdout = seen[kind]
        seen[kind] = (status, stderr, re.findall(r"^listenaddress .*$", stdout, re.M))
    assert seen["privsep"] == seen["openssh"], seen


def test_listen_address_with_its_own_port_serves(server_with) -> None:
    """"ListenAddress 127.0.0.1:P" listens on P beside the Port lines'
    ports: both daemons say so and answer there."""
    from tests.daemon import free_port
    seen = {}
    for kind in ("privsep", "openssh"):
        port = free_port()
        server = server_with(f"ListenAddress 127.0.0.1:{port}", kind=kind)
        line = f"Server listening on 127.0.0.1 port {port}."
        server.wait_for_log(line)
        scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                              capture_output=True, text=True, timeout=30).stdout
        seen[kind] = (line in server.log_text(), "ssh-ed25519" in scan)
    assert seen["privsep"] == seen["openssh"] == (True, True), seen
