"""Bulk data both ways with rekeys forced during each transfer."""

from __future__ import annotations

import hashlib
import os

from tests.daemon import Server, ssh

SIZE = 100 * 1024 * 1024


def test_100mb_up_and_down_with_rekey(privsep_server: Server, user, tmp_path) -> None:
    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()
    target = f"{user.home}/upload.bin"
    up = ssh(privsep_server, user, f"cat > {target} && sha256sum {target}", input=data,
             options=["RekeyLimit=1M"], flags=["-v"], timeout=300)
    assert up.returncode == 0, up.stderr
    # the client started a key exchange for every MiB or so
    assert up.stderr.count(b"SSH2_MSG_KEXINIT sent") > 50
    assert up.stdout.split()[0].decode() == digest
    down = ssh(privsep_server, user, f"cat {target}", options=["RekeyLimit=1M"], flags=["-v"],
               timeout=300)
    assert down.returncode == 0, down.stderr
    assert down.stderr.count(b"SSH2_MSG_KEXINIT sent") > 50
    assert len(down.stdout) == SIZE
    assert hashlib.sha256(down.stdout).hexdigest() == digest


def test_stdin_for_a_program_that_reads_late(session_server: Server, user) -> None:
    """8 MiB for a program that starts reading after a second: more than the
    pipe and the window hold, so the rest waits in the session's backlog and
    the client's window opens only as the program reads; nothing is lost."""
    data = os.urandom(8 * 1024 * 1024)
    result = ssh(session_server, user, "sleep 1; sha256sum", input=data, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_stdin_for_a_program_that_closed_it(session_server: Server, user) -> None:
    """The program closes its stdin at once: what the client still sends is
    dropped (sshd's "fake consumption"), the client is not stalled, and the
    program's output and exit status arrive."""
    data = os.urandom(8 * 1024 * 1024)
    result = ssh(session_server, user, "exec 0<&-; sleep 1; echo done; exit 3", input=data,
                 timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"done\n"
