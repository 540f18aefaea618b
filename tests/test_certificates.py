"""OpenSSH user certificates and RevokedKeys, end to end: certificates made
by ``ssh-keygen -s``, KRLs by ``ssh-keygen -k``, logins by the stock client,
privsep-sshd and Debian's sshd side by side in every test with the same
configuration, comparing the outcome and sshd's log lines field by field
(privsep/monitor/certificates.py, privsep/wire/certs.py, privsep/wire/krl.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon import Server, ssh
from tests.test_key_options import log_mark, logged
from tests.userutil import TestUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("privsep", "openssh")


@dataclass(frozen=True)
class Ca:
    private: Path
    public: Path

    def sign(self, pubfile: Path, key_id: str, principals: str | None, serial: int = 7,
             validity: str | None = None, options: tuple[str, ...] = ()) -> Path:
        """``ssh-keygen -s``: the certificate next to the key, where ssh finds it."""
        argv = ["ssh-keygen", "-q", "-s", str(self.private), "-I", key_id, "-z", str(serial)]
        if principals is not None:
            argv += ["-n", principals]
        if validity:
            argv += ["-V", validity]
        for option in options:
            argv += ["-O", option]
        subprocess.run(argv + [str(pubfile)], check=True, capture_output=True)
        return pubfile.with_name(pubfile.name[:-len(".pub")] + "-cert.pub")

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-lf", str(self.public)], capture_output=True,
                             text=True, check=True).stdout
        return out.split()[1]


def make_ca(directory: Path, kind: str, name: str = "ca") -> Ca:
    path = directory / f"{name}_{kind}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return Ca(path, path.with_suffix(".pub"))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)
    return tmp_path


def user_key(user: TestUser, kind: str) -> Path:
    """The user's private key of ``kind`` (ed25519: the one userutil made)."""
    assert user.key_path is not None
    if kind == "ed25519":
        return user.key_path
    path = user.key_path.with_name(f"id_{kind}")
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


def login(server: Server, user: TestUser, key: Path, *command: str,
          **kwargs) -> subprocess.CompletedProcess:
    """ssh with ``key`` (and its -cert.pub, which the client loads itself)."""
    return ssh(server, user, *command, key=False,
               options=[f"IdentityFile={key}", "PreferredAuthentications=publickey",
                        f"CertificateFile={key}-cert.pub"], **kwargs)


def both(server_with: Callable[..., Server], *lines: str) -> dict[str, Server]:
    return {kind: server_with(*lines, kind=kind) for kind in KINDS}


def side_by_side(servers: dict[str, Server],
                 scenario: Callable[[Server], dict[str, object]]) -> dict[str, object]:
    """Run ``scenario`` against each daemon and require the same
    observations from both (tests/test_key_options.py does the same)."""
    observed = {kind: scenario(servers[kind]) for kind in KINDS}
    ours, reference = observed["privsep"], observed["openssh"]
    differences = {name: {"privsep": ours[name], "openssh": reference[name]}
                   for name in reference if ours.get(name) != reference[name]}
    assert not differences, f"privsep-sshd and sshd differ: {differences}"
    return reference


def attempt(server: Server, user: TestUser, key: Path, *patterns: str,
            command: tuple[str, ...] = ("echo", "in")) -> dict[str, object]:
    """One login; its exit status, output, and the first line since the
    login matching each of ``patterns`` (ports normalised)."""
    mark = log_mark(server)
    result = login(server, user, key, *command)
    seen: dict[str, object] = {"exit": result.returncode, "out": result.stdout}
    for pattern in patterns:
        seen[pattern] = logged(server, mark, pattern, timeout=5)
    return seen


# --- TrustedUserCAKeys ------------------------------------------------------------------

@pytest.mark.parametrize("key_kind,ca_kind", [("ed25519", "ed25519"), ("ecdsa", "ed25519"),
                                              ("rsa", "ecdsa"), ("ed25519", "rsa")])
