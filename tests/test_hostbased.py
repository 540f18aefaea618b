"""Hostbased authentication (issue 15), side by side with Debian's sshd.

The stock client logs in as a throwaway user with
``HostbasedAuthentication=yes``: its setuid ssh-keysign signs with this
machine's host keys (/etc/ssh/ssh_host_*_key), which needs
``EnableSSHKeysign yes`` in the client's system configuration (a file in
/etc/ssh/ssh_config.d, removed afterwards).  Each scenario writes the same
/etc/ssh/shosts.equiv, /etc/ssh/ssh_known_hosts and user files for both
daemons, and compares the exit status and the hostbased log lines,
normalised for ports.  The hostile net-child tests drive the real monitor
with HostbasedRequests that a compromised child could send.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
from pathlib import Path

import paramiko
import pytest

from privsep.monitor import hostbased, pubkey
from privsep.monitor.policy import MonitorState, Phase, PolicyViolation, admit
from privsep.wire import messages as wire
from privsep.wire.userauth import hostbased_signed_data
from tests.daemon import Server
# The hostile net-child harness and its fixtures (pytest finds imported fixtures).
from tests.test_hostile_child import (  # noqa: F401
    ALG, PEER, NetChild, assert_refused, host_key_path, hostile,
)
from tests.userutil import TestUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

CLIENT_CONFIG = Path("/etc/ssh/ssh_config.d/zz-privsep-hostbased-test.conf")
SHOSTS_EQUIV = Path("/etc/ssh/shosts.equiv")
KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
HOST_PUB = Path("/etc/ssh/ssh_host_ed25519_key.pub")


# --- the client side: ssh-keysign enabled, the machine's host keys ---------------------


@pytest.fixture(scope="module")
def keysign() -> str:
    """EnableSSHKeysign for the module's tests; the machine's ed25519 host
    public key line ("ssh-ed25519 AAAA...")."""
    if not os.path.exists("/usr/lib/openssh/ssh-keysign"):
        pytest.skip("ssh-keysign is not installed")
    if not HOST_PUB.exists():
        subprocess.run(["ssh-keygen", "-A"], check=True)
    CLIENT_CONFIG.write_text("EnableSSHKeysign yes\n")
    try:
        yield " ".join(HOST_PUB.read_text().split()[:2])
    finally:
        CLIENT_CONFIG.unlink(missing_ok=True)


@pytest.fixture
def system_files():
    """write(path, text) for /etc/ssh/shosts.equiv and ssh_known_hosts;
    each file is put back as it was (or removed) after the test."""
    saved: dict[Path, bytes | None] = {}

    def write(path: Path, text: str) -> None:
        if path not in saved:
            saved[path] = path.read_bytes() if path.exists() else None
        path.write_text(text)
        os.chmod(path, 0o644)

    try:
        yield write
    finally:
        for path, data in saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


def write_user_file(user: TestUser, relative: str, text: str, mode: int = 0o644) -> Path:
    """A file in the user's home, owned by the user (directories too)."""
    path = user.home / relative
    path.parent.mkdir(mode=0o700, exist_ok=True)
    os.chown(path.parent, user.uid, user.gid)
    path.write_text(text)
    os.chown(path, user.uid, user.gid)
    os.chmod(path, mode)
    return path


