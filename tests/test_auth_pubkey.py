"""Tests for public-key authentication in the monitor: authorized_keys and
StrictModes (privsep/monitor/authorized_keys.py), key options
(privsep/wire/keyoptions.py), signatures (privsep/monitor/pubkey.py,
privsep/wire/userauth.py) and the uid switch (privsep/common/ids.py).

Real keys from ssh-keygen, real signatures from paramiko's private-key
classes, real files and real uid switches (root-only tests skip otherwise).
No mocks.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from privsep.common import ids
from privsep.monitor import authorized_keys, pubkey
from privsep.wire import keyoptions, userauth
from privsep.wire.sshbuf import Reader, Writer

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root")

FAKE_UID = 54321
FAKE_GID = 54321


# ---------------------------------------------------------------------------
# Keys made by ssh-keygen
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    keytype: str
    pubfile: Path
    publine: str
    blob: bytes
    private: paramiko.PKey


_PRIVATE_CLASSES = {
    "ed25519": paramiko.Ed25519Key,
    "ecdsa": paramiko.ECDSAKey,
    "rsa": paramiko.RSAKey,
}


def _keygen(directory: Path, name: str, kind: str, bits: int | None, comment: str) -> KeyPair:
    path = directory / name
    cmd = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)]
    if bits:
        cmd[4:4] = ["-b", str(bits)]
    subprocess.run(cmd, check=True)
    publine = (directory / (name + ".pub")).read_text().strip()
    keytype, b64 = publine.split()[:2]
    private = _PRIVATE_CLASSES[kind].from_private_key_file(str(path))
    blob = base64.b64decode(b64)
    assert private.asbytes() == blob
    return KeyPair(keytype, directory / (name + ".pub"), publine, blob, private)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    d = tmp_path_factory.mktemp("keys")
    specs = {
        "ed25519": ("ed25519", None, "alice@laptop with spaces"),
        "ed25519-other": ("ed25519", None, "mallory"),
        "ecdsa256": ("ecdsa", 256, "ec256"),
        "ecdsa384": ("ecdsa", 384, "ec384"),
        "ecdsa521": ("ecdsa", 521, "ec521"),
        "rsa": ("rsa", 2048, "rsa key"),
        "rsa-other": ("rsa", 2048, "other rsa"),
    }
    return {
        name: _keygen(d, name, kind, bits, comment)
        for name, (kind, bits, comment) in specs.items()
    }


# ---------------------------------------------------------------------------
# SSH wire helpers for building test data
# ---------------------------------------------------------------------------


def sshstr(data: bytes | str) -> bytes:
    w = Writer()
    return bytes(w.text(data) if isinstance(data, str) else w.string(data))


def mpint(value: int) -> bytes:
    return bytes(Writer().mpint(value))


def userauth_blob(
    session_id: bytes,
    user: bytes | str,
    algorithm: str,
    keyblob: bytes,
    *,
    service: str = "ssh-connection",
    method: str = "publickey",
    msg_type: int = 50,
    flag: int = 1,
) -> bytes:
    return (
        sshstr(session_id)
        + bytes([msg_type])
        + sshstr(user)
        + sshstr(service)
        + sshstr(method)
        + bytes([flag])
        + sshstr(algorithm)
        + sshstr(keyblob)
    )


def sign(pair: KeyPair, data: bytes, algorithm: str | None = None) -> bytes:
    return pair.private.sign_ssh_data(data, algorithm).asbytes()


SESSION_ID = bytes(range(32))


# ---------------------------------------------------------------------------
# parse_authorized_keys
# ---------------------------------------------------------------------------


def test_parse_keys_comments_blank_lines(keys: dict[str, KeyPair]) -> None:
    text = "\n".join(
        [
            "# a comment line",
            "",
            "   ",
            "  " + keys["ed25519"].publine,  # leading blanks are fine
            "\t# indented comment",
            keys["ecdsa384"].publine + "\r",  # CRLF file
            keys["rsa"].publine,
            "",
        ]
    )
    parsed, problems = authorized_keys.parse_authorized_keys(text)
    assert problems == []
    assert [k.keytype for k in parsed] == ["ssh-ed25519", "ecdsa-sha2-nistp384", "ssh-rsa"]
    assert [k.lineno for k in parsed] == [4, 6, 7]
    assert parsed[0].blob == keys["ed25519"].blob
    assert parsed[0].comment == "alice@laptop with spaces"
    assert parsed[1].comment == "ec384"
    assert parsed[2].comment == "rsa key"
    assert all(k.options == () for k in parsed)


def test_parse_key_without_comment(keys: dict[str, KeyPair]) -> None:
    line = " ".join(keys["ecdsa256"].publine.split()[:2])
    (key,), problems = authorized_keys.parse_authorized_keys(line)
    assert problems == [] and key.comment == ""


def test_options_with_quoted_commas_and_escapes(keys: dict[str, KeyPair]) -> None:
    line = (
        'command="echo \\"a, b\\", c",From="10.0.0.1,192.168.*",no-pty,'
        'No-Agent-Forwarding,environment="GREETING=hello world",restrict '
        + keys["ed25519"].publine
    )
    (key,), problems = authorized_keys.parse_authorized_keys(line)
    assert problems == []
    assert key.options == (
        keyoptions.KeyOption("command", 'echo "a, b", c'),
        keyoptions.KeyOption("from", "10.0.0.1,192.168.*"),
        keyoptions.KeyOption("no-pty", None),
        keyoptions.KeyOption("no-agent-forwarding", None),
        keyoptions.KeyOption("environment", "GREETING=hello world"),
        keyoptions.KeyOption("restrict", None),
    )
    assert key.option("command") == keyoptions.KeyOption("command", 'echo "a, b", c')
    assert key.comment == "alice@laptop with spaces"
    assert key.blob == keys["ed25519"].blob


def test_backslash_not_before_quote_is_literal(keys: dict[str, KeyPair]) -> None:
    (key,), _ = authorized_keys.parse_authorized_keys(
        'command="printf a\\\\nb" ' + keys["ed25519"].publine
    )
    assert key.options == (keyoptions.KeyOption("command", "printf a\\\\nb"),)


@pytest.mark.parametrize(
    "options",
    [
        "no-port-forwarding,no-agent-forwarding,no-x11-forwarding,no-user-rc",
        "port-forwarding,agent-forwarding,x11-forwarding,pty,user-rc",
        "restrict,pty",
        "cert-authority",
        "no-touch-required,verify-required",
        "touch-required,no-verify-required",
        'permitopen="localhost:22",permitopen="[::1]:*",permitopen="db/5432"',
        'permitlisten="8080",permitlisten="localhost:9000"',
        'expiry-time="20301231",expiry-time="203012312359Z"',
        'principals="alice,bob"',
        'tunnel="any"',
        'tunnel="4"',
        'environment="A_1="',
    ],
)
def test_known_options_accepted(keys: dict[str, KeyPair], options: str) -> None:
    (key,), problems = authorized_keys.parse_authorized_keys(f"{options} {keys['rsa'].publine}")
    assert problems == []
    assert len(key.options) == options.count(",") - _commas_in_quotes(options) + 1


def _commas_in_quotes(text: str) -> int:
    inside, count = False, 0
    for char in text:
        if char == '"':
            inside = not inside
        elif char == "," and inside:
            count += 1
    return count


@pytest.mark.parametrize(
    "options, reason",
    [
        ("no-pty,frobnicate", "unknown key option 'frobnicate'"),
        ("Bogus", "unknown key option 'Bogus'"),
        ("no-restrict", "unknown key option 'no-restrict'"),
        ('no-pty="yes"', "option 'no-pty' takes no value"),
        ("command=ls", "missing start quote"),
        ("command", "option 'command' needs a value"),
        ('command="ls', "unterminated quote in options"),
        ('command="a",command="b"', 'multiple "command" clauses'),
        ('from="a",from="b"', 'multiple "from" clauses'),
        ("no-pty,", "unexpected end-of-options"),
        ('command="ls"x', "unexpected text after option 'command'"),
        ('environment="NOEQUALS"', "invalid environment string"),
        ('environment="BAD-NAME=1"', "invalid environment string"),
        ('permitopen="nohostport"', "invalid permission port"),
        ('permitopen="host:0"', "invalid permission port"),
        ('permitopen="host:99999"', "invalid permission port"),
        ('expiry-time="2030"', "invalid expires time"),
        ('expiry-time="20301345"', "invalid expires time"),
        ('tunnel="eth0"', "invalid tun device"),
    ],
)
def test_bad_options_invalidate_line(
    keys: dict[str, KeyPair], options: str, reason: str
) -> None:
    text = f"{options} {keys['ed25519'].publine}\n{keys['ecdsa256'].publine}"
    parsed, problems = authorized_keys.parse_authorized_keys(text)
    # The bad line is dropped, the next one still counts.
    assert [k.lineno for k in parsed] == [2]
    assert problems == [f"line 1: {reason}"]


def test_bad_key_lines(keys: dict[str, KeyPair]) -> None:
    ed_b64 = keys["ed25519"].publine.split()[1]
    rsa_b64 = keys["rsa"].publine.split()[1]
    blob_with_tail = base64.b64encode(keys["ed25519"].blob + b"\0").decode()
    lines = [
        f"ssh-ed25519 {ed_b64[:-3]}!!! bad base64",  # 1
        f"ssh-rsa {ed_b64} type mismatch",  # 2
        f"ssh-ed25519 {rsa_b64}",  # 3
        f"sk-ssh-ed25519@openssh.com {ed_b64}",  # 4
        f"ssh-dss {ed_b64}",  # 5
        "ssh-ed25519",  # 6
        "no-pty",  # 7
        f"ssh-ed25519 {blob_with_tail}",  # 8
        f"ssh-ed25519 {ed_b64[:-4]}",  # 9: cut at a base64 boundary
        f"ssh-ed25519 {ed_b64[:-1]}",  # 10: bad padding
    ]
    parsed, problems = authorized_keys.parse_authorized_keys("\n".join(lines))
    assert parsed == []
    assert problems[0] == "line 1: bad base64 key data"
    assert problems[1] == "line 2: key type mismatch: line says ssh-rsa, key is ssh-ed25519"
    assert problems[2] == "line 3: key type mismatch: line says ssh-ed25519, key is ssh-rsa"
    # security keys are supported (issue 14): this one is only mislabelled
    assert problems[3] == ("line 4: key type mismatch: line says sk-ssh-ed25519@openssh.com, "
                           "key is ssh-ed25519")
    assert problems[4] == "line 5: key type mismatch: line says ssh-dss, key is ssh-ed25519"
    assert problems[5] == "line 6: missing key data"
    assert problems[6] == "line 7: no key"
    assert problems[7].startswith("line 8: bad key")
    assert problems[8].startswith("line 9: bad key")
    assert problems[9] == "line 10: bad base64 key data"
    assert len(problems) == 10


def test_unknown_key_type_after_options(keys: dict[str, KeyPair]) -> None:
    ed_b64 = keys["ed25519"].publine.split()[1]
    _, problems = authorized_keys.parse_authorized_keys(f"no-pty ssh-foo {ed_b64}")
    assert problems == ["line 1: unknown key type 'ssh-foo'"]


def test_small_rsa_key_refused() -> None:
    n = (1 << 767) | 0xFFFF  # 768-bit odd modulus: shape is all that matters
    blob = sshstr("ssh-rsa") + mpint(65537) + mpint(n)
    line = "ssh-rsa " + base64.b64encode(blob).decode()
    parsed, problems = authorized_keys.parse_authorized_keys(line)
    assert parsed == []
    assert problems == ["line 1: bad key: RSA key of 768 bits is below the 1024-bit minimum"]


def test_non_utf8_line_reported(keys: dict[str, KeyPair]) -> None:
    raw = b'command="\xff" ' + keys["ed25519"].publine.encode()
    raw += b"\n" + keys["rsa"].publine.encode()
    parsed, problems = authorized_keys.parse_authorized_keys(raw.decode("utf-8", "surrogateescape"))
    assert [k.lineno for k in parsed] == [2]
    assert problems == ["line 1: not valid UTF-8"]


# ---------------------------------------------------------------------------
# AuthorizedKeysFile templates
# ---------------------------------------------------------------------------


def make_pw(name: str, uid: int, gid: int, home: str | Path) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, gid, "", str(home), "/bin/sh"))


def test_expand_authorized_keys_path() -> None:
    pw = make_pw("alice", 1001, 1001, "/home/alice")
    assert authorized_keys.expand_authorized_keys_path(".ssh/authorized_keys", pw) == (
        "/home/alice/.ssh/authorized_keys"
    )
    assert authorized_keys.expand_authorized_keys_path("/etc/ssh/keys/%u", pw) == "/etc/ssh/keys/alice"
    assert authorized_keys.expand_authorized_keys_path("%h/k_%U_%%", pw) == "/home/alice/k_1001_%"
    assert authorized_keys.expand_authorized_keys_path("k/%u", make_pw("r", 0, 0, "/")) == "/k/r"
    for bad in ("%x/keys", "keys%"):
        with pytest.raises(ValueError):
            authorized_keys.expand_authorized_keys_path(bad, pw)


def test_split_authorized_keys_files() -> None:
    assert authorized_keys.split_authorized_keys_files() == [".ssh/authorized_keys", ".ssh/authorized_keys2"]
    assert authorized_keys.split_authorized_keys_files("  /etc/k/%u\t.ssh/ak ") == ["/etc/k/%u", ".ssh/ak"]
    assert authorized_keys.split_authorized_keys_files("none") == []
    assert authorized_keys.split_authorized_keys_files("NONE .ssh/ak") == [".ssh/ak"]


# ---------------------------------------------------------------------------
# StrictModes
# ---------------------------------------------------------------------------


@dataclass
class Home:
    pw: pwd.struct_passwd
    home: Path
    sshdir: Path
    keyfile: Path


def build_home(base: Path, uid: int, gid: int, content: str = "", name: str = "") -> Home:
    """home 0755, .ssh 0700, .ssh/authorized_keys 0600, all owned by uid:gid."""
    home = base / "home"
    sshdir = home / ".ssh"
    sshdir.mkdir(parents=True)
    keyfile = sshdir / "authorized_keys"
    keyfile.write_text(content)
    home.chmod(0o755)
    sshdir.chmod(0o700)
    keyfile.chmod(0o600)
    for p in (home, sshdir, keyfile):
        if (os.stat(p).st_uid, os.stat(p).st_gid) != (uid, gid):
            os.chown(p, uid, gid)
    name = name or pwd.getpwuid(os.getuid()).pw_name
    return Home(make_pw(name, uid, gid, home), home, sshdir, keyfile)


@pytest.fixture
def own_home(tmp_path: Path) -> Home:
    """A home for the user running the tests."""
    return build_home(tmp_path, os.getuid(), os.getgid())


def test_strict_modes_good(own_home: Home) -> None:
    assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, True) is None
    own_home.keyfile.chmod(0o644)
    own_home.sshdir.chmod(0o755)
    assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, True) is None


def test_strict_modes_group_writable_file(own_home: Home) -> None:
    own_home.keyfile.chmod(0o620)
    assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, True) == (
        f"bad ownership or modes for file {own_home.keyfile}"
    )
    assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, False) is None


def test_strict_modes_world_writable_sshdir(own_home: Home) -> None:
    own_home.sshdir.chmod(0o777)
    assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, True) == (
        f"bad ownership or modes for directory {own_home.sshdir}"
    )


def test_strict_modes_home_writable_by_others(own_home: Home) -> None:
    own_home.home.chmod(0o757)
    assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, True) == (
        f"bad ownership or modes for directory {own_home.home}"
    )
    own_home.home.chmod(0o775)
    assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, True) == (
        f"bad ownership or modes for directory {own_home.home}"
    )


def test_strict_modes_stop_at_home(own_home: Home, tmp_path: Path) -> None:
    """OpenSSH stops after the home directory: what is above it does not matter."""
    tmp_path.chmod(0o777)
    try:
        assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, True) is None
    finally:
        tmp_path.chmod(0o700)


def test_strict_modes_outside_home_checked_up_to_root(own_home: Home, tmp_path: Path) -> None:
    """A file outside the home directory has every directory up to / checked."""
    outside = tmp_path / "etc-keys"
    outside.mkdir(mode=0o755)
    keyfile = outside / "alice"
    keyfile.write_text("")
    keyfile.chmod(0o644)
    tmp_path.chmod(0o777)
    try:
        assert authorized_keys.check_secure_path(str(keyfile), own_home.pw, True) == (
            f"bad ownership or modes for directory {os.path.realpath(tmp_path)}"
        )
    finally:
        tmp_path.chmod(0o700)


def test_strict_modes_canonical_paths(own_home: Home, tmp_path: Path) -> None:
    """Paths are resolved first: a symlinked home still stops the walk at home."""
    link = tmp_path / "home-link"
    link.symlink_to(own_home.home)
    pw = make_pw(own_home.pw.pw_name, own_home.pw.pw_uid, own_home.pw.pw_gid, link)
    tmp_path.chmod(0o777)
    try:
        assert authorized_keys.check_secure_path(f"{link}/.ssh/authorized_keys", pw, True) is None
        own_home.keyfile.chmod(0o666)
        assert authorized_keys.check_secure_path(f"{link}/.ssh/authorized_keys", pw, True) == (
            f"bad ownership or modes for file {own_home.keyfile}"
        )
    finally:
        tmp_path.chmod(0o700)


def test_strict_modes_not_regular_or_missing(own_home: Home) -> None:
    assert authorized_keys.check_secure_path(str(own_home.sshdir), own_home.pw, True) == (
        f"{own_home.sshdir} is not a regular file"
    )
    missing = own_home.sshdir / "nope"
    assert authorized_keys.check_secure_path(str(missing), own_home.pw, True) == (
        f"cannot stat file {missing}: No such file or directory"
    )


@root_only
def test_strict_modes_file_owned_by_another_uid(own_home: Home) -> None:
    os.chown(own_home.keyfile, FAKE_UID, FAKE_GID)
    assert authorized_keys.check_secure_path(str(own_home.keyfile), own_home.pw, True) == (
        f"bad ownership or modes for file {own_home.keyfile}"
    )


@root_only
def test_strict_modes_root_owned_is_fine(tmp_path: Path) -> None:
    h = build_home(tmp_path, FAKE_UID, FAKE_GID)
    os.chown(h.keyfile, 0, 0)
    os.chown(h.sshdir, 0, 0)
    assert authorized_keys.check_secure_path(str(h.keyfile), h.pw, True) is None
    os.chown(h.sshdir, FAKE_UID + 1, FAKE_GID)
    assert authorized_keys.check_secure_path(str(h.keyfile), h.pw, True) == (
        f"bad ownership or modes for directory {h.sshdir}"
    )


# ---------------------------------------------------------------------------
# read_authorized_keys
# ---------------------------------------------------------------------------


def test_read_default_files(own_home: Home, keys: dict[str, KeyPair]) -> None:
    own_home.keyfile.write_text(keys["ed25519"].publine + "\nbogus line\n")
    second = own_home.sshdir / "authorized_keys2"
    second.write_text("# nothing\n" + keys["rsa"].publine + "\n")
    second.chmod(0o600)
    found, problems = authorized_keys.read_authorized_keys(
        own_home.pw, authorized_keys.split_authorized_keys_files(), strict_modes=True
    )
    assert [(k.keytype, k.source, k.lineno) for k in found] == [
        ("ssh-ed25519", str(own_home.keyfile), 1),
        ("ssh-rsa", str(second), 2),
    ]
    assert problems == [f"{own_home.keyfile}: line 2: unknown key option 'bogus'"]


def test_read_missing_file_is_quiet(own_home: Home) -> None:
    own_home.keyfile.unlink()
    assert authorized_keys.read_authorized_keys(own_home.pw, [".ssh/authorized_keys", "none"], True) == ([], [])


def test_read_refused_by_strict_modes(own_home: Home, keys: dict[str, KeyPair]) -> None:
    own_home.keyfile.write_text(keys["ed25519"].publine + "\n")
    own_home.sshdir.chmod(0o770)
    found, problems = authorized_keys.read_authorized_keys(own_home.pw, [".ssh/authorized_keys"], True)
    assert found == []
    assert problems == [
        f"bad ownership or modes for directory {own_home.sshdir}"
    ]
    found, problems = authorized_keys.read_authorized_keys(own_home.pw, [".ssh/authorized_keys"], False)
    assert [k.blob for k in found] == [keys["ed25519"].blob] and problems == []


def test_read_fifo_is_not_a_regular_file(own_home: Home) -> None:
    own_home.keyfile.unlink()
    os.mkfifo(own_home.keyfile, 0o600)
    found, problems = authorized_keys.read_authorized_keys(own_home.pw, [".ssh/authorized_keys"], False)
    assert found == []
    assert problems == [
        f"User '{own_home.pw.pw_name}' authorized keys '{own_home.keyfile}' "
        "is not a regular file"
    ]


def test_read_stops_at_one_mib(own_home: Home, keys: dict[str, KeyPair]) -> None:
    first = keys["ed25519"].publine + "\n"
    filler = "#" * 99 + "\n"
    body = first + filler * ((authorized_keys.MAX_AUTHORIZED_KEYS_BYTES - len(first)) // len(filler))
    body = body + "#" * (authorized_keys.MAX_AUTHORIZED_KEYS_BYTES - len(body) - 10) + "\n"
    # This key line straddles the limit and must not be used, even cut short.
    body += keys["rsa"].publine + "\n" + keys["ecdsa256"].publine + "\n"
    own_home.keyfile.write_text(body)
    found, problems = authorized_keys.read_authorized_keys(own_home.pw, [".ssh/authorized_keys"], True)
    assert [k.keytype for k in found] == ["ssh-ed25519"]
    assert problems == [
        f"{own_home.keyfile}: longer than 1048576 bytes, the rest is ignored"
    ]


def test_read_bad_template(own_home: Home) -> None:
    found, problems = authorized_keys.read_authorized_keys(own_home.pw, ["%z"], True)
    assert found == [] and problems == ["unknown escape %z in '%z'"]


@pytest.fixture
def fake_user_home(keys: dict[str, KeyPair]):
    """A home under /tmp owned by an unused uid, with files of three kinds.

    .ssh/authorized_keys   fake:fake 0600, readable by the user
    .ssh/root_only         root:root 0600 (StrictModes fine, user can't read)
    .ssh/root_group        root:root 0640 (only root's groups could read it)
    """
    base = Path(tempfile.mkdtemp(prefix="authpubkey-", dir="/tmp"))
    base.chmod(0o755)
    h = build_home(base, FAKE_UID, FAKE_GID, keys["ed25519"].publine + "\n", name="fake")
    for name, mode, pair in (("root_only", 0o600, "rsa"), ("root_group", 0o640, "ecdsa256")):
        p = h.sshdir / name
        p.write_text(keys[pair].publine + "\n")
        p.chmod(mode)
    yield h
    shutil.rmtree(base)


@root_only
def test_read_with_users_rights(fake_user_home: Home, keys: dict[str, KeyPair]) -> None:
    h = fake_user_home
    assert h.pw.pw_uid == FAKE_UID
    # Give the monitor root's group as a supplementary group, so that a
    # switch that forgot setgroups() would let the user read root_group.
    original_groups = os.getgroups()
    os.setgroups([0, 4])
    try:
        found, problems = authorized_keys.read_authorized_keys(
            h.pw, [".ssh/authorized_keys", ".ssh/root_only", ".ssh/root_group"], True
        )
        assert sorted(os.getgroups()) == [0, 4]
    finally:
        os.setgroups(original_groups)
    assert [k.blob for k in found] == [keys["ed25519"].blob]
    assert problems == [
        f"Could not open user 'fake' authorized keys '{h.sshdir}/root_only': "
        "Permission denied",
        f"Could not open user 'fake' authorized keys '{h.sshdir}/root_group': "
        "Permission denied",
    ]
    assert (os.geteuid(), os.getegid(), os.getuid(), os.getgid()) == (0, 0, 0, 0)
    # Root itself reads every one of them: the refusals came from the switch.
    os.close(os.open(h.sshdir / "root_only", os.O_RDONLY))


@root_only
def test_read_with_users_rights_strict_modes_as_user(fake_user_home: Home) -> None:
    """StrictModes runs with the user's rights too: an untraversable home refuses."""
    h = fake_user_home
    os.chown(h.home, 0, 0)
    h.home.chmod(0o700)
    found, problems = authorized_keys.read_authorized_keys(h.pw, [".ssh/authorized_keys"], True)
    assert found == []
    assert problems == [
        f"Could not open user 'fake' authorized keys '{h.keyfile}': Permission denied"
    ]
    assert (os.geteuid(), os.getegid()) == (0, 0)


@root_only
def test_user_rights_restores_after_exception(fake_user_home: Home) -> None:
    groups_before = sorted(os.getgroups())
    with pytest.raises(KeyError):
        with ids.user_rights(fake_user_home.pw):
            assert (os.geteuid(), os.getegid()) == (FAKE_UID, FAKE_GID)
            assert os.getgroups() == [FAKE_GID]
            assert os.getuid() == 0  # the real uid stays root
            raise KeyError("boom")
    assert (os.geteuid(), os.getegid()) == (0, 0)
    assert sorted(os.getgroups()) == groups_before


@root_only
def test_user_rights_refuses_threads(fake_user_home: Home) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        with pytest.raises(RuntimeError):
            with ids.user_rights(fake_user_home.pw):
                pass
    finally:
        stop.set()
        worker.join()
    assert os.geteuid() == 0


# ---------------------------------------------------------------------------
# find_key
# ---------------------------------------------------------------------------


@pytest.fixture
def authorized(keys: dict[str, KeyPair]) -> list[authorized_keys.AuthorizedKey]:
    text = "\n".join(
        [
            'command="true" ' + keys["ed25519"].publine,
            keys["ed25519"].publine,  # a later duplicate never wins
            keys["ecdsa256"].publine,
            keys["ecdsa521"].publine,
            keys["rsa"].publine,
            "cert-authority " + keys["rsa-other"].publine,
        ]
    )
    parsed, problems = authorized_keys.parse_authorized_keys(text)
    assert problems == []
    return parsed


def test_find_key_exact_match(
    keys: dict[str, KeyPair], authorized: list[authorized_keys.AuthorizedKey]
) -> None:
    key = authorized_keys.find_key(authorized, "ssh-ed25519", keys["ed25519"].blob)
    assert key is not None and key.lineno == 1 and key.option("command").value == "true"
    assert authorized_keys.find_key(authorized, "ecdsa-sha2-nistp256", keys["ecdsa256"].blob).lineno == 3
    assert authorized_keys.find_key(authorized, "ecdsa-sha2-nistp521", keys["ecdsa521"].blob).lineno == 4
    for algorithm in ("rsa-sha2-256", "rsa-sha2-512"):
        assert authorized_keys.find_key(authorized, algorithm, keys["rsa"].blob).lineno == 5


def test_find_key_refusals(keys: dict[str, KeyPair], authorized: list[authorized_keys.AuthorizedKey]) -> None:
    # RSA with SHA-1 is not accepted, as in OpenSSH 9.2's defaults.
    assert authorized_keys.find_key(authorized, "ssh-rsa", keys["rsa"].blob) is None
    # The algorithm must fit the key.
    assert authorized_keys.find_key(authorized, "ssh-ed25519", keys["rsa"].blob) is None
    assert authorized_keys.find_key(authorized, "rsa-sha2-256", keys["ed25519"].blob) is None
    assert authorized_keys.find_key(authorized, "ecdsa-sha2-nistp384", keys["ecdsa256"].blob) is None
    # Unknown key, a key not listed, a prefix of a listed blob.
    assert authorized_keys.find_key(authorized, "ecdsa-sha2-nistp384", keys["ecdsa384"].blob) is None
    assert authorized_keys.find_key(authorized, "ssh-ed25519", keys["ed25519"].blob[:-1]) is None
    # A CA line is not a login key.
    assert authorized_keys.find_key(authorized, "rsa-sha2-512", keys["rsa-other"].blob) is None


# ---------------------------------------------------------------------------
# parse_signed_userauth
# ---------------------------------------------------------------------------


def test_parse_signed_userauth_good(keys: dict[str, KeyPair]) -> None:
    data = userauth_blob(SESSION_ID, "alice", "ssh-ed25519", keys["ed25519"].blob)
    assert userauth.parse_signed_userauth(data) == userauth.SignedUserauth(
        session_id=SESSION_ID,
        msg_type=50,
        user="alice",
        service="ssh-connection",
        method="publickey",
        has_signature=True,
        algorithm="ssh-ed25519",
        keyblob=keys["ed25519"].blob,
    )
    other = userauth.parse_signed_userauth(
        userauth_blob(b"", "bob", "x", b"", service="s", method="none", msg_type=7, flag=0)
    )
    assert (other.session_id, other.msg_type, other.has_signature) == (b"", 7, False)


def test_parse_signed_userauth_truncated(keys: dict[str, KeyPair]) -> None:
    data = userauth_blob(SESSION_ID, "alice", "ssh-ed25519", keys["ed25519"].blob)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            userauth.parse_signed_userauth(data[:cut])


def test_parse_signed_userauth_trailing_garbage(keys: dict[str, KeyPair]) -> None:
    data = userauth_blob(SESSION_ID, "alice", "ssh-ed25519", keys["ed25519"].blob)
    with pytest.raises(ValueError, match="trailing"):
        userauth.parse_signed_userauth(data + b"\0")


def test_parse_signed_userauth_overlong_lengths(keys: dict[str, KeyPair]) -> None:
    good = userauth_blob(SESSION_ID, "alice", "ssh-ed25519", keys["ed25519"].blob)
    with pytest.raises(ValueError):
        userauth.parse_signed_userauth(b"\xff\xff\xff\xff" + good[4:])
    # The key blob's length claims one byte more than there is.
    tail = sshstr(keys["ed25519"].blob)
    blob = keys["ed25519"].blob
    bad = good[: -len(tail)] + bytes(Writer().uint32(len(blob) + 1).raw(blob))
    with pytest.raises(ValueError):
        userauth.parse_signed_userauth(bad)


@pytest.mark.parametrize("user", [b"al\xffice", b"ali\0ce"])
def test_parse_signed_userauth_bad_names(keys: dict[str, KeyPair], user: bytes) -> None:
    with pytest.raises(ValueError):
        userauth.parse_signed_userauth(
            userauth_blob(SESSION_ID, user, "ssh-ed25519", keys["ed25519"].blob)
        )


# ---------------------------------------------------------------------------
# verify_userauth_signature
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, algorithm",
    [
        ("ed25519", "ssh-ed25519"),
        ("ecdsa256", "ecdsa-sha2-nistp256"),
        ("ecdsa384", "ecdsa-sha2-nistp384"),
        ("ecdsa521", "ecdsa-sha2-nistp521"),
        ("rsa", "rsa-sha2-256"),
        ("rsa", "rsa-sha2-512"),
    ],
)
def test_verify_good_signature(keys: dict[str, KeyPair], name: str, algorithm: str) -> None:
    pair = keys[name]
    data = userauth_blob(SESSION_ID, "alice", algorithm, pair.blob)
    signature = sign(pair, data, algorithm)
    assert pubkey.verify_userauth_signature(algorithm, pair.blob, data, signature) is True
    # ... and the very same signature fails over other data.
    other = userauth_blob(SESSION_ID, "root", algorithm, pair.blob)
    assert pubkey.verify_userauth_signature(algorithm, pair.blob, other, signature) is False


def test_signed_userauth_end_to_end(
    keys: dict[str, KeyPair], authorized: list[authorized_keys.AuthorizedKey]
) -> None:
    """What the monitor does with a key-verify request, in order."""
    pair = keys["rsa"]
    data = userauth_blob(SESSION_ID, "alice", "rsa-sha2-512", pair.blob)
    signature = sign(pair, data, "rsa-sha2-512")
    signed = userauth.parse_signed_userauth(data)
    assert signed.session_id == SESSION_ID and signed.user == "alice"
    assert authorized_keys.find_key(authorized, signed.algorithm, signed.keyblob) is not None
    assert pubkey.verify_userauth_signature(signed.algorithm, signed.keyblob, data, signature)


def test_verify_signature_by_another_key(keys: dict[str, KeyPair]) -> None:
    for mine, theirs, algorithm in (
        ("ed25519", "ed25519-other", "ssh-ed25519"),
        ("rsa", "rsa-other", "rsa-sha2-256"),
    ):
        data = userauth_blob(SESSION_ID, "alice", algorithm, keys[mine].blob)
        forged = sign(keys[theirs], data, algorithm)
        assert pubkey.verify_userauth_signature(algorithm, keys[mine].blob, data, forged) is False


def test_verify_algorithm_mismatch(keys: dict[str, KeyPair]) -> None:
    pair = keys["rsa"]
    data = userauth_blob(SESSION_ID, "alice", "rsa-sha2-256", pair.blob)
    signed_512 = sign(pair, data, "rsa-sha2-512")
    assert pubkey.verify_userauth_signature("rsa-sha2-256", pair.blob, data, signed_512) is False
    # Relabelled as rsa-sha2-256, the SHA-512 signature does not verify either.
    relabelled = sshstr("rsa-sha2-256") + sshstr(_raw_signature(signed_512))
    assert pubkey.verify_userauth_signature("rsa-sha2-256", pair.blob, data, relabelled) is False
    # An algorithm that does not fit the key type.
    ed = keys["ed25519"]
    ed_sig = sign(ed, data)
    assert pubkey.verify_userauth_signature("rsa-sha2-256", ed.blob, data, ed_sig) is False
    assert pubkey.verify_userauth_signature("ecdsa-sha2-nistp384", keys["ecdsa256"].blob, data,
                                        sign(keys["ecdsa256"], data)) is False


def _raw_signature(signature: bytes) -> bytes:
    r = Reader(signature)
    r.name()
    return r.string()


def test_verify_refuses_ssh_rsa_sha1(
    keys: dict[str, KeyPair], authorized: list[authorized_keys.AuthorizedKey]
) -> None:
    pair = keys["rsa"]
    data = userauth_blob(SESSION_ID, "alice", "ssh-rsa", pair.blob)
    raw = pair.private.key.sign(data, padding.PKCS1v15(), hashes.SHA1())
    signature = sshstr("ssh-rsa") + sshstr(raw)
    assert authorized_keys.find_key(authorized, "ssh-rsa", pair.blob) is None
    assert pubkey.verify_userauth_signature("ssh-rsa", pair.blob, data, signature) is False


def test_verify_malformed_inputs_never_raise(keys: dict[str, KeyPair]) -> None:
    pair = keys["ed25519"]
    data = userauth_blob(SESSION_ID, "alice", "ssh-ed25519", pair.blob)
    good = sign(pair, data)
    assert pubkey.verify_userauth_signature("ssh-ed25519", pair.blob, data, good)
    bad_signatures = [
        b"",
        good[:-1],
        good + b"\0",
        b"\xff\xff\xff\xff" + good[4:],
        sshstr("ssh-ed25519") + sshstr(_raw_signature(good)[:-1]),
        sshstr("ssh-ed25519") + sshstr(_raw_signature(good) + b"\0"),
        sshstr(b"\xff") + sshstr(_raw_signature(good)),
    ]
    for bad in bad_signatures:
        assert pubkey.verify_userauth_signature("ssh-ed25519", pair.blob, data, bad) is False
    for bad_blob in (b"", pair.blob[:-1], pair.blob + b"\0", b"\0\0\0\x0bssh-ed25519"):
        assert pubkey.verify_userauth_signature("ssh-ed25519", bad_blob, data, good) is False
    ec = keys["ecdsa256"]
    ec_sig = sign(ec, data)
    inner = Reader(_raw_signature(ec_sig))
    r_value, s_value = inner.mpint(), inner.mpint()
    for inner_bad in (mpint(r_value) + mpint(s_value) + b"\0", mpint(r_value), b""):
        sig = sshstr("ecdsa-sha2-nistp256") + sshstr(inner_bad)
        assert pubkey.verify_userauth_signature("ecdsa-sha2-nistp256", ec.blob, data, sig) is False
    assert pubkey.verify_userauth_signature("ecdsa-sha2-nistp256", ec.blob, data, ec_sig)
    rsa = keys["rsa"]
    rsa_raw = _raw_signature(sign(rsa, data, "rsa-sha2-256"))
    too_long = sshstr("rsa-sha2-256") + sshstr(b"\0" + rsa_raw)
    assert pubkey.verify_userauth_signature("rsa-sha2-256", rsa.blob, data, too_long) is False


# ---------------------------------------------------------------------------
# fingerprint and key_label, against ssh-keygen -lf
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ed25519", "ecdsa256", "ecdsa384", "ecdsa521", "rsa"])
def test_fingerprint_matches_ssh_keygen(keys: dict[str, KeyPair], name: str) -> None:
    pair = keys[name]
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(pair.pubfile)], check=True, capture_output=True, text=True
    ).stdout.strip()
    # "256 SHA256:... comment words (ED25519)"
    _bits, fp, rest = out.split(" ", 2)
    label = rest.rsplit(" ", 1)[1].strip("()")
    assert pubkey.fingerprint(pair.blob) == fp
    assert pubkey.key_label(pair.keytype) == label
    line = (
        f"Accepted publickey for alice from 127.0.0.1 port 50022 ssh2: "
        f"{pubkey.key_label(pair.keytype)} {pubkey.fingerprint(pair.blob)}"
    )
    assert line.endswith(f"ssh2: {label} {fp}")


def test_key_label_other_names() -> None:
    assert pubkey.key_label("rsa-sha2-512") == "RSA"
    assert pubkey.key_label("sk-ssh-ed25519@openssh.com") == "ED25519-SK"
    assert pubkey.key_label("ssh-ed25519-cert-v01@openssh.com") == "ED25519-CERT"
    assert pubkey.key_label("what") == "unknown"
    assert "=" not in pubkey.fingerprint(b"")
