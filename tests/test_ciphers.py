"""Every cipher, MAC and compression (issue 13), through the stock client:
the algorithm the client reports, a login, a command and 16 MB each way
with checksums; the hand-off and rekeys in both directions, started by
either side; configured-only algorithms refused when not configured, side by
side with Debian's sshd; the umac MACs side by side too; another client
implementation (asyncssh) for chacha20-poly1305, delayed compression and umac.

paramiko 5.1 as a client has no chacha20-poly1305, so asyncssh stands in.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess

import asyncssh
import paramiko
import pytest

from privsep.config.algorithms import CONFIGURABLE_ALGORITHMS, SUPPORTED_ALGORITHMS
from tests.daemon import Server, privsep_command, remove_server, ssh, start_server

MB = 1024 * 1024
SIZE = 16 * MB
DATA = os.urandom(SIZE + 17)  # odd-sized: blocks never align with packets
DIGEST = hashlib.sha256(DATA).hexdigest()

CHACHA = "chacha20-poly1305@openssh.com"
#: every configured-only algorithm at once
ALL_ON = [f"Ciphers +{','.join(CONFIGURABLE_ALGORITHMS['ciphers'])}",
          f"MACs +{','.join(CONFIGURABLE_ALGORITHMS['macs'])}"]


@pytest.fixture(scope="module")
def all_on_server(pam_service):
    """privsep-sshd with every configured-only cipher and MAC turned on."""
    server = start_server("privsep", ALL_ON)
    yield server
    remove_server(server)


def negotiated(stderr: bytes) -> dict[str, tuple[str, str, str]]:
    """What ``ssh -v`` says it got, per direction: (cipher, MAC, compression)."""
    found = re.findall(rb"kex: (server->client|client->server) cipher: (\S+) MAC: (\S+) "
                       rb"compression: (\S+)", stderr)
    return {d.decode(): (c.decode(), m.decode(), z.decode()) for d, c, m, z in found}


def round_trip(server: Server, user, options: list[str], flags: list[str] = ()) -> \
        tuple[dict[str, tuple[str, str, str]], bytes, bytes]:
    """Upload DATA, then download it; both checked against DIGEST.  Returns
    what the client negotiated and both runs' stderr (with -v)."""
    target = f"{user.home}/ciphers.bin"
    up = ssh(server, user, f"cat > {target} && sha256sum {target}", input=DATA,
             options=options, flags=["-v", *flags], timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    assert up.stdout.split()[0].decode() == DIGEST
    down = ssh(server, user, f"cat {target}; rm -f {target}", options=options,
               flags=["-v", *flags], timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    assert len(down.stdout) == len(DATA)
    assert hashlib.sha256(down.stdout).hexdigest() == DIGEST
    return negotiated(down.stderr), up.stderr, down.stderr


# --- each algorithm ----------------------------------------------------------------

ALL_CIPHERS = SUPPORTED_ALGORITHMS["ciphers"] + CONFIGURABLE_ALGORITHMS["ciphers"]
ALL_MACS = SUPPORTED_ALGORITHMS["macs"] + CONFIGURABLE_ALGORITHMS["macs"]


@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_each_cipher(all_on_server: Server, user, cipher: str) -> None:
    got, _, _ = round_trip(all_on_server, user, [f"Ciphers={cipher}"])
    mac = "<implicit>" if cipher.endswith(("gcm@openssh.com", "poly1305@openssh.com")) else None
    for direction in ("server->client", "client->server"):
        assert got[direction][0] == cipher
        if mac:
            assert got[direction][1] == mac


@pytest.mark.parametrize("mac", ALL_MACS)
def test_each_mac(all_on_server: Server, user, mac: str) -> None:
    got, _, _ = round_trip(all_on_server, user, ["Ciphers=aes128-ctr", f"MACs={mac}"])
    assert got["server->client"] == ("aes128-ctr", mac, "none")
    assert got["client->server"] == ("aes128-ctr", mac, "none")


@pytest.mark.parametrize("cipher", [CHACHA, "aes256-cbc", "aes128-gcm@openssh.com"])
def test_compression(all_on_server: Server, user, cipher: str) -> None:
    """``ssh -C``: zlib@openssh.com, which starts after authentication, so
    that the session process begins both streams at the hand-off."""
    got, _, down = round_trip(all_on_server, user, [f"Ciphers={cipher}"], flags=["-C"])
    assert got["server->client"][2] == got["client->server"][2] == "zlib@openssh.com"
    assert b"Enabling compression at level 6" in down


# --- the hand-off and rekeys ---------------------------------------------------------

@pytest.fixture(scope="module")
def rekeying_server(pam_service):
    """privsep-sshd that starts a key exchange itself every MiB."""
    server = start_server("privsep", ["RekeyLimit 1M", *ALL_ON])
    yield server
    remove_server(server)


@pytest.mark.parametrize("who", ["client", "server"])
@pytest.mark.parametrize("cipher,flags", [(CHACHA, []), (CHACHA, ["-C"]), ("aes128-cbc", ["-C"])])
def test_rekeys_both_ways(all_on_server: Server, rekeying_server: Server, user, who: str,
                          cipher: str, flags: list[str]) -> None:
    """16 MB each way with a key exchange every MiB, started by the client
    (its RekeyLimit) or by the server (ours): the state carried across the
    hand-off (chacha20's key and sequence numbers, CBC's last block, delayed
    compression starting fresh) goes on through every rekey."""
    server = rekeying_server if who == "server" else all_on_server
    options = [f"Ciphers={cipher}"] + (["RekeyLimit=1M"] if who == "client" else [])
    got, up, down = round_trip(server, user, options, flags=flags)
    assert got["server->client"][0] == cipher
    # about one key exchange per MiB; with who == "server" the client has no
    # RekeyLimit of its own, so every one of them was the server's.  Each
    # one the client starts covers its MiB plus whatever was in flight when
    # its KEXINIT left (up to the 2 MiB window): 16 MB gives 6 to 16 of them
    # (the faster the server sends, the fewer).
    for stderr in (up, down):
        assert stderr.count(b"SSH2_MSG_KEXINIT received") >= 6, stderr[-2000:]


#: OpenSSH's umac MACs (libnettle's UMAC, privsep/child/umac.py)
UMACS = tuple(m for m in SUPPORTED_ALGORITHMS["macs"] if m.startswith("umac-"))


@pytest.mark.parametrize("who", ["client", "server"])
@pytest.mark.parametrize("mac", UMACS)
def test_umac_rekeys_both_ways(all_on_server: Server, rekeying_server: Server, user, who: str,
                               mac: str) -> None:
    """16 MB each way with ``-m MAC``, a key exchange every MiB started by
    either side: the UMAC key crosses the hand-off by name and bytes, and
    each rekey's new key gets a nettle context of its own."""
    server = rekeying_server if who == "server" else all_on_server
    options = ["Ciphers=aes128-ctr"] + (["RekeyLimit=1M"] if who == "client" else [])
    got, up, down = round_trip(server, user, options, flags=["-m", mac])
    assert got["server->client"] == got["client->server"] == ("aes128-ctr", mac, "none")
    # as in test_rekeys_both_ways: each key exchange also covers what was in
    # flight while it ran, so 16 MB gives 6 to 16 of them
    for stderr in (up, down):
        assert stderr.count(b"SSH2_MSG_KEXINIT received") >= 6, stderr[-2000:]


@pytest.mark.parametrize("mac", UMACS)
def test_umac_side_by_side(server_with, user, mac: str) -> None:
    """``ssh -m MAC``: a login and a command on both daemons, which agree on
    what the client got."""
    got = {}
    for kind in ("privsep", "openssh"):
        server = server_with(kind=kind)
        result = ssh(server, user, "echo in", options=["Ciphers=aes256-ctr"],
                     flags=["-v", "-m", mac])
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout == b"in\n"
        got[kind] = negotiated(result.stderr)
    assert got["privsep"] == got["openssh"]
    assert got["privsep"]["client->server"] == ("aes256-ctr", mac, "none")


def test_default_mac_is_sshds(server_with, user) -> None:
    """With a cipher that needs a MAC and the client's default MAC list,
    both daemons choose umac-64-etm@openssh.com, the first of both lists."""
    for kind in ("privsep", "openssh"):
        result = ssh(server_with(kind=kind), user, "true", options=["Ciphers=aes128-ctr"],
                     flags=["-v"])
        assert result.returncode == 0, result.stderr[-2000:]
        assert negotiated(result.stderr)["server->client"][1] == "umac-64-etm@openssh.com", kind


def test_umac_refused_when_removed(server_with, user) -> None:
    """``MACs -umac*`` takes them out, for sshd and for us alike."""
    for kind in ("privsep", "openssh"):
        refused = ssh(server_with("MACs -umac*", kind=kind), user, "true",
                      options=["Ciphers=aes128-ctr", "LogLevel=INFO"],
                      flags=["-m", "umac-64-etm@openssh.com"])
        assert refused.returncode == 255
        assert b"no matching MAC found" in refused.stderr, (kind, refused.stderr)


# --- what is offered, side by side with sshd ----------------------------------------

@pytest.mark.parametrize("kind", ["privsep", "openssh"])
@pytest.mark.parametrize("option,words", [
    ("Ciphers=aes128-cbc", b"no matching cipher found"),
    ("Ciphers=3des-cbc", b"no matching cipher found"),
    ("MACs=hmac-md5", b"no matching MAC found"),
    ("MACs=hmac-sha1-96-etm@openssh.com", b"no matching MAC found"),
])
def test_configured_only_refused_by_default(server_with, user, kind: str, option: str,
                                            words: bytes) -> None:
    server = server_with(kind=kind)
    options = [option, "LogLevel=INFO"] + (["Ciphers=aes128-ctr"] if option[0] == "M" else [])
    refused = ssh(server, user, "true", options=options)
    assert refused.returncode == 255
    assert words in refused.stderr, refused.stderr


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_no_mac_negotiated_for_aead(server_with, user, kind: str) -> None:
    """With chacha20-poly1305 or GCM the MAC lists need nothing in common."""
    server = server_with("MACs hmac-sha2-512", kind=kind)
    result = ssh(server, user, "echo in", options=["MACs=hmac-sha2-256"], flags=["-v"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == b"in\n"
    assert negotiated(result.stderr)["server->client"][:2] == (CHACHA, "<implicit>")


@pytest.mark.parametrize("setting", ["yes", "delayed", "no"])
def test_compression_keyword_side_by_side(server_with, user, setting: str) -> None:
    """``Compression`` as sshd 9.2 takes it: yes and delayed both offer
    zlib@openssh.com (sshd -T prints "yes"), no offers none; ``ssh -C`` gets
    the same from both daemons."""
    got = {}
    for kind in ("privsep", "openssh"):
        server = server_with(f"Compression {setting}", kind=kind)
        result = ssh(server, user, "echo in", flags=["-v", "-C"])
        assert result.returncode == 0, result.stderr[-2000:]
        got[kind] = negotiated(result.stderr)["server->client"][2]
    assert got["privsep"] == got["openssh"] == ("none" if setting == "no" else "zlib@openssh.com")


@pytest.mark.parametrize("kind", ["privsep", "openssh"])
def test_plain_zlib_not_offered(server_with, user, kind: str) -> None:
    """sshd 9.2 has no compression before authentication: a client that
    wants only "zlib" is refused by both daemons (paramiko as the client)."""
    server = server_with(kind=kind)
    transport = paramiko.Transport(("127.0.0.1", server.port))
    transport.get_security_options().compression = ("zlib",)
    try:
        with pytest.raises(paramiko.SSHException, match="compression"):
            transport.start_client(timeout=20)
    finally:
        transport.close()


# --- another client: asyncssh (paramiko 5.1 has no chacha20-poly1305) ------------

@pytest.mark.parametrize("mac", UMACS)
def test_asyncssh_umac(all_on_server: Server, user, mac: str) -> None:
    """asyncssh's UMAC (its own binding to nettle) with ours, both ways."""
    async def run() -> tuple[str, str, bytes]:
        async with asyncssh.connect(
                "127.0.0.1", all_on_server.port, username=user.name,
                client_keys=[str(user.key_path)], known_hosts=None,
                encryption_algs=["aes128-ctr"], mac_algs=[mac]) as conn:
            up = await conn.run("sha256sum", input=DATA, encoding=None, check=True)
            down = await conn.run(f"head -c {SIZE} /dev/zero", encoding=None, check=True)
            return conn.get_extra_info("send_mac"), up.stdout.split()[0].decode(), down.stdout
    got, digest, zeros = asyncio.run(run())
    assert got == mac
    assert digest == DIGEST
    assert zeros == bytes(SIZE)


def test_no_libnettle_no_start(tmp_path) -> None:
    """Without libnettle (hidden by an empty file bound over it, in a mount
    namespace of this test's own) the daemon says so and does not start,
    rather than failing each connection that picks a umac MAC."""
    library = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True,
                             check=True).stdout
    path = re.search(r"libnettle\.so\.8 \(libc6,x86-64\) => (\S+)", library).group(1)
    key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {key}\nPort 1\nListenAddress 127.0.0.1\n"
                      f"PidFile {tmp_path}/pid\n")
    script = f'mount --bind /dev/null {path} && exec "$@"'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *privsep_command(),
                             "-D", "-e", "-f", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 255, result.stderr
    assert "fatal: cannot load libnettle.so.8 for the umac MACs" in result.stderr
    assert "libnettle8" in result.stderr


def test_asyncssh_chacha_and_compression(all_on_server: Server, user) -> None:
    async def run() -> tuple[str, str, str, bytes]:
        async with asyncssh.connect(
                "127.0.0.1", all_on_server.port, username=user.name,
                client_keys=[str(user.key_path)], known_hosts=None,
                encryption_algs=[CHACHA], compression_algs=["zlib@openssh.com"]) as conn:
            up = await conn.run("sha256sum", input=DATA, encoding=None, check=True)
            down = await conn.run(f"head -c {SIZE} /dev/zero", encoding=None, check=True)
            return (conn.get_extra_info("send_cipher"), conn.get_extra_info("send_compression"),
                    up.stdout.split()[0].decode(), down.stdout)
    cipher, compression, digest, zeros = asyncio.run(run())
    assert (cipher, compression) == (CHACHA, "zlib@openssh.com")
    assert digest == DIGEST
    assert zeros == bytes(SIZE)
