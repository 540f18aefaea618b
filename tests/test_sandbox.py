"""The net-child's sandbox, entered for real by a forked process: what it
can no longer do.  The daemon's own net-child is read from /proc in
test_genealogy.py; here the same sandbox.enter() is probed from inside."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from privsep.netchild import sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

HOST_KEY = "/etc/privsep-sshd/ssh_host_ed25519_key"


def _in_sandbox(probe, prepared: bool = True) -> tuple[int, bytes]:
    """Run ``probe()`` in a sandboxed child; (wait status, what it wrote).
    ``prepared``: the seccomp filter compiled beforehand, as the listener
    does (sandbox.prepare); else the child compiles it itself (an exec'd
    program's path)."""
    os.makedirs("/run/privsep-sshd", mode=0o755, exist_ok=True)
    if prepared:
        sandbox.prepare()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reader)
            sandbox.enter("privsep-sshd", "/run/privsep-sshd", keep_fds={writer})
            result = probe()
            os.write(writer, result.encode())
            os._exit(0)
        except BaseException as exc:  # report, never return into pytest
            try:
                os.write(writer, f"raised {type(exc).__name__}: {exc}".encode())
            finally:
                os._exit(3)
    os.close(writer)
    chunks = []
    while chunk := os.read(reader, 4096):
        chunks.append(chunk)
    os.close(reader)
    _, status = os.waitpid(pid, 0)
    return status, b"".join(chunks)


def _try(call) -> str:
    try:
        call()
    except OSError as exc:
        return f"denied {exc.errno}"
    return "allowed"


def test_cannot_open_a_host_key() -> None:
    assert os.path.exists(HOST_KEY) or pytest.skip("no host key generated yet")
    status, out = _in_sandbox(lambda: ",".join([
        _try(lambda: open(HOST_KEY, "rb")),
        _try(lambda: open("/" + os.path.basename(HOST_KEY), "rb")),
        _try(lambda: open("/etc/passwd", "rb")),
    ]))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    assert out.decode().split(",") == ["denied 13"] * 3


def test_cannot_write_files() -> None:
    status, out = _in_sandbox(lambda: _try(lambda: open("/x", "wb")))
    assert out.startswith(b"denied"), out


@pytest.mark.parametrize("name,action", [
    ("fork", lambda: os.fork()),
    ("exec", lambda: os.execv("/bin/sh", ["sh", "-c", "true"])),
    ("socket", lambda: socket.socket()),
    ("setuid", lambda: os.setuid(0)),
    ("kill", lambda: os.kill(1, 0)),
])
@pytest.mark.parametrize("prepared", [True, False], ids=["compiled-once", "compiled-in-child"])
def test_forbidden_calls_kill_the_child(name: str, action, prepared: bool,
                                        monkeypatch) -> None:
    """System calls outside the allow-list end the process (SIGSYS), with the
    filter compiled beforehand (the daemon's way) or by the child itself."""
    monkeypatch.setattr(sandbox, "_compiled", None)
    status, out = _in_sandbox(lambda: (action(), "survived")[1], prepared=prepared)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, (name, status, out)
    if prepared:  # the allow-list still lets the child work and exit
        status, out = _in_sandbox(lambda: f"{os.getpid() > 0}", prepared=True)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and out == b"True", out


def test_identity() -> None:
    """(Limits and capabilities are read from /proc in test_genealogy.py:
    getrlimit itself is not on the allow-list.)"""
    status, out = _in_sandbox(lambda: f"{os.getuid()} {os.geteuid()} {os.getgid()} {os.getegid()}")
    import pwd
    pw = pwd.getpwnam("privsep-sshd")
    assert out.decode().split() == [str(pw.pw_uid)] * 2 + [str(pw.pw_gid)] * 2
