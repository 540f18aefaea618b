"""sshd_config keywords, sshd(8) flags and policies, through the real client.

Each test starts its own privsep-sshd with the configuration under test
(conftest's ``server_with``) and logs in with the stock OpenSSH client.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon import OPENSSH, Server, privsep_command, ssh, ssh_argv, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _sshd(*args: str, config_text: str | None = None, tmp_path: Path | None = None):
    argv = [*privsep_command(), *args]
    if config_text is not None:
        assert tmp_path is not None
        path = tmp_path / "sshd_config"
        path.write_text(config_text)
        argv += ["-f", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


# --- -t: configuration errors name file and line ------------------------------

@pytest.mark.parametrize("text,message", [
    ("PasswordAuthentication maybe\n", 'line 1: unsupported option "maybe".'),
    ("Port 22\nNoSuchKeyword yes\n", "line 2: Bad configuration option: NoSuchKeyword"),
    ("Match Planet mars\n", "line 1: Bad Match condition"),
    ("Match User x\nPort 22\n", "line 2: Directive 'Port' is not allowed within a Match block"),
    ("MaxStartups 10:30\n", "line 1: Invalid MaxStartups spec."),
    ("Ciphers rot13\n", "line 1: Bad SSH2 cipher spec 'rot13'."),
])
def test_t_reports_file_and_line(tmp_path, text: str, message: str) -> None:
    result = _sshd("-t", config_text=text, tmp_path=tmp_path)
    assert result.returncode != 0
    assert str(tmp_path / "sshd_config") in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("text,extra", [
    ("Port 22\nNoSuchKeyword yes\nPasswordAuthentication\n", []),
    ("Match\n", []),
    ("Port 22\nMatch Address 10.0.1.0/8\n", []),
    ("NoSuchKeyword yes\nMaxStartups 10:30\n", []),
    ("Port 22\n", ["-o", "NoSuchKeyword=1"]),
])
def test_t_errors_as_sshd(tmp_path, text: str, extra: list[str]) -> None:
    """-t's error lines for a file sshd reads past (it counts some errors and
    ends with "terminating, N bad configuration options") or stops in,
    word for word beside Debian's sshd."""
    key = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {key}\n{text}")
    seen = {}
    for kind, command in (("openssh", [OPENSSH]), ("privsep", privsep_command())):
        result = subprocess.run([*command, "-t", "-f", str(config), *extra],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0, kind
        seen[kind] = result.stderr.replace("\r\n", "\n")
    assert seen["privsep"] == seen["openssh"]


def test_t_unreadable_host_key(tmp_path) -> None:
    key = tmp_path / "ssh_host_ed25519_key"
    key.write_text("not a key\n")
    key.chmod(0o600)
    result = _sshd("-t", config_text=f"HostKey {key}\n", tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"Unable to load host key \"{key}\"" in result.stderr


def test_t_good_config_and_unsupported_option(tmp_path) -> None:
    result = _sshd("-t", config_text="Port 2299\nKerberosGetAFSToken no\n", tmp_path=tmp_path)
    assert result.returncode == 0
    assert "line 2: Unsupported option KerberosGetAFSToken" in result.stderr


def test_include_with_glob_and_first_value_wins(tmp_path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-a.conf").write_text("MaxAuthTries 3\n")
    (tmp_path / "conf.d" / "20-b.conf").write_text("MaxAuthTries 4\nLoginGraceTime 1m\n")
    result = _sshd("-T", config_text=f"Include {tmp_path}/conf.d/*.conf\nMaxAuthTries 5\n",
                   tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "maxauthtries 3\n" in result.stdout
    assert "logingracetime 60\n" in result.stdout


# --- -T against Debian's sshd -T --------------------------------------------------

SHARED_CONFIG = """\
Port 2299
ListenAddress 127.0.0.1
AddressFamily inet
PidFile /run/privsep-test.pid
LogLevel VERBOSE
SyslogFacility LOCAL3
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM yes
AuthorizedKeysFile .ssh/authorized_keys .ssh/other_keys
StrictModes yes
MaxAuthTries 4
MaxSessions 7
MaxStartups 5:50:20
LoginGraceTime 45
AcceptEnv LANG LC_*
PermitUserEnvironment no
PrintMotd no
PrintLastLog yes
Banner none
ClientAliveInterval 30
ClientAliveCountMax 2
TCPKeepAlive no
AllowTcpForwarding local
AllowAgentForwarding no
AllowStreamLocalForwarding no
PermitTTY yes
GatewayPorts clientspecified
X11Forwarding no
Ciphers aes128-ctr,aes256-gcm@openssh.com
MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512
UseDNS no
VersionAddendum none
Subsystem sftp /usr/lib/openssh/sftp-server
Match User alice
    PasswordAuthentication yes
    MaxAuthTries 2
"""

COMPARED = (
    "port", "listenaddress", "addressfamily", "pidfile", "loglevel", "syslogfacility",
    "permitrootlogin", "pubkeyauthentication", "passwordauthentication",
    "kbdinteractiveauthentication", "permitemptypasswords", "usepam", "authorizedkeysfile",
    "strictmodes", "maxauthtries", "maxsessions", "maxstartups", "logingracetime", "acceptenv",
    "permituserenvironment", "printmotd", "printlastlog", "banner", "clientaliveinterval",
    "clientalivecountmax", "tcpkeepalive", "allowtcpforwarding", "allowagentforwarding",
    "allowstreamlocalforwarding", "permittty", "gatewayports", "x11forwarding", "ciphers", "macs",
    "usedns", "versionaddendum", "subsystem", "hostkey",
)


#: Our one addition to sshd 9.2's lists, offered last: OpenSSH 9.9 and later
#: prefer it (issue 13).
OUR_ADDITIONS = {"kexalgorithms": ",mlkem768x25519-sha256"}


def _dump(text: str) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        table.setdefault(key, []).append(value)
    return table


@pytest.mark.parametrize("context", [None, "user=alice,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=2299",
                                     "user=bob,host=h,addr=127.0.0.1,laddr=127.0.0.1,lport=2299"])
def test_T_matches_openssh_key_by_key(tmp_path, context: str | None) -> None:
    os.makedirs("/run/sshd", exist_ok=True)
    key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {key}\n" + SHARED_CONFIG)
    extra = ["-C", context] if context else []
    ours = subprocess.run([*privsep_command(), "-T", "-f", str(config), *extra],
                          capture_output=True, text=True, timeout=60)
    theirs = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(config), *extra],
                            capture_output=True, text=True, timeout=60)
    assert ours.returncode == 0, ours.stderr
    assert theirs.returncode == 0, theirs.stderr
    mine, reference = _dump(ours.stdout), _dump(theirs.stdout)
    for keyword, addition in OUR_ADDITIONS.items():
        assert mine[keyword][0].endswith(addition), mine[keyword]
        mine[keyword] = [mine[keyword][0].removesuffix(addition)]
    for keyword in COMPARED:
        assert mine.get(keyword) == reference.get(keyword), keyword
    # Every other keyword both print is printed alike, the algorithm lists too.
    differ = {k for k in set(mine) & set(reference) if mine[k] != reference[k]}
    assert not differ, {k: (mine[k], reference[k]) for k in differ}
    if context and "user=alice" in context:
        assert mine["passwordauthentication"] == ["yes"] and mine["maxauthtries"] == ["2"]


# --- Match blocks, Allow/Deny, PermitRootLogin at login time ---------------------

def test_match_user_changes_methods(server_with, make_user) -> None:
    alice, bob = make_user(prefix="pma"), make_user(prefix="pmb")
    server = server_with("PasswordAuthentication no",
                         tail=(f"Match User {alice.name}", "    PasswordAuthentication yes"))
    assert ssh(server, alice, "id -un", password=alice.password).stdout.strip() == alice.name.encode()
    refused = ssh(server, bob, "true", password=bob.password)
    assert refused.returncode == 255
    assert b"Permission denied (publickey)" in refused.stderr


def test_match_address_and_localport(server_with, user) -> None:
    server = server_with("PasswordAuthentication no",
                         tail=("Match Address 10.0.0.0/8", "    PasswordAuthentication yes",
                               "Match LocalPort 1", "    PasswordAuthentication yes"))
    assert ssh(server, user, "true", password=user.password).returncode == 255
    server2 = server_with("PasswordAuthentication no",
                          tail=("Match Address 127.0.0.0/8,!10.0.0.1", "    PasswordAuthentication yes"))
    assert ssh(server2, user, "true", password=user.password).returncode == 0


def test_match_group(server_with, make_user) -> None:
    member, other = make_user(prefix="pgm"), make_user(prefix="pgo")
    subprocess.run(["groupadd", "-f", "pstmatchgrp"], check=True)
    try:
        subprocess.run(["usermod", "-aG", "pstmatchgrp", member.name], check=True)
        server = server_with("PubkeyAuthentication yes",
                             tail=("Match Group pstmatchgrp", "    PubkeyAuthentication no"))
        assert ssh(server, member, "true").returncode == 255
        assert ssh(server, other, "true").returncode == 0
    finally:
        subprocess.run(["groupdel", "pstmatchgrp"], check=False)


@pytest.mark.parametrize("rule,allowed", [
    ("AllowUsers {a}", {"a"}), ("AllowUsers {a}@127.0.0.1", {"a"}),
    ("AllowUsers {a}@10.0.0.0/8", set()), ("DenyUsers {b}", {"a"}),
    ("DenyUsers *", set()), ("AllowGroups {ga}", {"a"}), ("DenyGroups {ga}", {"b"}),
])
def test_allow_and_deny(server_with, make_user, rule: str, allowed: set[str]) -> None:
    a, b = make_user(prefix="paa"), make_user(prefix="pab")
    server = server_with(rule.format(a=a.name, b=b.name, ga=a.name))
    for tag, user in (("a", a), ("b", b)):
        result = ssh(server, user, "true")
        assert (result.returncode == 0) == (tag in allowed), (rule, tag, result.stderr)
        if tag not in allowed:
            server.wait_for_log(f"User {user.name} from 127.0.0.1 not allowed because")


@pytest.fixture
def root_key(tmp_path):
    """A key temporarily in root's authorized_keys (removed afterwards)."""
    key = tmp_path / "root_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh_dir = Path("/root/.ssh")
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    before = auth.read_bytes() if auth.exists() else None
    line = key.with_suffix(".pub").read_text().strip()
    with open(auth, "a") as handle:
        handle.write(f"\n{line}\n")
    os.chmod(auth, 0o600)
    try:
        yield key
    finally:
        if before is None:
            auth.unlink()
        else:
            auth.write_bytes(before)


@pytest.mark.parametrize("policy,ok", [("no", False), ("prohibit-password", True),
                                       ("yes", True), ("forced-commands-only", False)])
def test_permit_root_login_with_key(server_with, root_key, policy: str, ok: bool) -> None:
    import pwd
    from tests.userutil import TestUser
    server = server_with(f"PermitRootLogin {policy}")
    root = TestUser("root", 0, 0, Path("/root"), None, root_key, None)
    result = ssh(server, root, "id -u")
    assert (result.returncode == 0) == ok, result.stderr
    if not ok:
        server.wait_for_log("ROOT LOGIN REFUSED FROM 127.0.0.1")


# --- limits and timing -----------------------------------------------------------

def test_max_auth_tries(server_with, user) -> None:
    server = server_with("MaxAuthTries 2")
    argv, env = ssh_argv(server, user, "true", password="wrong",
                         options=["NumberOfPasswordPrompts=5"])
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert result.returncode == 255
    server.wait_for_log(f"maximum authentication attempts exceeded for {user.name} from 127.0.0.1")
    server.wait_for_log("Too many authentication failures")


def test_max_startups_drops_beyond_full(server_with) -> None:
    server = server_with("MaxStartups 2:100:2")
    title = lambda: subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(server.pid)],  # noqa: E731
                                   capture_output=True, text=True).stdout
    wait_until(lambda: "[listener] 0 of 2-2 startups" in title())  # the start-up probe is gone
    held = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            assert sock.recv(64).startswith(b"SSH-2.0-")
            held.append(sock)
        wait_until(lambda: "[listener] 2 of 2-2 startups" in title())
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        extra.settimeout(10)
        assert extra.recv(64) == b"Exceeded MaxStartups\r\n"  # dropped, told as by sshd
        port = extra.getsockname()[1]
        extra.close()
        server.wait_for_log(f"drop connection #2 from [127.0.0.1]:{port} on [127.0.0.1]:{server.port} "
                            "past MaxStartups")
    finally:
        for sock in held:
            sock.close()


