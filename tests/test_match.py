"""Match blocks and access rules (privsep/config/match.py, servconf.options_for): pure.

The expectations follow OpenSSH 9.2's match.c/servconf.c/auth.c and
sshd_config(5): wildcards are only ``*`` and ``?``, a ``!`` entry that
matches wins over everything, a list of only negations matches nothing.
"""

from __future__ import annotations

import textwrap

import pytest

from privsep.config.match import (
    ConnectionInfo, access_refusal, criteria_match, match_address, match_pattern_list,
)
from privsep.config.servconf import ConfigError, ServerOptions, parse_config


# --- match_pattern_list ---------------------------------------------------------------

@pytest.mark.parametrize("value,patterns,expected", [
    ("alice", "alice", True),
    ("alice", "bob", False),
    ("alice", "Alice", False),            # user patterns are case-sensitive
    ("alice", "a*", True),
    ("alice", "*e", True),
    ("alice", "al*ce", True),
    ("alice", "?lice", True),
    ("alice", "??lice", False),
    ("alice", "alic", False),             # whole-string match, not a prefix
    ("alice", "bob,carol,alice", True),
    ("alice", "bob,carol", False),
    ("alice", "*,!alice", False),         # negation wins ...
    ("alice", "!alice,*", False),         # ... wherever it stands
    ("alice", "!a*,alice", False),
    ("bob", "*,!alice", True),
    ("alice", "!bob", False),             # only negations: nothing matches
    ("alice", "", False),
    ("a.b", "a?b", True),
    ("a", "?", True),
    ("", "*", True),
])
def test_match_pattern_list(value: str, patterns: str, expected: bool) -> None:
    assert match_pattern_list(value, patterns) is expected


@pytest.mark.parametrize("value,patterns,expected", [
    ("b", "[ab]", False),                 # OpenSSH has no character classes ...
    ("[ab]", "[ab]", True),               # ... a '[' is a literal character
])
def test_brackets_are_literal_as_in_openssh(value: str, patterns: str, expected: bool) -> None:
    """match.c's match_pattern knows only '*' and '?'; fnmatch's [seq] is not OpenSSH."""
    assert match_pattern_list(value, patterns) is expected


# --- match_address -------------------------------------------------------------------

@pytest.mark.parametrize("addr,patterns,expected", [
    ("192.168.1.5", "192.168.1.0/24", True),
    ("192.168.2.5", "192.168.1.0/24", False),
    ("192.168.1.5", "192.168.1.5/32", True),
    ("192.168.1.6", "192.168.1.5/32", False),
    ("10.1.2.3", "0.0.0.0/0", True),
    ("192.168.1.5", "192.168.1.*", True),
    ("192.168.10.5", "192.168.1.*", False),
    ("192.168.1.5", "192.168.1.?", True),
    ("192.168.1.5", "192.168.1.5", True),
    ("192.168.1.50", "192.168.1.5", False),
    ("10.0.0.1", "10.0.0.0/8,!10.0.0.1", False),       # negation wins
    ("10.0.0.2", "10.0.0.0/8,!10.0.0.1", True),
    ("10.1.2.3", "!10.1.0.0/16,10.0.0.0/8", False),    # negated CIDR, first
    ("10.2.2.3", "!10.1.0.0/16,10.0.0.0/8", True),
    ("10.2.2.3", "!10.1.0.0/16", False),               # only negations
    ("172.16.0.1", "10.0.0.0/8,172.16.0.0/12", True),
    ("2001:db8::1", "2001:db8::/32", True),
    ("2001:db9::1", "2001:db8::/32", False),
    ("2001:db8::1", "2001:db8::/32,!2001:db8::1", False),
    ("::1", "::1", True),
    ("::1", "::1/128", True),
    ("fe80::1", "fe80::*", True),
    ("192.168.1.5", "::/0", False),                    # other family never matches
    ("2001:db8::1", "0.0.0.0/0", False),
    # malformed patterns never match (and never negate)
    ("10.0.0.1", "10.0.0.0/33", False),
    ("10.0.0.1", "10.0.0.0/abc", False),
    ("10.0.0.1", "not-an-address/8", False),
    ("10.0.0.1", "!10.0.0.0/33", False),
    ("2001:db8::1", "2001:db8::/129", False),
    # an address that is not an address matches no CIDR block
    ("UNKNOWN", "10.0.0.0/8", False),
])
def test_match_address(addr: str, patterns: str, expected: bool) -> None:
    assert match_address(addr, patterns) is expected