def test_trusted_ca_login(server_with, user, work, key_kind: str, ca_kind: str) -> None:
    """A certificate whose principal is the user's name logs in; both daemons
    log the certificate's id, serial and CA in the same words."""
    ca = make_ca(work, ca_kind)
    key = user_key(user, key_kind)
    ca.sign(key.with_name(key.name + ".pub"), "alice-cert", user.name)
    (user.home / ".ssh" / "authorized_keys").write_text("")
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}")
    seen = side_by_side(servers, lambda s: attempt(
        s, user, key, r"Accepted publickey for ", r"Accepted certificate ID "))
    assert seen["exit"] == 0 and seen["out"] == b"in\n"
    accepted = seen[r"Accepted publickey for "]
    assert re.search(r"ssh2: \w+-CERT SHA256:\S+ ID alice-cert \(serial 7\) CA \w+ "
                     + re.escape(ca.fingerprint()) + "$", accepted)
    assert seen[r"Accepted certificate ID "].endswith(
        f'Accepted certificate ID "alice-cert" (serial 7) signed by '
        f"{ {'ed25519': 'ED25519', 'ecdsa': 'ECDSA', 'rsa': 'RSA'}[ca_kind]} CA "
        f"{ca.fingerprint()} via {ca.public}")


@pytest.mark.parametrize("case,sign_kwargs,reason", [
    ("expired", {"validity": "-2d:-1d"}, "Certificate invalid: expired"),
    ("not yet valid", {"validity": "+1d:+2d"}, "Certificate invalid: not yet valid"),
    ("wrong principal", {"principals": "someone-else"},
     "Certificate invalid: name is not a listed principal"),
    ("no principal", {"principals": None}, "Certificate lacks principal list"),
    ("unknown critical option", {"options": ("critical:frobnicate=yes",)},
     "Invalid certificate options"),
])
def test_trusted_ca_refusals(server_with, user, work, case: str, sign_kwargs: dict,
                             reason: str) -> None:
    """Each way a certificate is refused, logged as sshd logs it."""
    ca = make_ca(work, "ed25519")
    key = user_key(user, "ed25519")
    kwargs = {"principals": user.name, **sign_kwargs}
    ca.sign(key.with_name(key.name + ".pub"), "bad-cert", **kwargs)
    (user.home / ".ssh" / "authorized_keys").write_text("")
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}")
    seen = side_by_side(servers, lambda s: attempt(s, user, key, re.escape(reason),
                                                   r"Accepted publickey"))
    assert seen["exit"] == 255
    assert seen[r"Accepted publickey"] is None
    assert seen[re.escape(reason)] is not None and seen[re.escape(reason)].endswith(reason)


def test_source_address(server_with, user, work) -> None:
    """source-address: a certificate for another network is refused with
    sshd's line; one for loopback logs in."""
    ca = make_ca(work, "ed25519")
    key = user_key(user, "ed25519")
    pub = key.with_name(key.name + ".pub")
    (user.home / ".ssh" / "authorized_keys").write_text("")
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}")
    ca.sign(pub, "far", user.name, options=("source-address=10.0.0.0/8",))
    pattern = r"with valid certificate but not from a permitted source address"
    far = side_by_side(servers, lambda s: attempt(s, user, key, pattern,
                                                  r"Refused by certificate options"))
    assert far["exit"] == 255
    assert far[pattern].endswith(
        f"cert: Authentication tried for {user.name} with valid certificate but not from a "
        "permitted source address (127.0.0.1).")
    ca.sign(pub, "near", user.name, options=("source-address=127.0.0.0/8,::1",))
    near = side_by_side(servers, lambda s: attempt(s, user, key))
    assert near["exit"] == 0


def test_force_command_and_no_pty(server_with, user, work) -> None:
    """force-command runs instead of the client's command, and a certificate
    without permit-pty gets no pty: the session process enforces both."""
    ca = make_ca(work, "ed25519")
    key = user_key(user, "ed25519")
    ca.sign(key.with_name(key.name + ".pub"), "forced", user.name,
            options=("clear", "force-command=echo forced"))
    (user.home / ".ssh" / "authorized_keys").write_text("")
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}")

    def scenario(server: Server) -> dict[str, object]:
        plain = login(server, user, key, "echo", "mine")
        tty = login(server, user, key, "tty", tty=True)
        return {"plain": (plain.returncode, plain.stdout), "tty exit": tty.returncode,
                "pty refused": b"PTY allocation request failed" in tty.stderr,
                "tty out": tty.stdout}

    seen = side_by_side(servers, scenario)
    assert seen["plain"] == (0, b"forced\n")
    assert seen["pty refused"]


