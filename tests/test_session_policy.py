"""Session policy (privsep/session/policy.py): what sshd_config and the
authorized_keys line of the login allow a session.  Pure: options are built
in memory, key options come from privsep.wire.keyoptions.parse_key_options.

Expectations follow sshd(8) AUTHORIZED_KEYS FILE FORMAT, sshd_config(5) and
OpenSSH 9.2's auth-options.c and session.c.
"""

from __future__ import annotations

import dataclasses
import pwd

import pytest

from privsep.config.servconf import ServerOptions
from privsep.session.policy import SessionPolicy
from privsep.wire.keyoptions import parse_key_options


def _policy(key: str | None = None, **config) -> SessionPolicy:
    options = dataclasses.replace(ServerOptions().finish(), **config)
    return SessionPolicy(options, parse_key_options(key) if key is not None else ())


def _pw(home) -> pwd.struct_passwd:
    return pwd.struct_passwd(("alice", "x", 1000, 1000, "Alice", str(home), "/bin/sh"))


# --- key_permits ------------------------------------------------------------------------

@pytest.mark.parametrize("key,what,expected", [
    (None, "pty", True),
    ("no-pty", "pty", False),
    ("no-pty", "agent-forwarding", True),
    ("restrict", "pty", False),
    ("restrict", "port-forwarding", False),
    ("restrict", "agent-forwarding", False),
    ("restrict", "x11-forwarding", False),
    ("restrict", "user-rc", False),
    ("restrict,pty", "pty", True),
    ("restrict,pty", "agent-forwarding", False),
    ("restrict,port-forwarding,agent-forwarding", "port-forwarding", True),
    ("restrict,port-forwarding,agent-forwarding", "agent-forwarding", True),
    ('command="true"', "pty", True),
    ("NO-PTY", "pty", False),                                # names are case-insensitive
    ("Restrict,PTY", "pty", True),
])
def test_key_permits(key, what: str, expected: bool) -> None:
    assert _policy(key).key_permits(what) is expected


@pytest.mark.parametrize("key,expected", [
    ("pty,restrict", False),       # restrict after pty takes it away again
    ("no-pty,pty", True),          # the later flag wins
    ("pty,no-pty", False),
    ("restrict,pty,no-pty", False),
])
def test_key_flags_apply_left_to_right(key: str, expected: bool) -> None:
    """auth-options.c sshauthopt_parse() walks the options in order: each flag
    sets permit_pty_flag, and 'restrict' clears them all where it stands."""
    assert _policy(key).key_permits("pty") is expected


# --- pty_allowed / agent_allowed ----------------------------------------------------------

@pytest.mark.parametrize("permit_tty,key,expected", [
    (True, None, True),
    (False, None, False),
    (True, "no-pty", False),
    (True, "restrict", False),
    (True, "restrict,pty", True),
    (False, "restrict,pty", False),                          # PermitTTY no always wins
    (True, "restrict,agent-forwarding", False),
    (True, "no-agent-forwarding,no-port-forwarding", True),
    (True, 'command="/bin/true"', True),
])
def test_pty_allowed(permit_tty: bool, key, expected: bool) -> None:
    assert _policy(key, permit_tty=permit_tty).pty_allowed() is expected


@pytest.mark.parametrize("allow_agent,key,expected", [
    (True, None, True),
    (False, None, False),
    (True, "no-agent-forwarding", False),
    (True, "restrict", False),
    (True, "restrict,agent-forwarding", True),
    (False, "restrict,agent-forwarding", False),
    (True, "restrict,pty", False),
    (True, "no-pty", True),
])
def test_agent_allowed(allow_agent: bool, key, expected: bool) -> None:
    assert _policy(key, allow_agent_forwarding=allow_agent).agent_allowed() is expected


# --- forced_command ---------------------------------------------------------------------

