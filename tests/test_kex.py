"""Every key exchange of OpenSSH 9.2 through the stock client (issue 13,
section 2): a login, a command, and a rekey after the hand-off (the session
process runs it, with the same engines); the ones sshd allows only when
configured are refused otherwise, side by side with sshd."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import _serve
from tests.daemon import Server, ssh

#: sshd 9.2's defaults (Debian's list), then mlkem, which 9.2's client lacks.
DEFAULT_KEX = [
    "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com", "curve25519-sha256",
    "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521", "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
]
CONFIGURED_ONLY_KEX = ["diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1",
                       "diffie-hellman-group-exchange-sha1"]
ALLOW_SHA1 = "KexAlgorithms +" + ",".join(CONFIGURED_ONLY_KEX)


@pytest.fixture(scope="module")
def sha1_server(pam_service: str) -> Iterator[Server]:
    """privsep-sshd with the configured-only exchanges allowed."""
    yield from _serve("privsep", [ALLOW_SHA1])


def _login(server: Server, user, kex: str, command: str = "echo kex-ok",
           extra: list[str] = (), input: bytes = b"") -> subprocess.CompletedProcess:
    return ssh(server, user, command, options=[f"KexAlgorithms={kex}", *extra], flags=["-v"],
               input=input, timeout=120)


@pytest.mark.parametrize("kex", DEFAULT_KEX + CONFIGURED_ONLY_KEX)
def test_login_command_and_rekey(sha1_server: Server, user, kex: str) -> None:
    """Login, a command, 3 MB up with RekeyLimit=1M: the session process
    rekeys with the same exchange at least twice; the data arrives whole."""
    data = bytes(range(256)) * (3 * 4096)
    result = _login(sha1_server, user, kex, "sha256sum", extra=["RekeyLimit=1M"], input=data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert f"kex: algorithm: {kex}".encode() in result.stderr
    assert result.stderr.count(b"SSH2_MSG_KEXINIT received") >= 3, result.stderr[-3000:]


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
@pytest.mark.parametrize("configured", [False, True])
@pytest.mark.parametrize("kex", CONFIGURED_ONLY_KEX)
def test_configured_only_side_by_side(server_with, user, kind: str, configured: bool,
                                      kex: str) -> None:
    """Both daemons refuse the SHA-1 exchanges unless configured, and use
    them once configured."""
    server = server_with(*([ALLOW_SHA1] if configured else []), kind=kind)
    result = _login(server, user, kex)
    if configured:
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout == b"kex-ok\n"
    else:
        assert result.returncode == 255
        assert b"no matching key exchange method found" in result.stderr, result.stderr[-2000:]


def test_stock_client_defaults_negotiate_as_with_sshd(server_with, user) -> None:
    """With the client's defaults both daemons give it the same key
    exchange and host key algorithm (sntrup761x25519-sha512, ssh-ed25519)."""
    agreed = []
    for kind in ("privsep", "openssh"):
        result = ssh(server_with(kind=kind), user, "true", flags=["-v"])
        assert result.returncode == 0, result.stderr[-2000:]
        agreed.append([line for line in result.stderr.decode().splitlines()
                       if line.startswith(("debug1: kex: algorithm:",
                                           "debug1: kex: host key algorithm:"))])
    assert agreed[0] == agreed[1] == ["debug1: kex: algorithm: sntrup761x25519-sha512",
                                      "debug1: kex: host key algorithm: ssh-ed25519"]


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
@pytest.mark.parametrize("name", ["sntrup761x25519-sha512@openssh.com", "sntrup761x25519-sha512"])
def test_sntrup761_with_paramiko_as_client(server_with, user, kind: str, name: str) -> None:
    """paramiko with tests/kex_client.py's client side: against sshd (its
    sntrup761 is the reference) and against us, a login, a command, and two
    rekeys it starts itself, after the hand-off.  It offers only ``name``:
    the login proves that exchange."""
    import paramiko

    from tests.kex_client import client_transport
    server = server_with(kind=kind)
    transport = client_transport(server.port, name)
    try:
        transport.start_client(timeout=20)
        first_session_id = transport.session_id
        transport.auth_publickey(user.name, paramiko.Ed25519Key.from_private_key_file(
            str(user.key_path)))
        for _ in range(2):
            transport.renegotiate_keys()
        assert transport.session_id == first_session_id
        chan = transport.open_session()
        chan.exec_command("echo sntrup-ok")
        assert chan.makefile().read() == b"sntrup-ok\n"
        assert chan.recv_exit_status() == 0
    finally:
        transport.close()


class _BadGexRequest:
    """A client group-exchange request with its sizes out of order."""

    def start_kex(self, _test_old_style=False):
        from paramiko.message import Message
        m = Message()
        m.add_byte(bytes([34]))
        for bits in (4096, 3072, 2048):
            m.add_int(bits)
        self.transport._send_message(m)
        self.transport._expect_packet(31)


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_gex_sizes_out_of_order_refused_as_sshd(server_with, kind: str) -> None:
    import paramiko
    from paramiko.kex_gex import KexGexSHA256
    server = server_with(kind=kind)
    name = "diffie-hellman-group-exchange-sha256"
    transport = paramiko.Transport(("127.0.0.1", server.port))
    transport._kex_info = {name: type("BadGex", (_BadGexRequest, KexGexSHA256), {})}
    transport._preferred_kex = (name,)
    try:
        with pytest.raises((paramiko.SSHException, EOFError)):
            transport.start_client(timeout=20)
    finally:
        transport.close()
    import re
    log = server.wait_for_log("DH GEX group out of range")
    assert re.search(r"^ssh_dispatch_run_fatal: Connection from 127\.0\.0\.1 port \d+: "
                     r"DH GEX group out of range \[preauth\]$", log, re.M), log


def test_mlkem768x25519_with_paramiko_as_client(privsep_server: Server, user) -> None:
    """Kept beside 9.2's list (OpenSSH 9.9 and later prefer it; Debian 12's
    client lacks it, paramiko has it): a login, a command and a rekey after
    the hand-off."""
    import paramiko
    transport = paramiko.Transport(("127.0.0.1", privsep_server.port))
    transport.get_security_options().kex = ("mlkem768x25519-sha256",)
    try:
        transport.start_client(timeout=20)
        transport.auth_publickey(user.name, paramiko.Ed25519Key.from_private_key_file(
            str(user.key_path)))
        transport.renegotiate_keys()
        chan = transport.open_session()
        chan.exec_command("echo mlkem-ok")
        assert chan.makefile().read() == b"mlkem-ok\n"
        assert chan.recv_exit_status() == 0
    finally:
        transport.close()



@pytest.mark.parametrize("ciphers, macs, prime_bits, bits", [
    (("aes128-ctr", "aes128-ctr"), ("hmac-sha2-256-etm@openssh.com",) * 2, 8192, 512),
    (("aes256-gcm@openssh.com",) * 2, (None, None), 8192, 512),
    (("aes128-ctr", "aes256-ctr"), ("hmac-sha2-512", "hmac-sha1"), 8192, 1024),
    (("chacha20-poly1305@openssh.com",) * 2, (None, None), 8192, 1024),  # not paramiko's
    (("aes128-ctr",) * 2, ("hmac-sha2-512",) * 2, 1024, 1023),  # group1: below the prime
])
def test_private_exponent_of_sshds_size(ciphers, macs, prime_bits, bits) -> None:
    """Twice the largest key, block, IV or MAC key of the session, at least
    512 bits (sshd's dh_gen_key), from paramiko's own algorithm tables."""
    import types

    import paramiko

    from privsep.child.kex.groups import exponent_bits
    transport = types.SimpleNamespace(
        local_cipher=ciphers[0], remote_cipher=ciphers[1], local_mac=macs[0],
        remote_mac=macs[1], _cipher_info=paramiko.Transport._cipher_info,
        _mac_info=paramiko.Transport._mac_info)
    assert exponent_bits(transport, prime_bits) == bits


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_sntrup761_client_key_of_wrong_size_as_sshd(server_with, kind: str) -> None:
    """A client's sntrup761 key of 100 bytes ends the connection with
    sshd's line (its words for it: "incorrect signature")."""
    import re

    import paramiko

    from tests.kex_client import ClientSntrup761X25519, client_transport

    class ShortKey(ClientSntrup761X25519):
        def _client_init(self) -> bytes:
            return b"\x01" * 100

    server = server_with(kind=kind)
    transport = client_transport(server.port)
    transport._kex_info = {**transport._kex_info, "sntrup761x25519-sha512@openssh.com": ShortKey}
    try:
        with pytest.raises((paramiko.SSHException, EOFError)):
            transport.start_client(timeout=20)
    finally:
        transport.close()
    log = server.wait_for_log("incorrect signature")
    assert re.search(r"^ssh_dispatch_run_fatal: Connection from 127\.0\.0\.1 port \d+: "
                     r"incorrect signature \[preauth\]$", log, re.M), log
