"""Every sshd_config keyword of OpenSSH 9.2 (issue 15, section 1): the same
file given to this daemon's ``-T``/``-t`` and to Debian's sshd, compared.

No daemon is started: both programs only read the file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from privsep.config import otherkeys
from tests.daemon import privsep_command

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(),
                                reason="openssh-server is not installed")

#: Keywords other branches add (kex, cipher, certs, authmeth).  The lead
#: empties this set after merging them; the test then holds for all.
PENDING_OTHER_BRANCHES = {
    # kex
    "kexalgorithms", "hostkeyalgorithms", "pubkeyacceptedalgorithms", "modulifile",
    "requiredrsasize",
    # certs
    "trustedusercakeys", "authorizedprincipalsfile", "revokedkeys", "casignaturealgorithms",
    "hostcertificate",
    # authmeth
    "authenticationmethods", "authorizedkeyscommand", "authorizedkeyscommanduser",
    "authorizedprincipalscommand", "authorizedprincipalscommanduser", "exposeauthinfo",
    "pubkeyauthoptions",
}
#: This daemon's own keywords, which sshd does not know.
OURS_ONLY = {"privilegeseparationuser", "privilegeseparationdirectory", "processgeneration"}
#: Values that differ by design: this daemon's port, addresses and pid file
#: are its own (so that it runs beside sshd), and UsePAM is yes by default.
OWN_DEFAULTS = {"port", "listenaddress", "pidfile", "usepam"}

#: Debian's sshd_config, in effect: what both daemons print lists of.
BASE = "AcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n"


def _dump(text: str) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        table.setdefault(key, []).append(value)
    return table


def _both(tmp_path: Path, flag: str, text: str, *extra: str):
    """(ours, sshd's) CompletedProcess for the same file, run from tmp_path
    (relative paths are made absolute against the working directory)."""
    key = tmp_path / "host_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {key}\n{text}")
    os.makedirs("/run/sshd", exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    run = lambda argv: subprocess.run([*argv, flag, "-f", str(config), *extra], cwd=tmp_path,  # noqa: E731
                                      env=env, capture_output=True, text=True, timeout=60)
    return run(privsep_command()), run(["/usr/sbin/sshd"])


def test_T_prints_every_keyword_sshd_prints(tmp_path) -> None:
    ours, theirs = _both(tmp_path, "-T", BASE)
    assert ours.returncode == 0 and theirs.returncode == 0, (ours.stderr, theirs.stderr)
    mine, reference = _dump(ours.stdout), _dump(theirs.stdout)
    assert set(mine) - OURS_ONLY - PENDING_OTHER_BRANCHES == set(reference) - PENDING_OTHER_BRANCHES
    differ = {k for k in set(mine) & set(reference) if mine[k] != reference[k]}
    assert differ <= OWN_DEFAULTS | PENDING_OTHER_BRANCHES, {
        k: (mine[k], reference[k]) for k in differ - OWN_DEFAULTS - PENDING_OTHER_BRANCHES}


#: A value other than the default for each keyword of issue 15, and the
#: keyword sshd prints it under.
SET_VALUES = [
    ("ChrootDirectory /srv/%u", "chrootdirectory"),
    ("PermitTunnel point-to-point", "permittunnel"),
    ("PermitUserRC no", "permituserrc"),
    ("PerSourceMaxStartups 4", "persourcemaxstartups"),
    ("PerSourceMaxStartups none", "persourcemaxstartups"),
    ("PerSourceNetBlockSize 24:64", "persourcenetblocksize"),
    ("PerSourceNetBlockSize 24", "persourcenetblocksize"),
    ("UnusedConnectionTimeout 5m", "unusedconnectiontimeout"),
    ("UnusedConnectionTimeout 0", "unusedconnectiontimeout"),
    ("IPQoS af21 cs1", "ipqos"),
    ("IPQoS 0x10", "ipqos"),
    ("IPQoS 12", "ipqos"),
    ("IPQoS none", "ipqos"),
    ("HostKeyAgent agent.sock", "hostkeyagent"),
    ("HostKeyAgent SSH_AUTH_SOCK", "hostkeyagent"),
    ("X11DisplayOffset 12", "x11displayoffset"),
    ("X11UseLocalhost no", "x11uselocalhost"),
    ("XAuthLocation bin/xauth", "xauthlocation"),
    ("X11Forwarding yes", "x11forwarding"),
    ("SecurityKeyProvider /usr/lib/sk.so", "securitykeyprovider"),
    ("FingerprintHash md5", "fingerprinthash"),
    ("FingerprintHash sha512", "fingerprinthash"),
    ("ChannelTimeout session=5m agent-connection=1h", "channeltimeout"),
    ("ChannelTimeout none", "channeltimeout"),
    ("HostbasedAuthentication yes", "hostbasedauthentication"),
    ("HostbasedAcceptedAlgorithms ssh-ed25519,rsa-sha2-256", "hostbasedacceptedalgorithms"),
    ("HostbasedAcceptedAlgorithms -ssh-ed25519*", "hostbasedacceptedalgorithms"),
    ("HostbasedAcceptedAlgorithms +ssh-dss", "hostbasedacceptedalgorithms"),
    ("HostbasedAcceptedKeyTypes ^ssh-rsa", "hostbasedacceptedalgorithms"),
    ("HostbasedUsesNameFromPacketOnly yes", "hostbasedusesnamefrompacketonly"),
    ("IgnoreRhosts shosts-only", "ignorerhosts"),
    ("IgnoreUserKnownHosts yes", "ignoreuserknownhosts"),
    ("GSSAPIAuthentication yes", "gssapiauthentication"),
    ("GSSAPICleanupCredentials no", "gssapicleanupcredentials"),
    ("GSSAPIKexAlgorithms gss-group1-sha1-,gss-gex-sha1-", "gssapikexalgorithms"),
    ("GSSAPIKeyExchange yes", "gssapikeyexchange"),
    ("GSSAPIStoreCredentialsOnRekey yes", "gssapistorecredentialsonrekey"),
    ("GSSAPIStrictAcceptorCheck no", "gssapistrictacceptorcheck"),
    ("KerberosAuthentication yes", "kerberosauthentication"),
    ("KerberosOrLocalPasswd no", "kerberosorlocalpasswd"),
    ("KerberosTicketCleanup no", "kerberosticketcleanup"),
    ("LogVerbose kex.c:*:1000 packet.c:*", "logverbose"),
    ("DebianBanner no", "debianbanner"),
    ("KeepAlive no", "tcpkeepalive"),
    ("Protocol 2", "protocol"),
    ("UseLogin no", "uselogin"),
]


@pytest.mark.parametrize("line,keyword", SET_VALUES)
def test_T_prints_a_set_value_as_sshd(tmp_path, line: str, keyword: str) -> None:
    ours, theirs = _both(tmp_path, "-T", BASE + line + "\n")
    assert ours.returncode == 0 and theirs.returncode == 0, (ours.stderr, theirs.stderr)
    mine, reference = _dump(ours.stdout), _dump(theirs.stdout)
    assert mine.get(keyword) == reference.get(keyword)
    ignored = OWN_DEFAULTS | OURS_ONLY | PENDING_OTHER_BRANCHES
    assert {k: v for k, v in mine.items() if k not in ignored} == {
        k: v for k, v in reference.items() if k not in ignored}



# "ChannelTimeout none" inside Match prints as "channeltimeout none" in sshd
# (an artefact of its list handling), as nothing here: left out.
@pytest.mark.parametrize("line", [line for line, _ in SET_VALUES if not line.startswith(
    ("Protocol", "UseLogin", "ChannelTimeout none"))])
def test_match_block_allows_what_sshd_allows(tmp_path, line: str) -> None:
    """Inside Match: the keywords sshd allows are applied for a matching
    connection (-C), the others refused with sshd's words."""
    text = BASE + "Match User alice\n  " + line + "\n"
    context = ["-C", "user=alice,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=22"]
    ours, theirs = _both(tmp_path, "-T", text, *context)
    assert (ours.returncode == 0) == (theirs.returncode == 0), (ours.stderr, theirs.stderr)
    if theirs.returncode != 0:
        message = theirs.stderr.strip().splitlines()[0]
        assert message.endswith("is not allowed within a Match block"), message
        assert message in ours.stderr
    else:
        keyword = dict(SET_VALUES)[line]
        assert _dump(ours.stdout).get(keyword) == _dump(theirs.stdout).get(keyword)


BAD_VALUES = [
    "IPQoS foo", "IPQoS 256", "IPQoS af21 cs1 ef", "IPQoS",
    "FingerprintHash foo", "FingerprintHash",
    "PerSourceMaxStartups x", "PerSourceMaxStartups -1",
    "PerSourceNetBlockSize 33:64", "PerSourceNetBlockSize :24", "PerSourceNetBlockSize 8:129",
    "PermitTunnel Yes", "PermitTunnel",
    "RDomain foo",
    "X11DisplayOffset -1", "X11DisplayOffset abc", "X11DisplayOffset 99999999999",
    "ChannelTimeout foo", "ChannelTimeout session=forever",
    "UnusedConnectionTimeout abc",
    "LogVerbose none kex.c:*",
    "PermitUserRC maybe", "IgnoreRhosts maybe", "DebianBanner maybe",
    "GSSAPIKexAlgorithms foo", "GSSAPIKexAlgorithms +gss-group1-sha1-",
    "HostbasedAcceptedAlgorithms foo",
    "ChrootDirectory", "XAuthLocation", "HostKeyAgent", "SecurityKeyProvider",
    "X11MaxDisplays 3",
]


@pytest.mark.parametrize("line", BAD_VALUES)
def test_t_refuses_what_sshd_refuses_in_its_words(tmp_path, line: str) -> None:
    ours, theirs = _both(tmp_path, "-t", BASE + line + "\n")
    assert theirs.returncode != 0 and ours.returncode != 0, ours.stderr
    # sshd names the file as given, "FILE line 4: ..." (an unknown keyword:
    # "FILE: line 4: ..."); so does this daemon
    message = next(line for line in theirs.stderr.splitlines() if "line 4:" in line)
    assert message in ours.stderr, (message, ours.stderr)


@pytest.mark.parametrize("line", ["GSSAPIAuthentication yes", "KerberosAuthentication yes",
                                  "GSSAPIKeyExchange yes"])
def test_unavailable_features_are_logged_and_accepted(tmp_path, line: str) -> None:
    ours, _ = _both(tmp_path, "-t", BASE + line + "\n")
    assert ours.returncode == 0, ours.stderr
    assert f"sshd_config line 4: Unsupported option {line.split()[0]}" in ours.stderr
    quiet, _ = _both(tmp_path, "-t", BASE + line.split()[0] + " no\n")
    assert "Unsupported" not in quiet.stderr


#: Match RDomain: sshd 9.2 on Linux accepts it (unlike the RDomain keyword);
#: -C without rdomain= matches no such block.
RDOMAIN_MATCH = ("Match RDomain vrf-*,!vrf-red\n  PasswordAuthentication no\n"
                 "Match rdomain *\n  X11Forwarding yes\n")


@pytest.mark.parametrize("spec", [None, "user=a,host=h,addr=10.1.2.3",
                                  "user=a,host=h,addr=10.1.2.3,rdomain=vrf-blue",
                                  "user=a,host=h,addr=10.1.2.3,rdomain=vrf-red",
                                  "user=a,rdomain=other", "rdomain="])
def test_match_rdomain_as_sshd(tmp_path, spec: str | None) -> None:
    text = BASE + RDOMAIN_MATCH
    checked = _both(tmp_path, "-t", text)
    assert [p.returncode for p in checked] == [0, 0], checked
    ours, theirs = _both(tmp_path, "-T", text, *(["-C", spec] if spec is not None else []))
    assert ours.returncode == theirs.returncode, (ours.stderr, theirs.stderr)
    for keyword in ("passwordauthentication", "x11forwarding", "rdomain"):
        assert _dump(ours.stdout).get(keyword) == _dump(theirs.stdout).get(keyword), keyword
    if spec is not None and "vrf-blue" in spec:
        assert _dump(theirs.stdout)["passwordauthentication"] == ["no"]  # the case is real


def test_match_rdomain_without_a_pattern_as_sshd(tmp_path) -> None:
    ours, theirs = _both(tmp_path, "-t", BASE + "Match RDomain\n")
    assert ours.returncode != 0 and theirs.returncode != 0
    message = next(line for line in theirs.stderr.splitlines() if "line 4:" in line)
    assert message in ours.stderr, (message, ours.stderr)


@pytest.mark.parametrize("spec", ["bogus=1", "lport=x", "user"])
def test_bad_connection_spec_as_sshd(tmp_path, spec: str) -> None:
    """sshd reads -C before the file: its words and exit status 1."""
    ours, theirs = _both(tmp_path, "-T", BASE, "-C", spec)
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr) == (
        1, theirs.stderr), theirs