@pytest.mark.parametrize("force_command,key,expected", [
    ("none", None, None),
    ("none", "no-pty", None),
    ("none", 'command="ls -l"', "ls -l"),
    ("none", 'restrict,command="rsync --server"', "rsync --server"),
    ("none", r'command="echo \"hi\""', 'echo "hi"'),
    ("none", r'command="a\b"', r"a\b"),                     # other backslashes are literal
    ("NONE", 'command="ls"', "ls"),
    ("/usr/bin/menu", None, "/usr/bin/menu"),
    ("/usr/bin/menu", 'command="ls"', "/usr/bin/menu"),     # ForceCommand wins
    ("internal-sftp -d /srv", 'command="ls"', "internal-sftp -d /srv"),
])
def test_forced_command(force_command: str, key, expected) -> None:
    assert _policy(key, force_command=force_command).forced_command() == expected


# --- extra_environment --------------------------------------------------------------------

@pytest.mark.parametrize("permit,key,set_env,expected", [
    ("no", None, [], {}),
    ("no", None, ["S=1"], {"S": "1"}),
    ("no", 'environment="A=b"', ["S=1"], {"S": "1"}),
    ("yes", 'environment="A=b"', ["S=1"], {"S": "1", "A": "b"}),
    ("yes", 'environment="A=b",environment="C=d=e"', [], {"A": "b", "C": "d=e"}),
    ("yes", 'environment="A="', [], {"A": ""}),
    ("A,LC_*", 'environment="A=b",environment="B=c",environment="LC_ALL=C"', [],
     {"A": "b", "LC_ALL": "C"}),
    ("B", 'environment="A=b"', [], {}),
    ("no", None, ["S=1", "S=2", "T=x y"], {"S": "1", "T": "x y"}),    # first SetEnv wins
])
def test_extra_environment(tmp_path, permit: str, key, set_env, expected) -> None:
    policy = _policy(key, permit_user_environment=permit, set_env=set_env)
    assert policy.extra_environment(_pw(tmp_path)) == expected


def _environment_file(home, text: str) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh" / "environment").write_text(text)


@pytest.mark.parametrize("permit,expected", [
    ("no", {}),
    ("yes", {"FILE": "1", "EMPTY": "", "EQ": "a=b"}),
    ("F*", {"FILE": "1"}),
])
def test_user_environment_file(tmp_path, permit: str, expected) -> None:
    _environment_file(tmp_path, "# a comment\n\nFILE=1\nEMPTY=\nEQ=a=b\nno equals sign\n")
    policy = _policy(None, permit_user_environment=permit)
    assert policy.extra_environment(_pw(tmp_path)) == expected


def test_missing_environment_file_is_not_an_error(tmp_path) -> None:
    policy = _policy('environment="A=b"', permit_user_environment="yes")
    assert policy.extra_environment(_pw(tmp_path / "nowhere")) == {"A": "b"}


def test_set_env_overrides_user_environment(tmp_path) -> None:
    """sshd_config(5) SetEnv: 'Environment variables set by SetEnv override the
    default environment and any variables specified by the user via AcceptEnv
    or PermitUserEnvironment.'  (session.c applies SetEnv last.)"""
    _environment_file(tmp_path, "FROMFILE=user\n")
    policy = _policy('environment="FROMKEY=user"', permit_user_environment="yes",
                     set_env=["FROMKEY=admin", "FROMFILE=admin"])
    assert policy.extra_environment(_pw(tmp_path)) == {"FROMKEY": "admin",
                                                       "FROMFILE": "admin"}


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD"])
def test_permit_user_environment_negation(tmp_path, name: str) -> None:
    """PermitUserEnvironment takes a pattern list (match_pattern_list in
    session.c): '*,!PATH,!LD_*' allows everything except those names."""
    policy = _policy(f'environment="{name}=/tmp/evil",environment="OK=1"',
                     permit_user_environment="*,!PATH,!LD_*")
    assert policy.extra_environment(_pw(tmp_path)) == {"OK": "1"}


