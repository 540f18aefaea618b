"""A compromised net-child against the real monitor, with certificates,
RevokedKeys and security keys (issue 14): forged requests cannot skip a
check.  The harness is tests/test_hostile_child.py's (a forked root
Monitor, the test playing the net-child); the monitor here trusts a CA
(TrustedUserCAKeys) and reads a KRL (RevokedKeys).

Each refused certificate (expired, wrong principal, source-address,
revoked serial, revoked CA) gets "not allowed"; a net-child that goes on to
a KeyVerifyRequest with a perfect signature is dropped, and nothing is
accepted.  The positive control logs in with a good certificate through
the same harness.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Callable

import paramiko
import pytest

from privsep.monitor import pubkey
from privsep.wire import messages as wire
from tests.sk_authenticator import SoftSecurityKey
from tests.test_hostile_child import (  # noqa: F401 (host_key_path, user_key: fixtures)
    HANDED_OFF, PEER, NetChild, assert_refused, fake_handoff, host_key_path, run_monitor,
    user_key, userauth_blob,
)

CERT_ALG = "ssh-ed25519-cert-v01@openssh.com"


@pytest.fixture
def pki(tmp_path: Path, user) -> dict[str, object]:
    """A CA, the user's key, certificates for each case and a KRL."""
    ca = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    pub = user.key_path.with_name(user.key_path.name + ".pub")
    cases = {
        "good": ["-n", user.name, "-z", "1"],
        "expired": ["-n", user.name, "-z", "2", "-V", "-2d:-1d"],
        "wrong principal": ["-n", "root", "-z", "3"],
        "source-address": ["-n", user.name, "-z", "4", "-O", "source-address=10.0.0.0/8"],
        "revoked serial": ["-n", user.name, "-z", "66"],
    }
    blobs = {}
    for name, extra in cases.items():
        subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", name.replace(" ", "-"), *extra,
                        str(pub)], check=True, capture_output=True)
        cert = pub.with_name(pub.name[:-4] + "-cert.pub")
        blobs[name] = base64.b64decode(cert.read_text().split()[1])
    spec = tmp_path / "spec"
    spec.write_text("serial: 66\n")
    krl = tmp_path / "krl"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(krl), "-s", f"{ca}.pub", str(spec)],
                   check=True)
    ca_krl = tmp_path / "ca_krl"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(ca_krl), f"{ca}.pub"], check=True)
    return {"ca": Path(f"{ca}.pub"), "certs": blobs, "krl": krl, "ca_krl": ca_krl}


@pytest.fixture
def hostile_ca(tmp_path, host_key_path, pam_service, pki):
    """hostile_ca(steps, revoked=krl) against a monitor trusting the CA."""
    def run(steps: Callable[[NetChild], None], revoked: Path | None = None):
        def configure(options) -> None:
            options.trusted_user_ca_keys = str(pki["ca"])
            options.revoked_keys = str(revoked or pki["krl"])
        return run_monitor(tmp_path, host_key_path, pam_service,
                           lambda ch: steps(NetChild(ch, host_key_path)), configure)
    return run


def cert_allowed(child: NetChild, cert: bytes) -> bool:
    answer, _ = child.ch.call(wire.KeyAllowedRequest(CERT_ALG, cert), wire.KeyAllowedAnswer)
    return answer.allowed


def cert_verify(key: paramiko.PKey, session_id: bytes, user: str,
                cert: bytes) -> wire.KeyVerifyRequest:
    """A perfect request: the user's key really signs a blob naming ``cert``."""
    blob = userauth_blob(session_id, user, cert, algorithm=CERT_ALG)
    return wire.KeyVerifyRequest(CERT_ALG, cert, blob,
                                 key.sign_ssh_data(blob, "ssh-ed25519").asbytes())


def test_control_good_certificate_is_handed_off(hostile_ca, user, user_key, pki):  # noqa: F811
    verdicts = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name)
        verdicts.append(cert_allowed(child, pki["certs"]["good"]))
        verdicts.append(child.verify(cert_verify(user_key, session_id, user.name,
                                                 pki["certs"]["good"])))
        child.ch.send(fake_handoff(session_id))

    outcome = hostile_ca(steps)
    assert verdicts == [True, True]
    assert outcome.code == HANDED_OFF, str(outcome)
    fp = pubkey.fingerprint(user_key.asbytes())
    assert (f"Accepted publickey for {user.name} from {PEER} ssh2: ED25519-CERT {fp} ID good "
            f"(serial 1) CA ED25519 {pubkey.fingerprint(_blob(pki['ca']))}") in outcome.log


@pytest.mark.parametrize("case,logged", [
    ("expired", "Certificate invalid: expired"),
    ("wrong principal", "Certificate invalid: name is not a listed principal"),
    ("source-address", "with valid certificate but not from a permitted source address"),
    ("revoked serial", "revoked by file"),
    ("revoked CA", "revoked by file"),
])
def test_refused_certificate_cannot_be_verified(hostile_ca, user, user_key, pki, case,
                                                logged):
    """The monitor refuses the certificate; a child that then sends a
    perfectly signed KeyVerifyRequest for it is dropped."""
    cert = pki["certs"]["good" if case == "revoked CA" else case]
    answers = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name)
        answers.append(cert_allowed(child, cert))
        child.attack(cert_verify(user_key, session_id, user.name, cert))

    outcome = hostile_ca(steps, revoked=pki["ca_krl"] if case == "revoked CA" else None)
    assert answers == [False]
    assert logged in outcome.log, str(outcome)
    assert_refused(outcome, "KeyVerifyRequest for a key other than the one last allowed")


def test_good_certificate_then_another(hostile_ca, user, user_key, pki):
    """Allowed for a good certificate, the child asks to verify an expired
    one of the same key: another key, dropped."""
    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name)
        assert cert_allowed(child, pki["certs"]["good"])
        child.attack(cert_verify(user_key, session_id, user.name, pki["certs"]["expired"]))

    outcome = hostile_ca(steps)
    # the good certificate was accepted as a certificate, never for a login
    assert 'Accepted certificate ID "good"' in outcome.log
    assert_refused(outcome.without("Accepted certificate ID"),
                   "KeyVerifyRequest for a key other than the one last allowed")


def test_security_key_without_touch(hostile_ca, user):
    """A security key's signature without user presence: not verified, and
    the hand-off claimed after it refused."""
    key = SoftSecurityKey("ed25519", flags=0)
    (user.home / ".ssh" / "authorized_keys").write_text(key.public_line() + "\n")
    answers = []

    def steps(child: NetChild) -> None:
        session_id = child.kex()
        assert child.pwnam(user.name)
        request = wire.KeyAllowedRequest(key.key_type, key.plain_blob)
        answers.append(child.ch.call(request, wire.KeyAllowedAnswer)[0].allowed)
        blob = userauth_blob(session_id, user.name, key.plain_blob, algorithm=key.key_type)
        signature = key.sign_ssh_data(blob).asbytes()
        answers.append(child.verify(wire.KeyVerifyRequest(key.key_type, key.plain_blob, blob,
                                                          signature)))
        child.attack(fake_handoff(session_id))

    outcome = hostile_ca(steps)
    assert answers == [True, False]
    assert "user presence (authenticator touch) requirement not met" in outcome.log
    assert_refused(outcome, "Handoff before authentication")


def _blob(pub: Path) -> bytes:
    return base64.b64decode(pub.read_text().split()[1])

