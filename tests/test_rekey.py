"""Bulk data across many key exchanges, started by the client and by the
server (RekeyLimit on either side), data flowing both ways; hashes compared.

PRIVSEP_REKEY_MB sets the size (default 64 MB each way, about sixty key
exchanges per direction, each signed by the monitor).  Rekeys come every
1 MB; the gigabyte soak (about a thousand per direction, 8.5 minutes of a CI
run) is the benchmark's `python -m tests.bench --only rekey`, beside sshd.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time

import paramiko
import pytest

from tests.daemon import Server, remove_server, ssh_argv, start_server
from tests.session_util import paramiko_client

MB = 1024 * 1024
SIZE_MB = int(os.environ.get("PRIVSEP_REKEY_MB", "64"))
BLOCK = os.urandom(4 * MB + 17)  # odd-sized, so that blocks never align with packets


@pytest.fixture(scope="module")
def rekeying_server(pam_service):
    """privsep-sshd that starts a key exchange itself every MiB."""
    server = start_server("privsep", ["RekeyLimit 1M"])
    yield server
    remove_server(server)


def _upload(server: Server, user, options: list[str], target: str) -> tuple[str, str, bytes, float]:
    argv, env = ssh_argv(server, user, f"cat > {target} && sha256sum {target}",
                         options=options, flags=["-v"])
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    digest = hashlib.sha256()
    err = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    reader.start()
    left = SIZE_MB * MB
    while left:
        chunk = BLOCK[:left]
        digest.update(chunk)
        proc.stdin.write(chunk)
        left -= len(chunk)
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait(600)
    reader.join()
    assert proc.returncode == 0, err[0][-2000:]
    return digest.hexdigest(), out.split()[0].decode(), err[0], time.monotonic() - started


def _download(server: Server, user, options: list[str], target: str) -> tuple[str, bytes, float, int]:
    argv, env = ssh_argv(server, user, f"cat {target}", options=options, flags=["-v"])
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    err = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    reader.start()
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = proc.stdout.read(MB)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    proc.wait(600)
    reader.join()
    assert proc.returncode == 0, err[0][-2000:]
    return digest.hexdigest(), err[0], time.monotonic() - started, total


def _kexes(stderr: bytes) -> int:
    return stderr.count(b"SSH2_MSG_KEXINIT received")


@pytest.mark.parametrize("who", ["client", "server"])
def test_bulk_both_ways_across_rekeys(privsep_server: Server, rekeying_server: Server, user,
                                      who: str, capsys) -> None:
    server = privsep_server if who == "client" else rekeying_server
    options = ["RekeyLimit=1M"] if who == "client" else []
    target = f"{user.home}/bulk.bin"
    sent, remote, err, up_time = _upload(server, user, options, target)
    assert remote == sent
    up_kex = _kexes(err)
    got, err, down_time, total = _download(server, user, options, target)
    down_kex = _kexes(err)
    os.unlink(target)
    assert total == SIZE_MB * MB
    assert got == sent
    # about one key exchange per MiB (the first one is the initial exchange);
    # fewer when the client starts them, as what is already in flight when its
    # KEXINIT leaves arrives under the old keys (sshd: about 0.7 per MiB; this
    # daemon, which keeps more in flight since it batches its writes, 0.5-0.6)
    assert up_kex > SIZE_MB // 3 and down_kex > SIZE_MB // 3, (up_kex, down_kex)
    with capsys.disabled():
        print(f"\n  {SIZE_MB} MB rekeys by {who}: up {up_time:.1f}s ({up_kex} kex), "
              f"down {down_time:.1f}s ({down_kex} kex)")


def test_rekey_started_as_authentication_ends(session_server: Server, user) -> None:
    """The OpenSSH client rekeys only once authenticated: with a tiny
    RekeyLimit its KEXINIT follows USERAUTH_SUCCESS at once, and reaches
    privsep-sshd around the hand-off from net-child to session process."""
    argv, env = ssh_argv(session_server, user, "echo in", options=["RekeyLimit=16"],
                         flags=["-v"])
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == b"in\n"
    assert result.stderr.count(b"SSH2_MSG_KEXINIT received") >= 2


def test_rekey_before_authentication(privsep_session_server: Server, user) -> None:
    """A client that rekeys before it authenticates (the OpenSSH client never
    does; paramiko's can): the net-child runs the key exchange, its host key
    signature comes from the monitor, and the login goes on.  privsep-sshd
    only: Debian's sshd 9.2 answers a KEXINIT before authentication with
    UNIMPLEMENTED (its pre-auth dispatch table has no KEXINIT), and the
    client waits for ever."""
    transport = paramiko.Transport(("127.0.0.1", privsep_session_server.port))
    try:
        transport.start_client(timeout=20)
        first_session_id = transport.session_id
        transport.renegotiate_keys()
        transport.renegotiate_keys()
        assert transport.session_id == first_session_id  # the id of the first exchange stays
        transport.auth_publickey(user.name, paramiko.Ed25519Key.from_private_key_file(
            str(user.key_path)))
        chan = transport.open_session()
        chan.exec_command("echo in")
        assert chan.makefile().read() == b"in\n"
        assert chan.recv_exit_status() == 0
    finally:
        transport.close()


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_no_channel_message_amid_a_key_exchange(server_with, user, kind: str) -> None:
    """The server rekeys every 16 KiB and the client opens its window a KiB
    or a few at a time, so its WINDOW_ADJUSTs, sent before it saw the
    server's KEXINIT, keep arriving amid exchanges.  What the server sends
    for them (a pty's last output, drained as the program exits) must wait
    for the exchange's end (RFC 4253 7.1), in order.  The session process's
    loop sent it at once, as an answer: paramiko's client, which then expects
    nothing but the exchange's messages, ended the connection ("Expecting
    packet from (31,), got 94") and the output was cut."""
    server = server_with("RekeyLimit 16K", kind=kind)
    expected = b"".join(b"%d\r\n" % i for i in range(1, 30001))
    client = paramiko_client(server, user)
    try:
        for window in (1024, 4096) * 2:
            chan = client.get_transport().open_session(window_size=window, max_packet_size=1024)
            chan.get_pty()
            chan.exec_command("seq 1 30000")
            assert chan.makefile().read() == expected
            assert chan.recv_exit_status() == 0
    finally:
        client.close()