# --- what a session gets ----------------------------------------------------------

def test_banner(server_with, user, tmp_path) -> None:
    banner = tmp_path / "banner"
    banner.write_text("Authorized use only: privsep test\n")
    banner.chmod(0o644)
    server = server_with(f"Banner {banner}")
    result = ssh(server, user, "true", options=["LogLevel=INFO"])
    assert result.returncode == 0
    assert b"Authorized use only: privsep test" in result.stderr


def test_force_command(server_with, user) -> None:
    server = server_with("ForceCommand echo forced:$SSH_ORIGINAL_COMMAND")
    assert ssh(server, user, "echo mine").stdout == b"forced:echo mine\n"


def test_key_command_option(privsep_server: Server, user) -> None:
    auth = user.home / ".ssh" / "authorized_keys"
    auth.write_text(f'command="echo from-key",no-pty {user.pubkey}\n')
    assert ssh(privsep_server, user, "echo mine").stdout == b"from-key\n"
    result = ssh(privsep_server, user, tty=True)
    assert b"PTY allocation request failed" in result.stderr


def test_key_from_option(privsep_server: Server, user) -> None:
    auth = user.home / ".ssh" / "authorized_keys"
    auth.write_text(f'from="10.9.9.9" {user.pubkey}\n')
    assert ssh(privsep_server, user, "true").returncode == 255
    auth.write_text(f'from="127.0.0.1,10.9.9.9" {user.pubkey}\n')
    assert ssh(privsep_server, user, "true").returncode == 0