def test_principals_file(server_with, user, work) -> None:
    """AuthorizedPrincipalsFile with %u: the certificate must name a
    principal listed there (the user's own name no longer suffices)."""
    ca = make_ca(work, "ed25519")
    key = user_key(user, "ed25519")
    pub = key.with_name(key.name + ".pub")
    principals = user.home / ".ssh" / f"principals_{user.name}"
    principals.write_text("# ops team\nops\n")
    os.chown(principals, user.uid, user.gid)
    os.chmod(principals, 0o600)
    (user.home / ".ssh" / "authorized_keys").write_text("")
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}",
                   "AuthorizedPrincipalsFile .ssh/principals_%u")
    ca.sign(pub, "ops-cert", "ops,dev")
    good = side_by_side(servers, lambda s: attempt(s, user, key))
    assert good["exit"] == 0
    ca.sign(pub, "own-name", user.name)
    reason = "Certificate does not contain an authorized principal"
    bad = side_by_side(servers, lambda s: attempt(s, user, key, reason))
    assert bad["exit"] == 255 and bad[reason].endswith(reason)


@pytest.fixture
def principals_command():
    """An AuthorizedPrincipalsCommand sshd trusts (root's, in root's 755
    directories up to "/") that prints "ops" and records its arguments."""
    directory = Path(tempfile.mkdtemp(prefix="privsep-principals-", dir="/usr/local/lib"))
    os.chmod(directory, 0o755)
    seen = directory / "seen"  # where nobody can reach and write it
    seen.touch()
    os.chmod(seen, 0o666)
    program = directory / "principals"
    program.write_text(f'#!/bin/sh\necho "$@" >> {seen}\necho ops\n')
    os.chmod(program, 0o755)
    yield program, seen
    shutil.rmtree(directory)


def test_principals_command(server_with, user, work, principals_command) -> None:
    """AuthorizedPrincipalsCommand (run as nobody): a certificate naming a
    principal it prints logs in; one naming only the user is refused; the
    command gets the same %-token values from both daemons."""
    program, seen = principals_command
    ca = make_ca(work, "ed25519")
    key = user_key(user, "ed25519")
    pub = key.with_name(key.name + ".pub")
    (user.home / ".ssh" / "authorized_keys").write_text("")
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}",
                   f"AuthorizedPrincipalsCommand {program} %u %i %s %T %t %F",
                   "AuthorizedPrincipalsCommandUser nobody")
    ca.sign(pub, "ops-cert", "ops,dev")
    good = side_by_side(servers, lambda s: {**attempt(s, user, key),
                                           "args": seen.read_text().splitlines()[-1:]})
    assert good["exit"] == 0
    assert good["args"] == [f"{user.name} ops-cert 7 ssh-ed25519 "
                            f"ssh-ed25519-cert-v01@openssh.com {ca.fingerprint()}"]
    ca.sign(pub, "own-name", user.name)
    reason = "Certificate does not contain an authorized principal"
    bad = side_by_side(servers, lambda s: attempt(s, user, key, reason))
    assert bad["exit"] == 255 and bad[reason].endswith(reason)


def test_principals_line_from(server_with, user, work) -> None:
    """A from= option on the principals line that lets the certificate in
    is honoured: from 127.0.0.1 only logs in, from elsewhere is refused."""
    ca = make_ca(work, "ed25519")
    key = user_key(user, "ed25519")
    pub = key.with_name(key.name + ".pub")
    principals = user.home / ".ssh" / f"principals_{user.name}"
    os.makedirs(principals.parent, exist_ok=True)
    (user.home / ".ssh" / "authorized_keys").write_text("")
    ca.sign(pub, "ops-cert", "ops")
    for origin, expected in (("127.0.0.1", 0), ("10.9.9.9", 255)):
        principals.write_text(f'from="{origin}" ops\n')
        os.chown(principals, user.uid, user.gid)
        os.chmod(principals, 0o600)
        servers = both(server_with, f"TrustedUserCAKeys {ca.public}",
                       "AuthorizedPrincipalsFile .ssh/principals_%u")
        seen = side_by_side(servers, lambda s: attempt(s, user, key))
        assert seen["exit"] == expected, origin


# --- cert-authority in authorized_keys --------------------------------------------------