def hostbased_login(server: Server, user: TestUser) -> subprocess.CompletedProcess:
    """The stock client, run as ``user``, trying hostbased only."""
    argv = ["runuser", "-u", user.name, "--", "ssh", "-F", "/dev/null", "-p", str(server.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "HostbasedAuthentication=yes",
            "-o", "PreferredAuthentications=hostbased", "-o", "LogLevel=ERROR",
            f"{user.name}@127.0.0.1", "id", "-un"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


#: The log lines hostbased authentication writes (sshd's words).
HOSTBASED_LINE = re.compile(
    r"^(userauth_hostbased.*|Accepted (hostbased|certificate|\S+ public key) .*"
    r"|Failed hostbased .*|Rhosts authentication refused .*|Authentication refused for .*"
    r"|WARNING: revoked key .*|User \S+ hosts file .*|Certificate invalid: .*"
    r"|Authentication key .* revoked by file .*)$", re.M)


def hostbased_lines(server: Server) -> list[str]:
    text = re.sub(r" port \d+", " port N", server.log_text())
    return [m.group(0) for m in HOSTBASED_LINE.finditer(text)]


def side_by_side(server_with, user: TestUser, *config: str) -> dict[str, tuple[int, list[str]]]:
    """Log in with hostbased to sshd and to privsep-sshd with the same
    configuration; each one's exit status and hostbased log lines."""
    results = {}
    for kind in ("openssh", "privsep"):
        server = server_with("HostbasedAuthentication yes", *config, kind=kind)
        done = hostbased_login(server, user)
        if done.returncode == 0:
            assert done.stdout.strip() == user.name, done
            server.wait_for_log("Accepted hostbased")
        else:
            server.wait_for_log("Connection closed by authenticating user")
        results[kind] = (done.returncode, hostbased_lines(server))
    return results


def assert_same(results: dict[str, tuple[int, list[str]]], accepted: bool) -> None:
    assert results["privsep"] == results["openssh"], "\n".join(
        f"{kind}: exit {code}\n  " + "\n  ".join(lines)
        for kind, (code, lines) in results.items())
    assert (results["privsep"][0] == 0) == accepted, results


# --- side by side with sshd ---------------------------------------------------------------


def test_accepted_by_shosts_equiv(server_with, keysign, system_files, make_user):
    user = make_user("hbs", key=False)
    system_files(SHOSTS_EQUIV, "127.0.0.1\n")
    system_files(KNOWN_HOSTS, f"127.0.0.1 {keysign}\n")
    results = side_by_side(server_with, user)
    assert_same(results, accepted=True)
    fp = pubkey.fingerprint(base64.b64decode(keysign.split()[1]))
    assert (f"Accepted hostbased for {user.name} from 127.0.0.1 port N ssh2: ED25519 {fp}"
            in results["privsep"][1])
    assert f"Accepted ED25519 public key {fp} from {user.name}@127.0.0.1" in results["privsep"][1]


def test_refused_when_host_not_in_shosts_equiv(server_with, keysign, system_files, make_user):
    user = make_user("hbs", key=False)
    system_files(SHOSTS_EQUIV, "otherhost\n-127.0.0.2\n")
    system_files(KNOWN_HOSTS, f"127.0.0.1 {keysign}\n")
    results = side_by_side(server_with, user)
    assert_same(results, accepted=False)
    assert any(line.startswith(f"Failed hostbased for {user.name}")
               and f'client user "{user.name}", client host "localhost"' in line
               for line in results["privsep"][1]), results


def test_refused_when_known_hosts_key_differs(server_with, keysign, system_files, make_user,
                                              tmp_path):
    user = make_user("hbs", key=False)
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    system_files(SHOSTS_EQUIV, "127.0.0.1\n")
    system_files(KNOWN_HOSTS, "127.0.0.1 " + other.with_suffix(".pub").read_text())
    assert_same(side_by_side(server_with, user), accepted=False)


def test_hashed_known_hosts_entry(server_with, keysign, system_files, make_user):
    user = make_user("hbs", key=False)
    system_files(SHOSTS_EQUIV, "127.0.0.1\n")
    system_files(KNOWN_HOSTS, f"127.0.0.1 {keysign}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(KNOWN_HOSTS)], check=True,
                   capture_output=True)
    Path(str(KNOWN_HOSTS) + ".old").unlink(missing_ok=True)
    assert KNOWN_HOSTS.read_text().startswith("|1|")
    assert_same(side_by_side(server_with, user), accepted=True)


@pytest.mark.parametrize("ignore,accepted", [("no", True), ("yes", False),
                                             ("shosts-only", True)])
def test_user_shosts_and_ignore_rhosts(server_with, keysign, system_files, make_user,
                                       ignore, accepted):
    """~/.shosts alone lets the user in unless IgnoreRhosts (sshd's default)."""
    user = make_user("hbs", key=False)
    system_files(KNOWN_HOSTS, f"127.0.0.1 {keysign}\n")
    write_user_file(user, ".shosts", f"127.0.0.1 {user.name}\n")
    assert_same(side_by_side(server_with, user, f"IgnoreRhosts {ignore}"), accepted)


def test_world_writable_shosts_refused_with_strict_modes(server_with, keysign, system_files,
                                                         make_user):
    """World-writable: both refuse.  (Debian's sshd, patched, takes a file
    writable by the user's own private group; upstream and we do not.)"""
    user = make_user("hbs", key=False)
    system_files(KNOWN_HOSTS, f"127.0.0.1 {keysign}\n")
    write_user_file(user, ".shosts", f"127.0.0.1 {user.name}\n", mode=0o646)
    results = side_by_side(server_with, user, "IgnoreRhosts no")
    assert_same(results, accepted=False)
    assert (f"Rhosts authentication refused for {user.name}: bad modes for "
            f"{user.home}/.shosts") in results["privsep"][1]


@pytest.mark.parametrize("ignore,accepted", [("no", True), ("yes", False)])
def test_user_known_hosts_and_ignore_user_known_hosts(server_with, keysign, system_files,
                                                      make_user, ignore, accepted):
    user = make_user("hbs", key=False)
    system_files(SHOSTS_EQUIV, "127.0.0.1\n")
    system_files(KNOWN_HOSTS, "")
    write_user_file(user, ".ssh/known_hosts", f"127.0.0.1 {keysign}\n")
    assert_same(side_by_side(server_with, user, f"IgnoreUserKnownHosts {ignore}"), accepted)


def test_name_from_packet_only(server_with, keysign, system_files, make_user):
    """The client's own name ("localhost.", dot dropped) is looked up."""
    user = make_user("hbs", key=False)
    system_files(SHOSTS_EQUIV, "localhost\n")
    system_files(KNOWN_HOSTS, f"localhost {keysign}\n")
    results = side_by_side(server_with, user, "HostbasedUsesNameFromPacketOnly yes")
    assert_same(results, accepted=True)
    assert not any("mismatch" in line for line in results["privsep"][1])


def test_algorithm_not_accepted(server_with, keysign, system_files, make_user):
    user = make_user("hbs", key=False)
    system_files(SHOSTS_EQUIV, "127.0.0.1\n")
    system_files(KNOWN_HOSTS, f"127.0.0.1 {keysign}\n")
    results = side_by_side(server_with, user,
                           "HostbasedAcceptedAlgorithms ecdsa-sha2-nistp256")
    assert results["privsep"][0] == results["openssh"][0] != 0, results
    for kind in ("openssh", "privsep"):
        assert not any(line.startswith("Accepted") for line in results[kind][1]), results
    server = server_with("HostbasedAuthentication yes",
                         "HostbasedAcceptedAlgorithms ecdsa-sha2-nistp256")
    hostbased_login(server, user)
    server.wait_for_log("userauth_hostbased: signature algorithm ssh-ed25519 not in "
                        "HostbasedAcceptedAlgorithms [preauth]")


# --- host certificates: the client's host key certified by a CA ---------------------------

HOST_CERT = Path("/etc/ssh/ssh_host_ed25519_key-cert.pub")


@pytest.fixture
def host_ca(tmp_path, keysign, system_files):
    """A CA trusted for 127.0.0.1 by a @cert-authority line in
    /etc/ssh/ssh_known_hosts, and sign(*ssh-keygen flags) that certifies
    this machine's ed25519 host key with it, where the client's ssh loads
    it for hostbased (the host key's name with -cert.pub); that file is put
    back as it was after the test."""
    ca = tmp_path / "host_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(ca)],
                   check=True)
    ca_pub = ca.with_suffix(".pub").read_text().strip()
    system_files(SHOSTS_EQUIV, "127.0.0.1\n")
    system_files(KNOWN_HOSTS, f"@cert-authority 127.0.0.1 {ca_pub}\n")
    public = tmp_path / "ssh_host_ed25519_key.pub"
    public.write_text(HOST_PUB.read_text())

    def sign(*flags: str) -> str:
        subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "hostcert", "-z", "5",
                        *flags, str(public)], check=True, capture_output=True)
        system_files(HOST_CERT, (tmp_path / "ssh_host_ed25519_key-cert.pub").read_text())
        return pubkey.fingerprint(base64.b64decode(ca_pub.split()[1]))

    sign.ca_pub = ca_pub  # type: ignore[attr-defined]
    sign.dir = tmp_path  # type: ignore[attr-defined]
    return sign