def test_permit_tty_no(server_with, user) -> None:
    server = server_with("PermitTTY no")
    # A forced pty that fails is fatal for the client, as against sshd.
    result = ssh(server, user, "tty", tty=True)
    assert result.returncode == 255
    assert b"PTY allocation request failed" in result.stderr
    server.wait_for_log(f"PTY allocation disabled for {user.name}")
    assert ssh(server, user, "tty").stdout.strip() == b"not a tty"


def test_set_env_and_user_environment(server_with, user) -> None:
    server = server_with("SetEnv PST_ONE=1 PST_TWO=two", "PermitUserEnvironment PST_*")
    env_file = user.home / ".ssh" / "environment"
    env_file.write_text("PST_THREE=3\nOTHER=no\n")
    out = ssh(server, user, "echo $PST_ONE-$PST_TWO-$PST_THREE-${OTHER:-unset}").stdout
    assert out == b"1-two-3-unset\n"


def test_print_last_log(server_with, user) -> None:
    server = server_with("PrintLastLog yes")
    ssh(server, user, tty=True, input=b"exit\n")
    second = ssh(server, user, tty=True, input=b"exit\n")
    assert re.search(rb"Last login: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} from 127\.0\.0\.1",
                     second.stdout), second.stdout


def test_ciphers_restrict_what_the_client_may_use(server_with, user) -> None:
    server = server_with("Ciphers aes256-gcm@openssh.com")
    assert ssh(server, user, "true", options=["Ciphers=aes256-gcm@openssh.com"]).returncode == 0
    refused = ssh(server, user, "true", options=["Ciphers=aes128-ctr", "LogLevel=INFO"])
    assert refused.returncode == 255
    assert b"no matching cipher" in refused.stderr