def test_cert_authority_line(server_with, user, work) -> None:
    """cert-authority,principals="ops": a certificate naming ops logs in,
    one that does not is refused; both logged as sshd logs them."""
    ca = make_ca(work, "ecdsa")
    key = user_key(user, "ed25519")
    pub = key.with_name(key.name + ".pub")
    auth = user.home / ".ssh" / "authorized_keys"
    auth.write_text(f'cert-authority,principals="ops" {ca.public.read_text()}')
    servers = both(server_with)
    ca.sign(pub, "ops-cert", "ops", serial=11)
    pattern = r"Accepted certificate ID "
    good = side_by_side(servers, lambda s: attempt(s, user, key, pattern))
    assert good["exit"] == 0
    assert good[pattern].endswith(
        f'Accepted certificate ID "ops-cert" (serial 11) signed by CA ECDSA '
        f"{ca.fingerprint()} found at {auth}:1")
    ca.sign(pub, "dev-cert", "dev")
    reason = "Certificate does not contain an authorized principal"
    bad = side_by_side(servers, lambda s: attempt(s, user, key, reason))
    assert bad["exit"] == 255 and bad[reason].endswith(reason)


# --- RevokedKeys --------------------------------------------------------------------------

def krl(work: Path, name: str, spec: str | None, *keys: Path, ca: Ca | None = None) -> Path:
    """``ssh-keygen -k``: a KRL from a spec file (serial:, id:, ...) or keys."""
    path = work / name
    argv = ["ssh-keygen", "-q", "-k", "-f", str(path)]
    if ca is not None:
        argv += ["-s", str(ca.public)]
    if spec is not None:
        spec_file = work / (name + ".spec")
        spec_file.write_text(spec + "\n")
        keys = (spec_file,)
    subprocess.run(argv + [str(k) for k in keys], check=True, capture_output=True)
    return path


@pytest.mark.parametrize("case", ["serial", "serial range", "key id", "CA key", "user key",
                                  "sha256", "plain list"])
def test_revoked(server_with, user, work, case: str) -> None:
    """A certificate revoked by serial, range or key id, one whose CA or
    whose key is revoked, and a key in a plain list: refused with sshd's line."""
    ca = make_ca(work, "ed25519")
    key = user_key(user, "ed25519")
    pub = key.with_name(key.name + ".pub")
    cert = ca.sign(pub, "alice-cert", user.name, serial=7)
    (user.home / ".ssh" / "authorized_keys").write_text("")
    path = {
        "serial": lambda: krl(work, "krl", "serial: 7", ca=ca),
        "serial range": lambda: krl(work, "krl", "serial: 5-9", ca=ca),
        "key id": lambda: krl(work, "krl", "id: alice-cert", ca=ca),
        "CA key": lambda: krl(work, "krl", None, ca.public),
        "user key": lambda: krl(work, "krl", None, pub),
        "sha256": lambda: krl(work, "krl", "sha256: " + pub.read_text().strip()),
        "plain list": lambda: _write(work / "revoked.txt", pub.read_text()),
    }[case]()
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}", f"RevokedKeys {path}")
    pattern = r"Authentication key .* revoked by file"
    seen = side_by_side(servers, lambda s: attempt(s, user, key, pattern))
    assert seen["exit"] == 255
    fp = subprocess.run(["ssh-keygen", "-lf", str(cert)], capture_output=True, text=True,
                        check=True).stdout.split()[1]
    assert seen[pattern].endswith(f"Authentication key ED25519-CERT {fp} revoked by file {path}")


def test_not_revoked(server_with, user, work) -> None:
    """A KRL that revokes other serials and ids leaves this certificate alone."""
    ca = make_ca(work, "ed25519")
    key = user_key(user, "ed25519")
    ca.sign(key.with_name(key.name + ".pub"), "alice-cert", user.name, serial=7)
    (user.home / ".ssh" / "authorized_keys").write_text("")
    path = krl(work, "krl", "serial: 1-6\nserial: 8\nid: bob", ca=ca)
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}", f"RevokedKeys {path}")
    seen = side_by_side(servers, lambda s: attempt(s, user, key))
    assert seen["exit"] == 0


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- HostCertificate ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_host_certificate(server_with, user, work, kind: str) -> None:
    """HostCertificate: the stock client, trusting only an @cert-authority
    line in known_hosts, verifies the certificate the key exchange offers
    (signed through the signer child) and logs in; a certificate by another
    CA or an expired one is refused by the client."""
    ca = make_ca(work, "ed25519", "hostca")
    other = make_ca(work, "ed25519", "otherca")
    host_key = work / f"host_{kind}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(host_key)], check=True)
    host_pub = host_key.with_name(host_key.name + ".pub")
    cert = _host_sign(ca, host_pub, "127.0.0.1")
    known = work / "known_hosts"
    known.write_text(f"@cert-authority * {ca.public.read_text()}")
    config = (f"HostKey {host_key}", f"HostCertificate {cert}")
    servers = both(server_with, *config)

    def scenario(server: Server) -> dict[str, object]:
        result = ssh(server, user, "echo", "in", flags=["-v"],
                     options=[f"UserKnownHostsFile={known}", "StrictHostKeyChecking=yes"])
        line = re.search(rb"Server host certificate: (\S+) SHA256:\S+, serial (\d+) ID "
                         rb'"([^"]+)" CA (\S+)', result.stderr)
        return {"exit": result.returncode, "out": result.stdout,
                "certificate": line.groups() if line else None}

    seen = side_by_side(servers, scenario)
    assert seen["exit"] == 0 and seen["out"] == b"in\n"
    assert seen["certificate"] is not None and seen["certificate"][1:] == (
        b"3", b"host-cert", b"ssh-ed25519")
    # a CA the client does not trust: no host key it knows, so no login
    known.write_text(f"@cert-authority * {other.public.read_text()}")
    refused = side_by_side(servers, lambda s: {"exit": ssh(
        s, user, "true", options=[f"UserKnownHostsFile={known}",
                                  "StrictHostKeyChecking=yes"]).returncode})
    assert refused["exit"] == 255


