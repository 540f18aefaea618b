"""No forged log lines (issue 11.4): every text a client controls reaches the
log escaped, as OpenSSH's strnvis escapes it, so that fail2ban reading the
log bans only the clients that really failed.

One connection per way in: the user name, the version string, a subsystem
name, an environment variable's name and a disconnect message each carry
a newline followed by a well-formed failure line for an innocent address.
fail2ban-regex with the jail this project ships then finds failures of the
real client only, never of the innocent address; and each forged text is in
the log, escaped, inside the line that carried it.
"""

from __future__ import annotations

import configparser
import re
import shutil
import socket
import subprocess
from pathlib import Path

import paramiko
import pytest

from privsep.common.log import vis
from tests.daemon import REPO, Server, wait_until

INNOCENT = "198.51.100.77"
FORGED = f"privsep-sshd[4242]: Failed password for root from {INNOCENT} port 4242 ssh2"
JAIL = REPO / "privsep" / "fail2ban-jail.conf"


@pytest.mark.parametrize("text, escaped", [
    ("plain words, 1-2_3", "plain words, 1-2_3"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("back\\slash", "back\\\\slash"),
    ("j\u00f6hn", "j\\303\\266hn"),
    ("\x00\x1b[31m\x7f", "\\000\\033[31m\\177"),
    ("\a\b\v\f", "\\a\\b\\v\\f"),
])
def test_vis_escapes_as_openssh(text: str, escaped: str) -> None:
    assert vis(text) == escaped


def _connect(server: Server, version: str | None = None) -> paramiko.Transport:
    transport = paramiko.Transport(("127.0.0.1", server.port))
    if version is not None:
        transport.local_version = version
    transport.start_client(timeout=20)
    return transport


def _forge_user(server: Server, user) -> None:
    transport = _connect(server)
    with pytest.raises(paramiko.AuthenticationException):
        transport.auth_password(f"nobody\n{FORGED}", "wrong")
    transport.close()


def _forge_version(server: Server, user) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.recv(256)
    sock.sendall(f"SSH-2.0-x\r{FORGED}\rtrailing\r\n".encode() + b"\0" * 64)
    sock.settimeout(20)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    sock.close()


def _logged_in(server: Server, user) -> paramiko.Transport:
    transport = _connect(server)
    transport.auth_password(user.name, user.password)
    return transport


def _forge_subsystem(server: Server, user) -> None:
    transport = _logged_in(server, user)
    chan = transport.open_session()
    with pytest.raises(paramiko.SSHException):
        chan.invoke_subsystem(f"sftp\n{FORGED}")
    transport.close()


def _forge_env(server: Server, user) -> None:
    transport = _logged_in(server, user)
    chan = transport.open_session()
    chan.set_environment_variable(f"LC_X\n{FORGED}", "1")  # refused, quietly
    chan.exec_command("true")
    chan.recv_exit_status()
    transport.close()


def _forge_disconnect(server: Server, user) -> None:
    transport = _logged_in(server, user)
    message = paramiko.Message()
    message.add_byte(paramiko.common.cMSG_DISCONNECT)
    message.add_int(11)
    message.add_string(f"bye\n{FORGED}")
    message.add_string("")
    transport._send_user_message(message)
    transport.close()


FORGERS = {"user name": _forge_user, "version string": _forge_version,
           "subsystem name": _forge_subsystem, "environment name": _forge_env,
           "disconnect message": _forge_disconnect}


@pytest.mark.skipif(shutil.which("fail2ban-regex") is None,
                    reason="fail2ban is not installed (install.sh --test installs it)")
def test_forged_lines_stay_inside_their_own(server_with, user, tmp_path) -> None:
    server = server_with("LogLevel DEBUG")  # env names are logged at DEBUG only
    for forge in FORGERS.values():
        forge(server, user)
    for _ in range(2):  # the real failures
        transport = _connect(server)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_password(user.name, "wrong password")
        transport.close()
    wait_until(lambda: server.log_text().count(f"Failed password for {user.name} ") == 2)
    # the last forgery is logged before the failures that follow it
    text = wait_until(lambda: (t := server.log_text()).count("Received disconnect") and t)

    lines = [line for line in text.splitlines() if line]
    assert not [line for line in lines if line.startswith("privsep-sshd[4242]")]
    carried = [line for line in lines if vis("\n" + FORGED) in line]
    for way in ("nobody", "subsystem request for sftp", "LC_X",
                "Received disconnect"):
        assert any(way in line for line in carried), (way, carried)
    # (the version string is not logged at this level: it only must not forge a line)

    log = tmp_path / "auth.log"
    log.write_text("".join(f"Nov 21 06:00:00 privsep-sshd[1]: {line}\n" for line in lines))
    jail = configparser.ConfigParser(interpolation=None)
    jail.read(JAIL)
    result = subprocess.run(["fail2ban-regex", "--out", "ip", str(log),
                             jail["privsep-sshd"]["filter"]],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    banned = result.stdout.split()
    # Only the client that really failed: its two passwords and its invalid user.
    assert set(banned) == {"127.0.0.1"} and len(banned) >= 2, banned
