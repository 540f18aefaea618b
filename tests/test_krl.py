"""KRLs and certificates parsed by privsep/wire (krl.py, certs.py), pure:
verdicts compared with ``ssh-keygen -Q`` on the same KRL (serial lists,
ranges and the bitmaps ssh-keygen picks for dense serials, key ids, explicit
keys, SHA1 and SHA256 hashes), and mutated input that never raises anything
but ValueError (nor hangs: bitmaps stay integers).
"""

from __future__ import annotations

import base64
import random
import struct
import subprocess
from pathlib import Path

import paramiko
import pytest

from privsep.monitor import certificates, pubkey
from privsep.wire import certs, krl


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path.with_name(path.name + ".pub")


def blob_of(pubfile: Path) -> bytes:
    return base64.b64decode(pubfile.read_text().split()[1])


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A CA, another CA, a user key, certificates with many serials and ids."""
    d = tmp_path_factory.mktemp("krl")
    ca, other_ca = d / "ca", d / "other_ca"
    keygen(ca)
    keygen(other_ca)
    user = keygen(d / "user")
    spare = keygen(d / "spare", "ecdsa")
    hashed = keygen(d / "hashed", "rsa")
    cert_files = []
    for serial in [*range(1, 12), *range(60, 75), *range(200, 260, 3), 1000, 2**40]:
        for signer, tag in ((ca, "a"), (other_ca, "b")):
            subprocess.run(["ssh-keygen", "-q", "-s", str(signer), "-I", f"id{serial % 7}",
                            "-z", str(serial), "-n", "x", str(user)], check=True)
            target = d / f"cert_{tag}_{serial}.pub"
            (d / "user-cert.pub").rename(target)
            cert_files.append(target)
    spec = d / "spec"
    spec.write_text("serial: 3\nserial: 5-8\nid: id4\nserial: 60\nserial: 62\nserial: 63\n"
                    "serial: 66\nserial: 69\nserial: 70\nserial: 71\nserial: 73\n"
                    + "".join(f"serial: {s}\n" for s in range(200, 260, 6))
                    + "serial: 900-100000\n"
                    + f"sha256: {hashed.read_text().strip()}\n")
    path = d / "krl"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(path), "-s", f"{ca}.pub", str(spec)],
                   check=True, capture_output=True)
    # explicit keys and a SHA1 hash, added to the same KRL (-u updates)
    sha1_spec = d / "spec1"
    sha1_spec.write_text(f"sha1: {spare.read_text().strip()}\n")
    subprocess.run(["ssh-keygen", "-q", "-k", "-u", "-f", str(path), str(sha1_spec)],
                   check=True, capture_output=True)
    return {"dir": d, "krl": path, "certs": cert_files, "user": user, "spare": spare,
            "hashed": hashed, "ca": Path(f"{ca}.pub")}


def keygen_says_revoked(krl_path: Path, files: list[Path]) -> dict[Path, bool]:
    out = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl_path), *map(str, files)],
                         capture_output=True, text=True).stdout
    verdicts = {}
    for line, path in zip(out.splitlines(), files):
        assert line.startswith(str(path))
        verdicts[path] = line.endswith("REVOKED")
    return verdicts


def test_verdicts_match_ssh_keygen(material) -> None:
    parsed = krl.parse_revoked_keys(material["krl"].read_bytes())
    files = material["certs"] + [material["user"], material["spare"], material["hashed"]]
    reference = keygen_says_revoked(material["krl"], files)
    ours = {}
    for path in files:
        blob = blob_of(path)
        if certs.is_cert_type(pubkey.public_blob_type(blob)):
            ours[path] = parsed.cert_revoked(certs.parse_certificate(blob))
        else:
            ours[path] = parsed.key_revoked(blob)
    assert ours == reference
    assert sum(reference.values()) > 10 and not all(reference.values())
    assert reference[material["spare"]] and reference[material["hashed"]]


def test_revoked_ca_revokes_its_certificates(material) -> None:
    """A KRL listing a CA's key (explicit key section) revokes every
    certificate it signed, as the monitor's revocation_refusal reports."""
    path = material["dir"] / "ca_krl"
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(path), str(material["ca"])], check=True)
    cert = material["certs"][0]
    assert keygen_says_revoked(path, [cert])[cert]
    reason = certificates.revocation_refusal(str(path), blob_of(cert))
    assert reason is not None and reason.startswith("Authentication key ED25519-CERT ")
    assert reason.endswith(f"revoked by file {path}")