# --- criteria_match ------------------------------------------------------------------

ALICE = ConnectionInfo(user="alice", host="client.example.com", address="192.168.1.5",
                       local_address="10.0.0.1", local_port=22,
                       groups=frozenset({"alice", "staff"}))


@pytest.mark.parametrize("criteria,expected", [
    ((("all", ""),), True),
    ((("user", "alice"),), True),
    ((("user", "bob"),), False),
    ((("user", "a*,!admin"),), True),
    ((("user", "*,!alice"),), False),
    ((("group", "staff"),), True),
    ((("group", "st*"),), True),
    ((("group", "wheel"),), False),
    ((("group", "wheel,staff"),), True),
    ((("host", "*.example.com"),), True),
    ((("host", "*.example.org"),), False),
    ((("host", "client.example.com"),), True),
    ((("address", "192.168.1.0/24"),), True),
    ((("address", "192.168.1.*"),), True),
    ((("address", "10.0.0.0/8"),), False),
    ((("address", "*,!192.168.1.5"),), False),
    ((("localaddress", "10.0.0.1"),), True),
    ((("localaddress", "10.0.0.0/8"),), True),
    ((("localaddress", "192.168.0.0/16"),), False),
    ((("localport", "22"),), True),
    ((("localport", "2222"),), False),
    # every criterion of a line must hold
    ((("user", "alice"), ("address", "192.168.1.0/24")), True),
    ((("user", "alice"), ("address", "10.0.0.0/8")), False),
    ((("user", "bob"), ("address", "192.168.1.0/24")), False),
    ((("user", "alice"), ("group", "staff"), ("localport", "22")), True),
    ((("user", "alice"), ("group", "staff"), ("localport", "23")), False),
])
def test_criteria_match(criteria, expected: bool) -> None:
    assert criteria_match(criteria, ALICE) is expected


@pytest.mark.parametrize("criterion", ["user", "group", "host", "address", "localaddress",
                                       "localport", "rdomain"])
@pytest.mark.parametrize("patterns", ["*", "!nothing-like-this"])
def test_unknown_value_never_matches(criterion: str, patterns: str) -> None:
    assert criteria_match(((criterion, patterns),), ConnectionInfo()) is False


def test_match_all_holds_for_an_unknown_connection() -> None:
    assert criteria_match((("all", ""),), ConnectionInfo()) is True


def test_group_needs_a_known_user() -> None:
    conn = ConnectionInfo(groups=frozenset({"staff"}))
    assert criteria_match((("group", "staff"),), conn) is False


@pytest.mark.parametrize("patterns", ["*,!wheel", "staff,!wheel", "!wheel,staff"])
def test_group_negation_wins_over_other_groups(patterns: str) -> None:
    """OpenSSH's ga_match_pattern_list: a group that matches a '!' entry makes
    the whole Match Group false, whatever the user's other groups match."""
    conn = ConnectionInfo(user="carol", groups=frozenset({"staff", "wheel"}))
    assert criteria_match((("group", patterns),), conn) is False


@pytest.mark.parametrize("host,patterns", [
    ("client.example.com", "*.EXAMPLE.com"),
    ("Client.Example.COM", "*.example.com"),
])
def test_host_matching_ignores_case(host: str, patterns: str) -> None:
    """OpenSSH matches Match Host with match_hostname(): both sides lower-cased."""
    conn = ConnectionInfo(user="alice", host=host)
    assert criteria_match((("host", patterns),), conn) is True


# --- ConnectionInfo.from_spec (sshd -C) ------------------------------------------------

def test_from_spec_all_fields() -> None:
    conn = ConnectionInfo.from_spec(
        "user=alice,host=pc.example.com,addr=192.0.2.1,laddr=10.0.0.1,lport=2222")
    assert conn == ConnectionInfo(user="alice", host="pc.example.com", address="192.0.2.1",
                                  local_address="10.0.0.1", local_port=2222)
    assert conn.groups == frozenset()