def test_host_certificate_accepted(server_with, keysign, host_ca, make_user):
    """A host certificate for 127.0.0.1 (the name sshd looks up), its CA
    trusted by a @cert-authority line: sshd's two Accepted lines, with the
    certificate's ID, serial and CA."""
    user = make_user("hbc", key=False)
    ca_fp = host_ca("-h", "-n", "127.0.0.1")
    results = side_by_side(server_with, user)
    assert_same(results, accepted=True)
    fp = pubkey.fingerprint(base64.b64decode(keysign.split()[1]))
    lines = results["privsep"][1]
    assert (f'Accepted certificate ID "hostcert" signed by ED25519 CA {ca_fp} from '
            f"{user.name}@127.0.0.1") in lines, lines
    assert (f"Accepted hostbased for {user.name} from 127.0.0.1 port N ssh2: ED25519-CERT "
            f"{fp} ID hostcert (serial 5) CA ED25519 {ca_fp}") in lines, lines


@pytest.mark.parametrize("case,flags,config,line", [
    ("wrong principal", ("-h", "-n", "otherhost"), (),
     "Certificate invalid: name is not a listed principal"),
    ("expired", ("-h", "-n", "127.0.0.1", "-V", "20200101:20200102"), (),
     "Certificate invalid: expired"),
    ("user certificate", ("-n", "127.0.0.1"), (),
     "Certificate invalid: not a host certificate"),
    ("algorithm not accepted", ("-h", "-n", "127.0.0.1"),
     ("HostbasedAcceptedAlgorithms ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512",),
     "userauth_hostbased: signature algorithm ssh-ed25519-cert-v01@openssh.com not in "
     "HostbasedAcceptedAlgorithms [preauth]"),
    ("CA algorithm", ("-h", "-n", "127.0.0.1"), ("CASignatureAlgorithms ecdsa-sha2-nistp256",),
     "userauth_hostbased: certificate signature algorithm ssh-ed25519: signature algorithm "
     "not supported [preauth]"),
])
def test_host_certificate_refused(server_with, keysign, host_ca, make_user, case, flags,
                                  config, line):
    """Each refusal as sshd's, and the plain host keys that the client tries
    next are not in known_hosts either: no login."""
    user = make_user("hbc", key=False)
    host_ca(*flags)
    results = side_by_side(server_with, user, *config)
    assert_same(results, accepted=False)
    assert line in results["privsep"][1], results


