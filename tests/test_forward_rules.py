"""Forwarding rules (privsep/session/forward.py ForwardRules): who may forward
what, pure.  Expectations follow sshd_config(5) (AllowTcpForwarding,
AllowStreamLocalForwarding, DisableForwarding, PermitOpen, PermitListen,
GatewayPorts), sshd(8) permitopen=/permitlisten=, and OpenSSH 9.2's
channels.c (open_match, remote_open_match, channel_fwd_bind_addr).
"""

from __future__ import annotations

import dataclasses

import pytest

from privsep.config.servconf import ServerOptions
from privsep.session.forward import ForwardRules, _split_host_port, bind_addresses_for

LOOPBACK = ["127.0.0.1", "::1"]
WILDCARD = ["0.0.0.0", "::"]


def _rules(**config) -> ForwardRules:
    return ForwardRules.from_options(dataclasses.replace(ServerOptions().finish(), **config))


# --- _split_host_port ----------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("host:80", ("host", "80")),
    ("db.internal:5432", ("db.internal", "5432")),
    ("host:*", ("host", "*")),
    ("*:443", ("*", "443")),
    ("*:*", ("*", "*")),
    ("8080", ("", "8080")),
    ("*", ("", "*")),
    ("[::1]:22", ("::1", "22")),
    ("[2001:db8::1]:*", ("2001:db8::1", "*")),
    ("[fe80::1%eth0]:22", ("fe80::1%eth0", "22")),
    ("192.0.2.1:0", ("192.0.2.1", "0")),
])
def test_split_host_port(spec: str, expected: tuple[str, str]) -> None:
    assert _split_host_port(spec) == expected


# --- from_options and the four switches --------------------------------------------------

def test_from_options_copies_the_config() -> None:
    rules = _rules(allow_tcp_forwarding="local", allow_stream_local_forwarding="remote",
                   disable_forwarding=True, permit_open=["a:1"], permit_listen=["2"],
                   gateway_ports="clientspecified", stream_local_bind_mask=0o077,
                   stream_local_bind_unlink=True)
    assert rules == ForwardRules(tcp="local", streamlocal="remote", disabled=True,
                                 permit_open=["a:1"], permit_listen=["2"],
                                 gateway_ports="clientspecified", bind_mask=0o077,
                                 bind_unlink=True)


def test_defaults_allow_everything() -> None:
    rules = _rules()
    assert rules.local_tcp() and rules.remote_tcp()
    assert rules.local_streamlocal() and rules.remote_streamlocal()
    assert rules.open_permitted("anything", 1) and rules.listen_permitted("", 65535)
    assert rules.bind_addresses("") == LOOPBACK


@pytest.mark.parametrize("setting,local,remote", [
    ("yes", True, True),
    ("local", True, False),
    ("remote", False, True),
    ("no", False, False),
])
def test_allow_tcp_forwarding(setting: str, local: bool, remote: bool) -> None:
    rules = _rules(allow_tcp_forwarding=setting)
    assert (rules.local_tcp(), rules.remote_tcp()) == (local, remote)
    assert rules.local_streamlocal() and rules.remote_streamlocal()   # independent


@pytest.mark.parametrize("setting,local,remote", [
    ("yes", True, True),
    ("local", True, False),
    ("remote", False, True),
    ("no", False, False),
])
def test_allow_stream_local_forwarding(setting: str, local: bool, remote: bool) -> None:
    rules = _rules(allow_stream_local_forwarding=setting)
    assert (rules.local_streamlocal(), rules.remote_streamlocal()) == (local, remote)
    assert rules.local_tcp() and rules.remote_tcp()                   # independent


@pytest.mark.parametrize("change", [
    {"disabled": True},                       # DisableForwarding yes
    {"key_permits_forwarding": False},        # no-port-forwarding / restrict
])
def test_disable_forwarding_and_the_key_override_everything(change) -> None:
    rules = dataclasses.replace(_rules(), **change)
    assert not any((rules.local_tcp(), rules.remote_tcp(),
                    rules.local_streamlocal(), rules.remote_streamlocal()))


# --- PermitOpen (config) and permitopen= (key) ---------------------------------------------

@pytest.mark.parametrize("permit_open,host,port,expected", [
    (["any"], "anything", 1, True),
    (["ANY"], "anything", 1, True),
    ([], "anything", 1, True),
    (["none"], "anything", 1, False),
    (["db.internal:5432"], "db.internal", 5432, True),
    (["db.internal:5432"], "db.internal", 5433, False),
    (["db.internal:5432"], "web.internal", 5432, False),
    (["db.internal:*"], "db.internal", 1, True),
    (["db.internal:*"], "db.internal", 65535, True),
    (["*:443"], "anything", 443, True),
    (["*:443"], "anything", 80, False),
    (["*:*"], "anything", 7, True),
    (["[::1]:22"], "::1", 22, True),
    (["[::1]:22"], "127.0.0.1", 22, False),
    (["192.0.2.1:22"], "192.0.2.1", 22, True),
    (["192.0.2.1:22"], "192.0.2.10", 22, False),
    (["a:1", "b:2"], "b", 2, True),
    (["a:1", "b:2"], "b", 1, False),
    (["a:1", "b:2"], "a", 2, False),
])
def test_permit_open(permit_open, host: str, port: int, expected: bool) -> None:
    assert _rules(permit_open=permit_open).open_permitted(host, port) is expected