@pytest.mark.parametrize("spec,expected", [
    ("user=alice", ConnectionInfo(user="alice")),
    ("addr=2001:db8::1", ConnectionInfo(address="2001:db8::1")),
    ("lport=22,user=bob", ConnectionInfo(user="bob", local_port=22)),
    ("host=h,host=h2", ConnectionInfo(host="h2")),         # the last one counts
    ("user=a,rdomain=vrf1", ConnectionInfo(user="a", rdomain="vrf1")),
    ("user=,rdomain=", ConnectionInfo(user="", rdomain="")),   # sshd takes empty values
    ("user=a,,host=h", ConnectionInfo(user="a")),              # and stops at an empty entry
])
def test_from_spec_partial(spec: str, expected: ConnectionInfo) -> None:
    assert ConnectionInfo.from_spec(spec) == expected


@pytest.mark.parametrize("spec,message", [
    ("bogus=1", "Invalid test mode specification bogus=1"),
    ("user=alice,vrf=x", "Invalid test mode specification vrf=x"),
    ("user", "Invalid test mode specification user"),
    ("lport=", "Invalid port '' in test mode specification lport="),
    ("User=alice", "Invalid test mode specification User=alice"),
    ("lport=abc", "abc"),
])
def test_from_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionInfo.from_spec(spec)


@pytest.mark.parametrize("spec", ["lport=70000", "lport=-1"])
def test_from_spec_port_out_of_range(spec: str) -> None:
    """sshd -C checks lport with a2port(): 'Invalid port ... in test mode specification'."""
    with pytest.raises(ValueError):
        ConnectionInfo.from_spec(spec)


# --- parse_config + options_for ---------------------------------------------------------