def test_host_certificate_revoked(server_with, keysign, host_ca, make_user, system_files):
    """RevokedKeys: a KRL revoking serial 5 of the CA; and a @revoked line
    for the CA in known_hosts."""
    user = make_user("hbc", key=False)
    host_ca("-h", "-n", "127.0.0.1")
    ca_pub = host_ca.ca_pub
    krl_path = host_ca.dir / "krl"
    spec = host_ca.dir / "krl.spec"
    spec.write_text("serial: 5\n")
    (host_ca.dir / "ca.pub").write_text(ca_pub + "\n")
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl_path), "-s",
                    str(host_ca.dir / "ca.pub"), str(spec)], check=True, capture_output=True)
    os.chmod(host_ca.dir, 0o755)
    results = side_by_side(server_with, user, f"RevokedKeys {krl_path}")
    assert_same(results, accepted=False)
    fp = pubkey.fingerprint(base64.b64decode(keysign.split()[1]))
    assert (f"Authentication key ED25519-CERT {fp} revoked by file {krl_path}"
            in results["privsep"][1]), results
    system_files(KNOWN_HOSTS, f"@cert-authority 127.0.0.1 {ca_pub}\n"
                              f"@revoked * {ca_pub}\n")
    results = side_by_side(server_with, user)
    assert_same(results, accepted=False)
    assert ("WARNING: revoked key for 127.0.0.1 attempted authentication"
            in results["privsep"][1]), results


# --- the offered methods ----------------------------------------------------------------


def test_hostbased_offered_and_in_authentication_methods():
    from privsep.config.authmethods import list_error
    from privsep.config.servconf import ServerOptions
    options = ServerOptions().finish()
    assert "hostbased" not in options.auth_methods()
    options.hostbased_authentication = True
    assert options.auth_methods()[-1] == "hostbased"
    assert list_error("publickey,hostbased", options.auth_methods()) is None


# --- the request table (pure) ------------------------------------------------------------