def test_version_addendum(server_with) -> None:
    server = server_with("VersionAddendum hello-ops")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert sock.recv(256).startswith(b"SSH-2.0-OpenSSH_compatible privsep_sshd_0.1.0 hello-ops\r\n")


def test_keyboard_interactive_through_pam(server_with, user) -> None:
    server = server_with("KbdInteractiveAuthentication yes", "PasswordAuthentication no")
    argv, env = ssh_argv(server, user, "id -un", password=user.password)
    argv = [a.replace("PreferredAuthentications=password",
                      "PreferredAuthentications=keyboard-interactive") for a in argv]
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == user.name.encode()
    server.wait_for_log(f"Accepted keyboard-interactive/pam for {user.name} from 127.0.0.1 port")
    bad = subprocess.run(argv, env={**env, "SSH_ASKPASS": "/bin/false"}, capture_output=True,
                         timeout=60)
    assert bad.returncode == 255
    server.wait_for_log(f"Failed keyboard-interactive/pam for {user.name} from 127.0.0.1")


# --- flags -------------------------------------------------------------------------

def test_inetd_mode_as_proxy_command(user, pam_service, tmp_path) -> None:
    config = tmp_path / "sshd_config"
    config.write_text("LogLevel VERBOSE\nPasswordAuthentication no\n")
    log = tmp_path / "inetd.log"
    proxy = " ".join([*privsep_command(), "-i", "-f", str(config), "-E", str(log)])
    argv = ["ssh", "-F", "/dev/null", "-o", f"ProxyCommand={proxy}", "-o",
            "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
            "LogLevel=ERROR", "-o", "BatchMode=yes", "-i", str(user.key_path),
            f"{user.name}@inetd-host", "echo via-inetd; exit 9"]
    result = subprocess.run(argv, capture_output=True, timeout=60)
    assert result.returncode == 9, result.stderr
    assert result.stdout == b"via-inetd\n"
    text = log.read_text()
    assert f"Accepted publickey for {user.name} from UNKNOWN port 65535 ssh2" in text


