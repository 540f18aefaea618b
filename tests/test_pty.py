"""Sessions on a pty, driven by the real client from a real terminal of its own:
size and SIGWINCH, terminal modes, Ctrl-C, controlling tty."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.daemon import Server, processes, ssh, ssh_argv, wait_until


class Terminal:
    """The client runs on a pty of the test's, as it would in a terminal emulator."""

    def __init__(self, server: Server, user, *command: str, rows: int = 24, cols: int = 80,
                 erase: bytes | None = None) -> None:
        self.master, slave = pty.openpty()
        self.resize(rows, cols)
        if erase is not None:
            attrs = termios.tcgetattr(slave)
            attrs[6][termios.VERASE] = erase
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
        argv, env = ssh_argv(server, user, *command, tty=True)
        self.client = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave,
                                       start_new_session=True)
        os.close(slave)
        self.output = b""

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, marker: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{marker!r} not seen in {self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF before {marker!r}: {self.output[-2000:]!r}")
                self.output += chunk
        return self.output

    def close(self) -> int:
        try:
            return self.client.wait(20)
        finally:
            os.close(self.master)


@pytest.fixture
def terminal(any_server: Server, user):
    made = []

    def make(*command: str, **kwargs) -> Terminal:
        term = Terminal(any_server, user, *command, **kwargs)
        made.append(term)
        return term

    yield make
    for term in made:
        if term.client.poll() is None:
            term.client.kill()
            term.client.wait()


def test_size_and_window_change(terminal) -> None:
    term = terminal("stty size; trap 'stty size; exit 0' WINCH; echo ready; "
                    "while :; do sleep 0.1; done", rows=24, cols=80)
    term.expect(b"24 80")
    term.expect(b"ready")
    term.resize(40, 132)
    term.client.send_signal(signal.SIGWINCH)  # what the terminal emulator's kernel would do
    term.expect(b"40 132")
    assert term.close() == 0


def test_terminal_modes_reach_the_pty(terminal) -> None:
    term = terminal("stty -a", erase=b"\x08")
    term.expect(b"erase = ^H")
    assert term.close() == 0


def test_ctrl_c_interrupts_the_command_not_the_shell(terminal) -> None:
    term = terminal()  # a login shell
    term.send(b"echo shell-$$-$((40+2))\n")
    shell_pid = term.expect(b"-42\r\n").rsplit(b"shell-", 1)[1].split(b"-")[0]
    term.send(b"sleep 100\n")
    # ^C must reach the pty once `sleep` has been exec'd as the terminal's
    # foreground process group (ps marks that with "+"); earlier, the shell is
    # still reading the line and the ^C would be the shell's, not the command's.
    wait_until(lambda: [p for p in processes().values()
                        if p.ppid == int(shell_pid) and p.args == "sleep 100" and "+" in p.stat])
    term.send(b"\x03")
    term.send(b"echo status-$?-$$-$((1+1))\n")
    # sleep died of SIGINT (128+2); the same shell ran on
    term.expect(b"status-130-" + shell_pid + b"-2")
    term.send(b"exit 5\n")
    assert term.close() == 5


def test_exec_with_forced_tty(any_server: Server, user) -> None:
    result = ssh(any_server, user, "tty; test -t 0 && echo stdin-is-tty", tty=True)
    assert result.returncode == 0
    lines = result.stdout.decode().split()
    assert lines[0].startswith("/dev/pts/") and "stdin-is-tty" in lines


def test_login_shell_shows_the_motd(terminal) -> None:
    """pam_motd's message reaches a login shell's terminal, as with sshd."""
    with open("/etc/motd", "rb") as handle:
        motd_line = next((line.strip() for line in handle if line.strip()), None)
    if motd_line is None:
        pytest.skip("/etc/motd is empty here")
    term = terminal()
    term.expect(motd_line)
    term.send(b"exit\n")
    assert term.close() == 0


def test_password_login_to_a_pty_shell(any_server: Server, user) -> None:
    from tests.daemon import ssh_argv
    argv, env = ssh_argv(any_server, user, password=user.password, tty=True)
    result = subprocess.run(argv, env=env, input=b"echo who-$(id -un)-$(tty)\nexit 4\n",
                            capture_output=True, timeout=60)
    assert result.returncode == 4
    assert f"who-{user.name}-/dev/pts/".encode() in result.stdout


# --- the terminal-modes string (pure: tty.parse_modes) ------------------------

from privsep.session import tty  # noqa: E402
from privsep.wire.sshbuf import Writer  # noqa: E402

VERASE_8 = bytes(Writer().byte(3).uint32(8))
ECHO_OFF = bytes(Writer().byte(53).uint32(0))


@pytest.mark.parametrize("blob, pairs", [
    (b"", []),
    (VERASE_8 + ECHO_OFF + b"\x00", [(3, 8), (53, 0)]),
    (VERASE_8 + b"\x00" + ECHO_OFF, [(3, 8)]),               # TTY_OP_END ends it
    (VERASE_8 + bytes(Writer().byte(160).uint32(1)) + ECHO_OFF, [(3, 8)]),  # 160+: stop
    (VERASE_8 + ECHO_OFF[:4], [(3, 8)]),                     # a truncated pair is dropped
    (VERASE_8 + ECHO_OFF, [(3, 8), (53, 0)]),                # no TTY_OP_END at all
    (bytes(Writer().byte(128).uint32(2**32 - 1)), [(128, 2**32 - 1)]),
])
def test_parse_modes(blob, pairs) -> None:
    assert tty.parse_modes(blob) == pairs