@pytest.mark.parametrize("permit_open,key_open,host,port,expected", [
    (["any"], None, "x", 1, True),
    (["any"], ["localhost:80"], "localhost", 80, True),
    (["any"], ["localhost:80"], "localhost", 81, False),
    (["any"], ["localhost:80"], "example.com", 80, False),
    (["any"], ["localhost:80", "db:*"], "db", 5432, True),
    (["any"], [], "x", 1, False),                       # an empty key list permits nothing
    (["x:1"], ["x:1"], "x", 1, True),
    (["x:1"], ["y:2"], "x", 1, False),                  # both lists must permit
    (["x:1"], ["y:2"], "y", 2, False),
    (["none"], ["x:1"], "x", 1, False),
])
def test_permit_open_and_key_permitopen(permit_open, key_open, host, port, expected) -> None:
    rules = dataclasses.replace(_rules(permit_open=permit_open), key_permit_open=key_open)
    assert rules.open_permitted(host, port) is expected


# --- PermitListen (config) and permitlisten= (key) ------------------------------------------

@pytest.mark.parametrize("permit_listen,host,port,expected", [
    (["any"], "", 8080, True),
    (["none"], "", 8080, False),
    (["8080"], "", 8080, True),                         # a bare port: any address
    (["8080"], "0.0.0.0", 8080, True),
    (["8080"], "localhost", 8080, True),
    (["8080"], "", 8081, False),
    (["localhost:8080"], "localhost", 8080, True),
    (["localhost:8080"], "LOCALHOST", 8080, True),
    (["localhost:8080"], "0.0.0.0", 8080, False),
    (["localhost:8080"], "localhost", 9090, False),
    (["localhost:*"], "localhost", 9090, True),
    (["*:8080"], "192.0.2.1", 8080, True),
    (["*"], "", 1234, True),                            # a bare '*': any port
    (["[::1]:8080"], "::1", 8080, True),
    (["8080"], "", 0, False),                           # a dynamic port needs '*'
    (["*:*"], "", 0, True),
    (["7000", "8000"], "", 8000, True),
])
def test_permit_listen(permit_listen, host: str, port: int, expected: bool) -> None:
    assert _rules(permit_listen=permit_listen).listen_permitted(host, port) is expected


@pytest.mark.parametrize("permit_listen,host,port,expected", [
    (["192.0.2.*:8080"], "192.0.2.5", 8080, True),
    (["192.0.2.*:8080"], "198.51.100.5", 8080, False),
    (["*.example.com:8080"], "gw.example.com", 8080, True),
])
def test_permit_listen_host_takes_wildcards(permit_listen, host, port, expected) -> None:
    """sshd_config(5) PermitListen: 'The host name may contain wildcards as
    described in the PATTERNS section'; channels.c remote_open_match() uses
    match_pattern() on the lower-cased listen host."""
    assert _rules(permit_listen=permit_listen).listen_permitted(host, port) is expected


@pytest.mark.parametrize("permit_listen,key_listen,host,port,expected", [
    (["any"], None, "", 1, True),
    (["any"], ["8080"], "", 8080, True),
    (["any"], ["8080"], "", 9090, False),
    (["any"], ["localhost:8080"], "localhost", 8080, True),
    (["any"], ["localhost:8080"], "0.0.0.0", 8080, False),
    (["any"], [], "", 8080, False),
    (["9090"], ["8080"], "", 8080, False),              # both lists must permit
    (["8080"], ["8080"], "", 8080, True),
])
def test_permit_listen_and_key_permitlisten(permit_listen, key_listen, host, port,
                                            expected) -> None:
    rules = dataclasses.replace(_rules(permit_listen=permit_listen),
                                key_permit_listen=key_listen)
    assert rules.listen_permitted(host, port) is expected


# --- GatewayPorts ---------------------------------------------------------------------------

@pytest.mark.parametrize("gateway_ports,requested,expected", [
    ("no", "", LOOPBACK),
    ("no", "*", LOOPBACK),
    ("no", "0.0.0.0", LOOPBACK),
    ("no", "192.0.2.5", LOOPBACK),
    ("no", "localhost", LOOPBACK),
    ("yes", "", WILDCARD),
    ("yes", "*", WILDCARD),
    ("yes", "localhost", WILDCARD),
    ("yes", "127.0.0.1", WILDCARD),
    ("yes", "192.0.2.5", WILDCARD),
    ("clientspecified", "", WILDCARD),
    ("clientspecified", "*", WILDCARD),
    ("clientspecified", "localhost", LOOPBACK),
    ("clientspecified", "127.0.0.1", ["127.0.0.1"]),
    ("clientspecified", "::1", ["::1"]),
    ("clientspecified", "192.0.2.5", ["192.0.2.5"]),
    ("clientspecified", "0.0.0.0", ["0.0.0.0"]),
])
def test_bind_addresses(gateway_ports: str, requested: str, expected: list[str]) -> None:
    assert bind_addresses_for(gateway_ports, requested) == expected
    assert _rules(gateway_ports=gateway_ports).bind_addresses(requested) == expected


@pytest.mark.parametrize("requested", ["127.0.0.1", "::1"])
def test_gateway_ports_no_keeps_an_explicit_loopback_address(requested: str) -> None:
    """channels.c channel_fwd_bind_addr(): 'If a specific IPv4/IPv6 localhost
    address has been requested then accept it even if gateway_ports is in
    effect.  This allows the client to prefer IPv4 or IPv6.'"""
    assert bind_addresses_for("no", requested) == [requested]


@pytest.mark.parametrize("permit_open,host,expected", [
    # channels.c open_match(): strcmp(), so no wildcards but '*' and case counts
    (["db.*:80"], "db.internal", False),
    (["db.*:80"], "db.*", True),
    (["DB:80"], "db", False),
])
def test_permit_open_hosts_are_exact(permit_open, host: str, expected: bool) -> None:
    assert _rules(permit_open=permit_open).open_permitted(host, 80) is expected