def _request(session_id: bytes, user: str, changes: dict | None = None
             ) -> wire.HostbasedRequest:
    """A request whose signed data differs from its fields by ``changes``."""
    fields = dict(algorithm=ALG, keyblob=b"\0\0\0\x0bssh-ed25519" + bytes(36),
                  client_host="localhost.", client_user=user, signature=b"sig")
    signed = dict(fields, session_id=session_id, user=user)
    signed.update(changes or {})
    data = hostbased_signed_data(signed["session_id"], signed["user"], signed["algorithm"],
                                 signed["keyblob"], signed["client_host"], signed["client_user"])
    return wire.HostbasedRequest(**fields, signed_data=data)


def _named_state() -> MonitorState:
    return MonitorState(session_id=b"s" * 32, user="alice", requested_user="alice",
                        user_valid=True)


def test_policy_admits_a_bound_request_repeatedly():
    state = _named_state()
    for _ in range(3):  # one per host key the client tries
        admit(state, _request(b"s" * 32, "alice"))


@pytest.mark.parametrize("changes,reason", [
    (dict(session_id=b"t" * 32), "signature over another session id"),
    (dict(user="root"), "signed request names user 'root'"),
    (dict(client_host="evil."), "another client host or user"),
    (dict(client_user="root"), "another client host or user"),
    (dict(algorithm="rsa-sha2-512"), "another key or algorithm"),
])
def test_policy_refuses_unbound_signed_data(changes, reason):
    with pytest.raises(PolicyViolation, match=re.escape(reason)):
        admit(_named_state(), _request(b"s" * 32, "alice", changes))


def test_policy_refuses_before_user_and_after_auth():
    with pytest.raises(PolicyViolation, match="before the user was named"):
        admit(MonitorState(session_id=b"s" * 32), _request(b"s" * 32, "alice"))
    state = _named_state()
    state.phase = Phase.POSTAUTH
    with pytest.raises(PolicyViolation, match="not permitted in postauth"):
        admit(state, _request(b"s" * 32, "alice"))


# --- a hostile net-child against the real monitor ------------------------------------------


def _host_key(host_key_path: Path) -> paramiko.Ed25519Key:
    return paramiko.Ed25519Key.from_private_key_file(str(host_key_path))


def _signed_request(key: paramiko.PKey, session_id: bytes, user: str, signed_user: str | None = None,
                    client_host: str = "localhost.") -> wire.HostbasedRequest:
    data = hostbased_signed_data(session_id, signed_user or user, ALG, key.asbytes(),
                                 client_host, user)
    signature = key.sign_ssh_data(data, ALG).asbytes()
    return wire.HostbasedRequest(ALG, key.asbytes(), client_host, user, signature, data)


@pytest.fixture
def trusted_host(make_user, host_key_path):
    """A user whose ~/.shosts trusts 127.0.0.1 and whose known_hosts holds
    the harness's host key: a real hostbased login for the monitor."""
    user = make_user("hbh", key=False)
    key = _host_key(host_key_path)
    write_user_file(user, ".shosts", f"127.0.0.1 {user.name}\n")
    write_user_file(user, ".ssh/known_hosts", f"127.0.0.1 {key.get_name()} {key.get_base64()}\n")
    return user, key


HOSTBASED_ON = dict(hostbased_authentication=True, ignore_rhosts="no")


def test_control_hostbased_login_is_handed_off(hostile, trusted_host):
    from tests.test_hostile_child import HANDED_OFF, fake_handoff
    user, key = trusted_host
    answers = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        answer, _ = child.ch.call(_signed_request(key, session_id, user.name),
                                  wire.HostbasedAnswer)
        answers.append(answer.accepted)
        child.ch.send(fake_handoff(session_id))

    outcome = hostile(steps, **HOSTBASED_ON)
    assert answers == [True], str(outcome)
    assert outcome.code == HANDED_OFF, str(outcome)
    fp = pubkey.fingerprint(key.asbytes())
    assert f"Accepted hostbased for {user.name} from {PEER} ssh2: ED25519 {fp}" in outcome.log


def test_bad_signature_fails_cleanly(hostile, trusted_host, tmp_path):
    """A good request whose signature is by another key: a Failed line, no fatal."""
    user, key = trusted_host
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    stranger = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "k"))
    answers = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        good = _signed_request(key, session_id, user.name)
        forged = stranger.sign_ssh_data(good.signed_data, ALG).asbytes()
        answer, _ = child.ch.call(wire.HostbasedRequest(
            ALG, good.keyblob, good.client_host, good.client_user, forged, good.signed_data),
            wire.HostbasedAnswer)
        answers.append(answer.accepted)

    outcome = hostile(steps, **HOSTBASED_ON)
    assert answers == [False], str(outcome)
    assert f"Failed hostbased for {user.name} from {PEER} ssh2: ED25519" in outcome.log
    assert "fatal" not in outcome.log and "Accepted hostbased" not in outcome.log