CONFIG = """\
    PasswordAuthentication yes
    passwordauthentication no
    PermitTTY yes
    MaxAuthTries 4
    AllowUsers alice bob
    AllowUsers carol
    AcceptEnv FOO

    Match User alice
        PermitTTY no
        AllowTcpForwarding local
        AllowUsers alice
        MaxSessions 3
        MaxSessions 5

    Match Address 192.168.1.0/24
        PermitTTY yes
        MaxAuthTries 2
        AllowUsers dave

    Match Group admins
        ForceCommand /usr/bin/admin-menu --verbose

    Match User bob Address 10.0.0.0/8
        AllowTcpForwarding no

    Match All
        Banner /etc/issue.net
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "sshd_config"
    path.write_text(textwrap.dedent(CONFIG))
    return parse_config(str(path), [])


def test_global_options_ignore_match_blocks(config) -> None:
    options = config.global_options()
    assert options.password_authentication is True           # first value wins
    assert options.permit_tty is True
    assert options.max_auth_tries == 4
    assert options.allow_users == ["alice", "bob", "carol"]   # lists accumulate
    assert options.accept_env == ["FOO"]                      # replaces the default
    assert options.allow_tcp_forwarding == "yes"
    assert options.banner == "none"
    assert options.force_command == "none"


def test_match_overrides_globals(config) -> None:
    options = config.options_for(ConnectionInfo(user="alice", address="10.9.9.9"))
    assert options.permit_tty is False
    assert options.allow_tcp_forwarding == "local"
    assert options.allow_users == ["alice"]                   # replaces the global list
    assert options.max_sessions == 3                          # first value in the block
    assert options.max_auth_tries == 4                        # not set by a block: global
    assert options.banner == "/etc/issue.net"                 # Match All
    assert options.password_authentication is True


def test_earlier_matching_block_wins_for_the_same_keyword(config) -> None:
    options = config.options_for(ConnectionInfo(user="alice", address="192.168.1.5"))
    assert options.permit_tty is False                        # User alice came first
    assert options.max_auth_tries == 2                        # only the Address block sets it
    assert options.allow_users == ["alice", "dave"]           # list keywords accumulate


def test_a_block_that_does_not_match_changes_nothing(config) -> None:
    options = config.options_for(ConnectionInfo(user="bob", address="192.168.1.5"))
    assert options.permit_tty is True
    assert options.allow_tcp_forwarding == "yes"              # bob is not in 10/8
    assert options.max_auth_tries == 2
    assert options.allow_users == ["dave"]


def test_all_criteria_of_a_block_must_hold(config) -> None:
    options = config.options_for(ConnectionInfo(user="bob", address="10.1.1.1"))
    assert options.allow_tcp_forwarding == "no"
    options = config.options_for(ConnectionInfo(user="carol", address="10.1.1.1"))
    assert options.allow_tcp_forwarding == "yes"


def test_match_group_uses_the_groups_field(config) -> None:
    admin = ConnectionInfo(user="carol", address="10.1.1.1", groups=frozenset({"admins"}))
    assert config.options_for(admin).force_command == "/usr/bin/admin-menu --verbose"
    other = ConnectionInfo(user="carol", address="10.1.1.1", groups=frozenset({"users"}))
    assert config.options_for(other).force_command == "none"


def test_unknown_user_gets_only_blocks_without_user_criteria(config) -> None:
    options = config.options_for(ConnectionInfo(address="10.1.1.1"))
    assert options.permit_tty is True
    assert options.banner == "/etc/issue.net"
    assert options.allow_users == ["alice", "bob", "carol"]


def test_options_for_does_not_leak_between_connections(config) -> None:
    config.options_for(ConnectionInfo(user="alice", address="192.168.1.5"))
    options = config.options_for(ConnectionInfo(user="carol", address="10.1.1.1"))
    assert options.permit_tty is True
    assert options.allow_users == ["alice", "bob", "carol"]
    assert config.global_options().allow_users == ["alice", "bob", "carol"]


def _parse(tmp_path, text: str):
    path = tmp_path / "sshd_config"
    path.write_text(textwrap.dedent(text))
    return parse_config(str(path), [])


@pytest.mark.parametrize("text,message", [
    ("Match User alice\n    Port 2200\n",
     "line 2: Directive 'Port' is not allowed within a Match block"),
    ("Match Foo bar\n", "Unsupported Match attribute Foo\n.* line 1: Bad Match condition"),
    ("Match User\n", "Missing Match criteria for User\n.* line 1: Bad Match condition"),
    ("Match\n", 'line 1: no argument after keyword "Match"'),
    ("Match User alice All\n", "'all' cannot be combined with other Match attributes\n"
                                ".* line 1: Bad Match condition"),
])
def test_bad_match_lines(tmp_path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(tmp_path, text)


def test_match_criteria_names_are_case_insensitive(tmp_path) -> None:
    config = _parse(tmp_path, "MATCH user alice ADDRESS 10.0.0.0/8\n    PermitTTY no\n")
    assert config.options_for(ConnectionInfo(user="alice", address="10.0.0.1")).permit_tty \
        is False


def test_match_address_with_a_bad_cidr_is_a_config_error(tmp_path) -> None:
    """sshd refuses the file: 'Invalid Match address argument' (servconf.c)."""
    with pytest.raises(ConfigError):
        _parse(tmp_path, "Match Address 10.0.0.0/33\n    PermitTTY no\n")


# --- access_refusal -----------------------------------------------------------------------

def _options(**lists) -> ServerOptions:
    options = ServerOptions().finish()
    for name, value in lists.items():
        setattr(options, name, value)
    return options


ADDR = "192.0.2.7"


def _why(user: str, reason: str, addr: str = ADDR) -> str:
    return f"User {user} from {addr} not allowed because {reason}"


@pytest.mark.parametrize("rules,user,groups,addr,host,expected", [
    ({}, "alice", {"alice"}, ADDR, None, None),
    # DenyUsers
    ({"deny_users": ["bob"]}, "bob", set(), ADDR, None, _why("bob", "listed in DenyUsers")),
    ({"deny_users": ["b*"]}, "bob", set(), ADDR, None, _why("bob", "listed in DenyUsers")),
    ({"deny_users": ["b*"]}, "alice", set(), ADDR, None, None),
    ({"deny_users": ["alice@10.0.0.0/8"]}, "alice", set(), "10.1.1.1", None,
     _why("alice", "listed in DenyUsers", "10.1.1.1")),
    ({"deny_users": ["alice@10.0.0.0/8"]}, "alice", set(), ADDR, None, None),
    # AllowUsers
    ({"allow_users": ["alice"]}, "alice", set(), ADDR, None, None),
    ({"allow_users": ["alice"]}, "bob", set(), ADDR, None,
     _why("bob", "not listed in AllowUsers")),
    ({"allow_users": ["Alice"]}, "alice", set(), ADDR, None,
     _why("alice", "not listed in AllowUsers")),
    ({"allow_users": ["bob", "a?ice"]}, "alice", set(), ADDR, None, None),
    ({"allow_users": ["alice@192.0.2.0/24"]}, "alice", set(), ADDR, None, None),
    ({"allow_users": ["alice@192.0.2.0/24"]}, "alice", set(), "10.0.0.1", None,
     _why("alice", "not listed in AllowUsers", "10.0.0.1")),
    ({"allow_users": ["alice@192.0.2.*"]}, "alice", set(), ADDR, None, None),
    ({"allow_users": ["alice@2001:db8::/32"]}, "alice", set(), "2001:db8::5", None, None),
    ({"allow_users": ["alice@*.example.com"]}, "alice", set(), ADDR, "pc.example.com", None),
    ({"allow_users": ["alice@*.example.com"]}, "alice", set(), ADDR, "pc.example.org",
     _why("alice", "not listed in AllowUsers")),
    ({"allow_users": ["alice@192.0.2.0/24"]}, "bob", set(), ADDR, None,
     _why("bob", "not listed in AllowUsers")),
    # DenyUsers is checked before AllowUsers
    ({"allow_users": ["alice"], "deny_users": ["alice"]}, "alice", set(), ADDR, None,
     _why("alice", "listed in DenyUsers")),
    # DenyGroups / AllowGroups
    ({"deny_groups": ["staff"]}, "alice", {"alice", "staff"}, ADDR, None,
     _why("alice", "a group is listed in DenyGroups")),
    ({"deny_groups": ["st*"]}, "alice", {"alice", "staff"}, ADDR, None,
     _why("alice", "a group is listed in DenyGroups")),
    ({"deny_groups": ["wheel"]}, "alice", {"alice", "staff"}, ADDR, None, None),
    ({"allow_groups": ["admins"]}, "alice", {"alice", "staff"}, ADDR, None,
     _why("alice", "none of user's groups are listed in AllowGroups")),
    ({"allow_groups": ["admins", "staff"]}, "alice", {"alice", "staff"}, ADDR, None, None),
    ({"allow_groups": ["adm*"]}, "alice", {"admins"}, ADDR, None, None),
    ({"allow_groups": ["admins"]}, "alice", set(), ADDR, None,
     _why("alice", "none of user's groups are listed in AllowGroups")),
    # DenyGroups before AllowGroups
    ({"allow_groups": ["staff"], "deny_groups": ["staff"]}, "alice", {"staff"}, ADDR, None,
     _why("alice", "a group is listed in DenyGroups")),
    # users before groups: DenyUsers, AllowUsers, DenyGroups, AllowGroups
    ({"allow_users": ["bob"], "deny_groups": ["staff"]}, "alice", {"staff"}, ADDR, None,
     _why("alice", "not listed in AllowUsers")),
    ({"deny_users": ["alice"], "allow_groups": ["admins"]}, "alice", {"staff"}, ADDR, None,
     _why("alice", "listed in DenyUsers")),
    ({"allow_users": ["alice"], "allow_groups": ["admins"]}, "alice", {"staff"}, ADDR, None,
     _why("alice", "none of user's groups are listed in AllowGroups")),
    ({"allow_users": ["alice"], "allow_groups": ["staff"]}, "alice", {"staff"}, ADDR, None,
     None),
])
def test_access_refusal(rules, user, groups, addr, host, expected) -> None:
    assert access_refusal(_options(**rules), user, frozenset(groups), addr, host) == expected


def test_access_rules_from_a_config_file(tmp_path) -> None:
    config = _parse(tmp_path, """\
        DenyUsers mallory
        AllowUsers alice bob@192.0.2.0/24
        Match Address 10.0.0.0/8
            AllowUsers carol
    """)
    options = config.options_for(ConnectionInfo(user="bob", address=ADDR))
    assert access_refusal(options, "bob", frozenset(), ADDR) is None
    assert access_refusal(options, "mallory", frozenset(), ADDR) == \
        _why("mallory", "listed in DenyUsers")
    inside = config.options_for(ConnectionInfo(user="alice", address="10.0.0.1"))
    assert access_refusal(inside, "alice", frozenset(), "10.0.0.1") == \
        _why("alice", "not listed in AllowUsers", "10.0.0.1")
    assert access_refusal(inside, "carol", frozenset(), "10.0.0.1") is None
    assert access_refusal(inside, "mallory", frozenset(), "10.0.0.1") == \
        _why("mallory", "listed in DenyUsers", "10.0.0.1")


# --- OpenSSH 9.2 details beyond the pattern lists ------------------------------------------

@pytest.mark.parametrize("rules,groups,expected", [
    # auth.c ga_match(): each AllowGroups/DenyGroups word is one match_pattern(),
    # so '!' and ',' are ordinary characters there, not list syntax.
    ({"deny_groups": ["!wheel"]}, {"staff"}, None),
    ({"allow_groups": ["!wheel"]}, {"staff"},
     _why("alice", "none of user's groups are listed in AllowGroups")),
    ({"allow_groups": ["staff,wheel"]}, {"staff"},
     _why("alice", "none of user's groups are listed in AllowGroups")),
    ({"allow_groups": ["[s]taff"]}, {"staff"},
     _why("alice", "none of user's groups are listed in AllowGroups")),
])
def test_allow_and_deny_groups_take_single_patterns(rules, groups, expected) -> None:
    assert access_refusal(_options(**rules), "alice", frozenset(groups), ADDR) == expected


@pytest.mark.parametrize("pattern,user,addr,expected", [
    # match.c match_user() splits at the first '@' in 9.2: the host part of
    # 'a@b@10.0.0.1' is 'b@10.0.0.1', which no address or name matches.
    ("a@b@10.0.0.1", "a", "10.0.0.1", _why("a", "not listed in AllowUsers", "10.0.0.1")),
    ("a@10.0.0.0/8,!10.0.0.5", "a", "10.0.0.4", None),           # the host part is a list
    ("a@10.0.0.0/8,!10.0.0.5", "a", "10.0.0.5", _why("a", "not listed in AllowUsers",
                                                     "10.0.0.5")),
])
def test_allow_users_host_part(pattern: str, user: str, addr: str, expected) -> None:
    assert access_refusal(_options(allow_users=[pattern]), user, frozenset(), addr) == expected


@pytest.mark.parametrize("line", ["AllowUsers alice@10.0.0.0/33", "DenyUsers bob@10.0.0.1/8"])
def test_user_pattern_with_a_bad_network_is_a_config_error(tmp_path, line: str) -> None:
    """servconf.c checks AllowUsers/DenyUsers with match_user(NULL, ...)."""
    with pytest.raises(ConfigError, match="invalid pattern"):
        _parse(tmp_path, line + "\n")


@pytest.mark.parametrize("patterns", ["10.0.0.1/8", "10.0.0.0/8,", "10.0.0.0/8,,*", "!"])
def test_match_address_list_errors(tmp_path, patterns: str) -> None:
    """addr_match_list() returns -2 for host bits below the mask and for an
    empty entry; sshd then refuses the Match line."""
    assert match_address("10.0.0.1", patterns) is False
    with pytest.raises(ConfigError, match="Invalid Match address argument"):
        _parse(tmp_path, f"Match Address {patterns}\n    PermitTTY no\n")


def test_match_localaddress_with_a_bad_cidr_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="Invalid Match localaddress argument"):
        _parse(tmp_path, "Match LocalAddress ::1/129x,fe80::1/64\n    PermitTTY no\n")


@pytest.mark.parametrize("port", ["22,2222", "2*", "70000", "-1", "ssh2"])
def test_match_local_port_takes_one_port(tmp_path, port: str) -> None:
    """servconf.c: 'Match LocalPort' is read with a2port(), one port only."""
    with pytest.raises(ConfigError, match="Invalid LocalPort"):
        _parse(tmp_path, f"Match LocalPort {port}\n    PermitTTY no\n")


def test_match_local_port_compares_numbers(tmp_path) -> None:
    config = _parse(tmp_path, "Match LocalPort 022\n    PermitTTY no\n")
    assert config.options_for(ConnectionInfo(local_port=22)).permit_tty is False
    assert config.options_for(ConnectionInfo(local_port=2222)).permit_tty is True


@pytest.mark.parametrize("rdomain,patterns,expected", [
    ("", "*", True),              # a connection without a VRF: sshd 9.2's ""
    ("", "foo", False),
    ("vrf-blue", "vrf-*", True),
    ("vrf-blue", "*,!vrf-blue", False),
])
def test_match_rdomain(rdomain: str, patterns: str, expected: bool) -> None:
    conn = ConnectionInfo(user="alice", rdomain=rdomain)
    assert criteria_match((("rdomain", patterns),), conn) is expected