def test_E_logfile_and_h_hostkey(user, pam_service, tmp_path) -> None:
    from tests.daemon import free_port
    key = tmp_path / "only_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port = free_port()
    log = tmp_path / "daemon.log"
    (tmp_path / "cfg").write_text(f"ListenAddress 127.0.0.1\nPidFile {tmp_path}/pid\n")
    daemon = subprocess.Popen([*privsep_command(), "-D", "-f", str(tmp_path / "cfg"), "-p",
                               str(port), "-h", str(key), "-E", str(log)],
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: log.exists() and "Server listening" in log.read_text())
        scan = subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True,
                              text=True, timeout=30).stdout
        assert key.with_suffix(".pub").read_text().split()[1] in scan
        assert len([l for l in scan.splitlines() if l and not l.startswith("#")]) == 1
    finally:
        daemon.terminate()
        daemon.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_q_is_quiet(tmp_path, pam_service) -> None:
    from tests.daemon import free_port
    port = free_port()
    (tmp_path / "cfg").write_text(f"ListenAddress 127.0.0.1\nPidFile {tmp_path}/pid\n")
    daemon = subprocess.Popen([*privsep_command(), "-D", "-e", "-q", "-f", str(tmp_path / "cfg"),
                               "-p", str(port)], stdin=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until(lambda: _listening(port))
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=10)
    assert b"Server listening" not in err


# --- more keywords, one login each ----------------------------------------------

def test_authentication_method_switches(server_with, user) -> None:
    no_keys = server_with("PubkeyAuthentication no")
    assert ssh(no_keys, user, "true").returncode == 255
    assert ssh(no_keys, user, "true", password=user.password).returncode == 0
    no_passwords = server_with("PasswordAuthentication no")
    assert ssh(no_passwords, user, "true", password=user.password).returncode == 255
    assert ssh(no_passwords, user, "true").returncode == 0


def test_use_pam_no_means_no_pam_session(server_with, user) -> None:
    server = server_with("UsePAM no")
    result = ssh(server, user, "cat /proc/self/loginuid; echo; echo ${MOTD_SHOWN:-none}")
    assert result.returncode == 0
    loginuid, motd = result.stdout.decode().split()
    assert motd == "none"  # pam_motd never ran
    assert loginuid != str(user.uid)  # pam_loginuid never ran


def test_permit_empty_passwords(server_with, make_user) -> None:
    user = make_user(prefix="pep")
    subprocess.run(["passwd", "-d", user.name], check=True, capture_output=True)
    server = server_with("PermitEmptyPasswords no")
    assert ssh(server, user, "true", password="").returncode == 255


def test_authorized_keys_file_tokens(server_with, user) -> None:
    alt = user.home / "keys-for-me"
    alt.write_text(user.pubkey + "\n")
    os.chown(alt, user.uid, user.gid)
    alt.chmod(0o600)
    (user.home / ".ssh" / "authorized_keys").write_text("")
    server = server_with("AuthorizedKeysFile %h/keys-for-%u .ssh/none")
    assert ssh(server, user, "true").returncode == 255  # %u expands to the name, not "me"
    alt.rename(user.home / f"keys-for-{user.name}")
    assert ssh(server, user, "true").returncode == 0