@pytest.mark.parametrize("attack,reason", [
    ("other-session", "signature over another session id"),
    ("other-user", "signed request names user 'root'"),
    ("other-host", "another client host or user"),
    ("unnamed", "before the user was named"),
    ("garbage", "with malformed signed data"),
])
def test_hostile_hostbased_requests(hostile, trusted_host, attack, reason):
    """Real signatures by the trusted host key, over data that is not this
    login's: refused before any check, with the fatal line."""
    user, key = trusted_host

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        if attack == "unnamed":
            child.attack(_signed_request(key, session_id, user.name))
            return
        assert child.pwnam(user.name) is True
        if attack == "other-session":
            request = _signed_request(key, secrets.token_bytes(32), user.name)
        elif attack == "other-user":
            request = _signed_request(key, session_id, user.name, signed_user="root")
        elif attack == "other-host":
            good = _signed_request(key, session_id, user.name)
            request = wire.HostbasedRequest(ALG, good.keyblob, "trusted.example.", user.name,
                                            good.signature, good.signed_data)
        else:
            good = _signed_request(key, session_id, user.name)
            request = wire.HostbasedRequest(ALG, good.keyblob, good.client_host, user.name,
                                            good.signature, good.signed_data + b"x")
        child.attack(request)

    assert_refused(hostile(steps, **HOSTBASED_ON), reason)


def test_hostbased_refused_when_authentication_methods_excludes_it(hostile, trusted_host):
    user, key = trusted_host

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name) is True
        child.attack(_signed_request(key, session_id, user.name))

    assert_refused(hostile(steps, authentication_methods=("publickey",), **HOSTBASED_ON),
                   "which AuthenticationMethods does not allow now")


# --- the file parsers (pure) -------------------------------------------------------------


@pytest.mark.parametrize("line,expected", [
    ("127.0.0.1", True), ("127.0.0.1 alice", True), ("LOCALHOST", None),
    ("-127.0.0.1", False), ("127.0.0.1 -alice", False), ("+", None), ("127.0.0.1 bob", None),
    ("127.0.0.1 alice extra", None), ("# 127.0.0.1", None), ("NO_PLUS", None),
])
def test_rhosts_entries(line, expected):
    got = hostbased.rhosts_entry_allows(line, "127.0.0.1", "127.0.0.1", "alice", "alice")
    assert got is expected


def test_hashed_host_matches_as_ssh_keygen_hashes(tmp_path, keysign):
    path = tmp_path / "known_hosts"
    path.write_text(f"somehost {keysign}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(path)], check=True, capture_output=True)
    field = path.read_text().split()[0]
    assert field.startswith("|1|")
    assert hostbased.host_matches("somehost", field)
    assert not hostbased.host_matches("otherhost", field)


def test_forged_host_certificate_refused_before_the_monitor_looks_further(tmp_path):
    """A host certificate whose CA signature is broken (one byte of it
    changed): refused as sshd's net-child refuses it, before any file is
    read, whatever a net-child claims."""
    from privsep.config.servconf import ServerOptions
    key, ca = tmp_path / "host", tmp_path / "ca"
    for path in (key, ca):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                       check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "h", "-n", "127.0.0.1",
                    str(key.with_suffix(".pub"))], check=True, capture_output=True)
    blob = bytearray(base64.b64decode((tmp_path / "host-cert.pub").read_text().split()[1]))
    blob[-1] ^= 1
    options = ServerOptions().finish()
    request = wire.HostbasedRequest("ssh-ed25519-cert-v01@openssh.com", bytes(blob),
                                    "localhost.", "alice", b"sig", b"")
    assert hostbased._request_refusal(options, request)[1] == \
        "userauth_hostbased: key_from_blob: incorrect signature"
    blob[-1] ^= 1
    request = wire.HostbasedRequest("ssh-ed25519-cert-v01@openssh.com", bytes(blob),
                                    "localhost.", "alice", b"sig", b"")
    assert hostbased._request_refusal(options, request) is None