def _host_sign(ca: Ca, pubfile: Path, principals: str) -> Path:
    """``ssh-keygen -s -h``: a host certificate."""
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca.private), "-h", "-I", "host-cert",
                    "-z", "3", "-n", principals, str(pubfile)], check=True, capture_output=True)
    return pubfile.with_name(pubfile.name[:-len(".pub")] + "-cert.pub")


def test_ca_signature_algorithms(server_with, user, work) -> None:
    """CASignatureAlgorithms without the CA's algorithm: the certificate is
    refused before anything else, logged as sshd logs it."""
    ca = make_ca(work, "rsa")
    key = user_key(user, "ed25519")
    ca.sign(key.with_name(key.name + ".pub"), "rsa-signed", user.name)
    (user.home / ".ssh" / "authorized_keys").write_text("")
    servers = both(server_with, f"TrustedUserCAKeys {ca.public}",
                   "CASignatureAlgorithms ssh-ed25519,ecdsa-sha2-nistp256")
    pattern = r"certificate signature algorithm"
    seen = side_by_side(servers, lambda s: attempt(s, user, key, pattern))
    assert seen["exit"] == 255
    assert seen[pattern].endswith("certificate signature algorithm rsa-sha2-512: "
                                  "signature algorithm not supported [preauth]")


# --- sshd -T ------------------------------------------------------------------------------

T_KEYWORDS = ("trustedusercakeys", "authorizedprincipalsfile", "revokedkeys",
              "casignaturealgorithms", "hostcertificate", "pubkeyacceptedalgorithms")


@pytest.mark.parametrize("lines,context", [
    ((), None),
    (("TrustedUserCAKeys /etc/ssh/ca.pub", "AuthorizedPrincipalsFile .ssh/principals_%u",
      "RevokedKeys /etc/ssh/krl", "CASignatureAlgorithms ssh-ed25519,rsa-sha2-512",
      "HostCertificate {cert}", "Match User alice", "    TrustedUserCAKeys /etc/ssh/alice.pub",
      "    RevokedKeys none"), "user=alice,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=22"),
    (("CASignatureAlgorithms -rsa*", "PubkeyAcceptedAlgorithms -sk-*"), None),
])
def test_T_output(work, lines: tuple[str, ...], context: str | None) -> None:
    """The keywords of this section, printed by -T as sshd -T prints them
    (defaults, values, Match blocks, the +/- list syntax)."""
    from tests.daemon import privsep_command
    key = work / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cert = _host_sign(make_ca(work, "ed25519"), key.with_name(key.name + ".pub"), "h")
    config = work / "sshd_config"
    config.write_text("\n".join([f"HostKey {key}", *(line.format(cert=cert) for line in lines)])
                      + "\n")
    extra = ["-C", context] if context else []
    dumps = {}
    for kind, argv in (("privsep", privsep_command()), ("openssh", ["/usr/sbin/sshd"])):
        result = subprocess.run([*argv, "-T", "-f", str(config), *extra], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        dumps[kind] = sorted(line for line in result.stdout.splitlines()
                             if line.split(" ", 1)[0] in T_KEYWORDS)
    assert dumps["privsep"] == dumps["openssh"]
    assert len(dumps["openssh"]) >= 5