def test_strict_modes(server_with, user) -> None:
    (user.home / ".ssh" / "authorized_keys").chmod(0o666)
    strict = server_with("StrictModes yes")
    assert ssh(strict, user, "true").returncode == 255
    strict.wait_for_log("Authentication refused: bad ownership or modes for file")
    lax = server_with("StrictModes no")
    assert ssh(lax, user, "true").returncode == 0


@pytest.mark.parametrize("keyword,server_value,client_option", [
    ("MACs", "hmac-sha2-512", "MACs=hmac-sha2-256"),
    ("KexAlgorithms", "ecdh-sha2-nistp384", "KexAlgorithms=curve25519-sha256@libssh.org"),
    ("HostKeyAlgorithms", "ssh-ed25519", "HostKeyAlgorithms=rsa-sha2-512"),
])
def test_algorithm_keywords(server_with, user, keyword, server_value, client_option) -> None:
    server = server_with(f"{keyword} {server_value}")
    assert ssh(server, user, "true").returncode == 0
    # aes128-ctr: with an AEAD cipher (the client's first choice) no MAC is
    # negotiated, so a MAC list with nothing in common refuses nobody.
    refused = ssh(server, user, "true", options=[client_option, "Ciphers=aes128-ctr",
                                                 "LogLevel=INFO"])
    assert refused.returncode == 255
    assert b"no matching" in refused.stderr


def test_pubkey_accepted_algorithms(server_with, make_user, tmp_path) -> None:
    user = make_user(prefix="ppa")
    server = server_with("PubkeyAcceptedAlgorithms -ssh-ed25519")
    assert ssh(server, user, "true").returncode == 255  # the user's key is ed25519
    server2 = server_with("PubkeyAcceptedAlgorithms +ssh-ed25519")
    assert ssh(server2, user, "true").returncode == 0