def test_environment_file_is_read_after_key_options(tmp_path) -> None:
    """session.c do_setup_env: environment= from the key first, then
    ~/.ssh/environment, each child_set_env() replacing the earlier value."""
    _environment_file(tmp_path, "A=file\n")
    policy = _policy('environment="A=key"', permit_user_environment="yes")
    assert policy.extra_environment(_pw(tmp_path)) == {"A": "file"}


# --- login_banner -------------------------------------------------------------------------

@pytest.mark.parametrize("pam,last_login,expected", [
    ((), "", ""),
    (("Welcome",), "", "Welcome\n"),
    ((), "Last login: Mon Jan  1 00:00:00 2024 from 192.0.2.1",
     "Last login: Mon Jan  1 00:00:00 2024 from 192.0.2.1\n"),
    (("one", "two"), "Last login: x", "one\ntwo\nLast login: x\n"),
])
def test_login_banner_without_motd(pam, last_login: str, expected: str) -> None:
    assert _policy(None, print_motd=False).login_banner(pam, last_login) == expected


def test_login_banner_with_motd_puts_it_between_pam_and_last_login() -> None:
    try:
        with open("/etc/motd", encoding="utf-8", errors="replace") as handle:
            motd = [handle.read().rstrip("\n")]
    except OSError:
        motd = []
    banner = _policy(None, print_motd=True).login_banner(("pam says",), "Last login: x")
    assert banner == "".join(f"{line}\n" for line in ["pam says", *motd, "Last login: x"])


# --- forward_rules -------------------------------------------------------------------------

@pytest.mark.parametrize("key,local,remote", [
    (None, True, True),
    ("no-port-forwarding", False, False),
    ("restrict", False, False),
    ("restrict,port-forwarding", True, True),
    ("no-pty,no-agent-forwarding", True, True),
])
def test_forward_rules_follow_the_key(key, local: bool, remote: bool) -> None:
    rules = _policy(key).forward_rules()
    assert (rules.local_tcp(), rules.remote_tcp()) == (local, remote)
    assert (rules.local_streamlocal(), rules.remote_streamlocal()) == (local, remote)


@pytest.mark.parametrize("config,local,remote", [
    ({"allow_tcp_forwarding": "local"}, True, False),
    ({"allow_tcp_forwarding": "remote"}, False, True),
    ({"allow_tcp_forwarding": "no"}, False, False),
    ({"disable_forwarding": True}, False, False),
])
def test_forward_rules_follow_the_config(config, local: bool, remote: bool) -> None:
    rules = _policy("restrict,port-forwarding", **config).forward_rules()
    assert (rules.local_tcp(), rules.remote_tcp()) == (local, remote)


def test_forward_rules_take_permitopen_and_permitlisten() -> None:
    rules = _policy('permitopen="db:5432",permitopen="[::1]:80",permitlisten="8080"'
                    ).forward_rules()
    assert rules.key_permit_open == ["db:5432", "[::1]:80"]
    assert rules.key_permit_listen == ["8080"]
    assert rules.open_permitted("db", 5432) and rules.open_permitted("::1", 80)
    assert not rules.open_permitted("db", 5433)
    assert rules.listen_permitted("", 8080) and not rules.listen_permitted("", 8081)


def test_forward_rules_without_permit_options_leave_the_hooks_open() -> None:
    rules = _policy("no-pty").forward_rules()
    assert rules.key_permit_open is None and rules.key_permit_listen is None
    assert rules.open_permitted("anywhere", 1)


def test_key_environment_first_value_wins(tmp_path) -> None:
    """auth-options.c keeps the first environment= of a name."""
    policy = _policy('environment="A=1",environment="A=2"', permit_user_environment="yes")
    assert policy.extra_environment(_pw(tmp_path)) == {"A": "1"}


def test_environment_file_keeps_trailing_blanks(tmp_path) -> None:
    """session.c read_environment_file() skips leading blanks only."""
    _environment_file(tmp_path, "  \t# comment\n\tA=x \n")
    policy = _policy(None, permit_user_environment="yes")
    assert policy.extra_environment(_pw(tmp_path)) == {"A": "x "}