def test_unreadable_or_bad_file_refuses(tmp_path: Path, material) -> None:
    """sshd refuses every key when RevokedKeys cannot be read or parsed."""
    blob = blob_of(material["user"])
    missing = certificates.revocation_refusal(str(tmp_path / "nothing"), blob)
    assert missing is not None and missing.endswith("No such file or directory")
    broken = tmp_path / "broken"
    broken.write_bytes(material["krl"].read_bytes()[:-3])
    assert certificates.revocation_refusal(str(broken), blob).endswith("invalid format")
    assert certificates.revocation_refusal("none", blob) is None


def _mutations(data: bytes, rng: random.Random, count: int):
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            pos = rng.randrange(len(mutated)) if mutated else 0
            if choice < 0.5 and mutated:
                mutated[pos] = rng.randrange(256)
            elif choice < 0.7:
                del mutated[pos:pos + rng.randint(1, 16)]
            elif choice < 0.9:
                mutated[pos:pos] = rng.randbytes(rng.randint(1, 8))
            else:
                mutated[pos:pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0",
                                                   b"\x7f\xff\xff\xff"])
        yield bytes(mutated)


def test_krl_mutations_never_crash(material) -> None:
    rng = random.Random(14)
    data = material["krl"].read_bytes()
    cert = certs.parse_certificate(blob_of(material["certs"][0]))
    outcomes = {"parsed": 0, "refused": 0}
    for mutated in _mutations(data, rng, 3000):
        try:
            parsed = krl.parse_revoked_keys(mutated)
        except ValueError:
            outcomes["refused"] += 1
            continue
        outcomes["parsed"] += 1
        parsed.cert_revoked(cert)
        parsed.cert_revoked(certs.Certificate(**{**cert.__dict__, "serial": 2**64 - 1}))
    assert outcomes["parsed"] and outcomes["refused"]


def test_certificate_mutations_never_crash(material) -> None:
    """Mutated certificates: the parser, the strict blob check, the CA
    signature check and the verifier answer or refuse, never raise."""
    rng = random.Random(1414)
    data = blob_of(material["certs"][0])
    accepted = 0
    for mutated in _mutations(data, rng, 3000):
        try:
            cert = certs.parse_certificate(mutated)
        except ValueError:
            assert pubkey.verify_userauth("ssh-ed25519-cert-v01@openssh.com", mutated,
                                          b"data", b"sig") is None
            continue
        if certificates.ca_signature_refusal(cert, ("ssh-ed25519",)) is None:
            accepted += 1
            assert cert.signed_data == data[:len(cert.signed_data)]
    # a byte changed in the signed part never keeps a good CA signature
    assert accepted < 100


def test_certificate_fields(material) -> None:
    """The fields ssh-keygen -L prints, read back by the parser."""
    path = material["certs"][3]
    cert = certs.parse_certificate(blob_of(path))
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(path)], capture_output=True,
                             text=True, check=True).stdout
    assert f"Serial: {cert.serial}" in listing
    assert f'Key ID: "{cert.key_id}"' in listing
    assert cert.principals == ("x",) and cert.cert_type == certs.USER_CERT
    assert cert.key_blob == blob_of(material["user"])
    assert certificates.ca_signature_refusal(cert, ("ssh-ed25519",)) is None
    assert certificates.ca_signature_refusal(cert, ("rsa-sha2-512",)) is not None
    names = [name for name, _ in cert.extensions]
    assert names == sorted(names) and "permit-pty" in names


def test_signed_krl(tmp_path: Path, material) -> None:
    """A KRL signature section: a good signature is accepted, a KRL changed
    after signing refuses every key, as sshd does (ssh-keygen cannot sign
    KRLs, so the section is appended here with the signing key)."""
    signer_path = tmp_path / "krl_signer"
    keygen(signer_path)
    signer = paramiko.Ed25519Key.from_private_key_file(str(signer_path))
    body = material["krl"].read_bytes()
    head = body + b"\x04" + struct.pack(">I", len(signer.asbytes())) + signer.asbytes()
    signature = signer.sign_ssh_data(head, "ssh-ed25519").asbytes()
    signed = head + struct.pack(">I", len(signature)) + signature
    good, bad = tmp_path / "signed", tmp_path / "tampered"
    good.write_bytes(signed)
    bad.write_bytes(signed[:25] + bytes([signed[25] ^ 1]) + signed[26:])  # generated_date
    blob = blob_of(material["user"])
    assert certificates.revocation_refusal(str(good), blob) is None
    refusal = certificates.revocation_refusal(str(bad), blob)
    assert refusal is not None and refusal.endswith("incorrect signature")