def test_listen_address_family_and_pid_file(tmp_path, pam_service) -> None:
    from tests.daemon import free_port
    port = free_port()
    pid_file = tmp_path / "listener.pid"
    (tmp_path / "cfg").write_text(f"ListenAddress 127.0.0.1\nListenAddress ::1\nAddressFamily inet\n"
                                  f"PidFile {pid_file}\nPort {port}\n")
    daemon = subprocess.Popen([*privsep_command(), "-D", "-e", "-f", str(tmp_path / "cfg")],
                              stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
        assert int(pid_file.read_text()) == daemon.pid
        wait_until(lambda: _listening(port))
        with pytest.raises(OSError):
            socket.create_connection(("::1", port), timeout=2).close()
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_log_level_and_syslog_facility_in_T(tmp_path) -> None:
    result = _sshd("-T", config_text="LogLevel DEBUG2\nSyslogFacility LOCAL5\n", tmp_path=tmp_path)
    assert "loglevel DEBUG2\n" in result.stdout and "syslogfacility LOCAL5\n" in result.stdout




def test_tcp_keep_alive(server_with, user) -> None:
    for value, expected in (("yes", b"keepalive"), ("no", b"")):
        server = server_with(f"TCPKeepAlive {value}")
        client = subprocess.Popen(ssh_argv(server, user, "sleep 5")[0], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            server.wait_for_log(f"Accepted publickey for {user.name}")

            def timers():
                out = subprocess.run(["ss", "-tnoH", "state", "established", "sport",
                                      f"= :{server.port}"], capture_output=True).stdout
                # While data is in flight ss shows the retransmit timer
                # ("timer:(on,...)") instead; wait for the idle connection.
                return out if out and b"timer:(on" not in out else None
            out = wait_until(timers)
            assert (b"keepalive" in out) == bool(expected), out
        finally:
            client.kill()
            client.wait()


def test_max_auth_tries_counts_refused_keys(server_with, make_user, tmp_path) -> None:
    """Offering more keys than MaxAuthTries allows ends the connection, as sshd does."""
    user = make_user(prefix="pmk")
    server = server_with("MaxAuthTries 3")
    keys = []
    for n in range(4):
        key = tmp_path / f"stranger{n}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        keys += ["-i", str(key)]
    argv, env = ssh_argv(server, user, "true", key=False, flags=keys)
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert result.returncode == 255
    server.wait_for_log(f"maximum authentication attempts exceeded for {user.name}")


def test_d_debug_serves_one_connection_in_the_foreground(user, pam_service, tmp_path) -> None:
    from tests.daemon import free_port
    port = free_port()
    (tmp_path / "cfg").write_text(f"ListenAddress 127.0.0.1\nPidFile {tmp_path}/pid\n")
    log = tmp_path / "debug.log"
    daemon = subprocess.Popen([*privsep_command(), "-d", "-E", str(log), "-f",
                               str(tmp_path / "cfg"), "-p", str(port)],
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # not a probe connection: -d serves exactly one
        wait_until(lambda: log.exists() and "Server listening" in log.read_text())
        server = Server("privsep", port, tmp_path, daemon)
        assert ssh(server, user, "echo debug-ok").stdout == b"debug-ok\n"
        # one connection, then the listener is done
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    text = log.read_text()
    assert f"Accepted publickey for {user.name}" in text
    assert "DEBUG" in text or "debug" in text.lower() or len(text.splitlines()) > 5
    assert not _listening(port)


def test_key_no_port_forwarding_option(privsep_server: Server, user) -> None:
    from tests.daemon import free_port
    auth = user.home / ".ssh" / "authorized_keys"
    auth.write_text(f"no-port-forwarding {user.pubkey}\n")
    port = free_port()
    result = ssh(privsep_server, user, "true",
                 options=["ExitOnForwardFailure=yes", "LogLevel=INFO"],
                 flags=["-R", f"127.0.0.1:{port}:127.0.0.1:9"])
    assert result.returncode == 255
    assert b"remote port forwarding failed" in result.stderr


def test_use_dns_names_the_client_for_match_host(server_with, user) -> None:
    """With UseDNS yes, 127.0.0.1 is 'localhost' (from /etc/hosts) for Match Host."""
    import socket as _socket
    if _socket.gethostbyaddr("127.0.0.1")[0] != "localhost":
        pytest.skip("127.0.0.1 does not resolve to localhost here")
    match = ("Match Host localhost", "    PubkeyAuthentication no")
    with_dns = server_with("UseDNS yes", tail=match)
    assert ssh(with_dns, user, "true").returncode == 255
    without = server_with("UseDNS no", tail=match)
    assert ssh(without, user, "true").returncode == 0


# --- algorithm lists as sshd resolves them (issue 13) ---------------------------

@pytest.mark.parametrize("lines", [
    [],  # the defaults: OpenSSH 9.2's lists, umac first among the MACs
    ["MACs -umac*"],
    ["MACs ^umac-128@openssh.com,hmac-sha1", "Ciphers -chacha*"],
    ["KexAlgorithms +diffie-hellman-group14-sha1,diffie-hellman-group-exchange-sha1"],
    ["KexAlgorithms -sntrup*,*sha1"],
    ["KexAlgorithms ^diffie-hellman-group1-sha1"],
    ["KexAlgorithms curve25519-sha256,diffie-hellman-group-exchange-sha256"],
    ["HostKeyAlgorithms +ssh-dss", "PubkeyAcceptedAlgorithms ^ssh-dss"],
    ["ModuliFile /etc/ssh/moduli.other"],
])
def test_T_algorithm_lists_as_sshd(tmp_path, lines: list[str]) -> None:
    key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {key}\n" + "\n".join(lines) + "\n")
    printed = []
    for argv in ([*privsep_command(), "-T", "-f", str(config)],
                 ["/usr/sbin/sshd", "-T", "-f", str(config)]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        table = _dump(result.stdout)
        printed.append({k: table[k] for k in ("kexalgorithms", "hostkeyalgorithms",
                                              "pubkeyacceptedalgorithms", "modulifile",
                                              "ciphers", "macs")})
    mine, reference = printed
    mine["kexalgorithms"] = [mine["kexalgorithms"][0].replace(",mlkem768x25519-sha256", "")]
    assert mine == reference
