"""expiry-time= and from= of an authorized_keys line, pure, at fixed times:
privsep.wire.keyoptions.key_expired and
privsep.monitor.authorized_keys.key_usable_from.

sshd(8): 'expiry-time="timespec": Specifies a time after which the key will
not be accepted.  The time may be specified as a YYYYMMDD[Z] date or a
YYYYMMDDHHMM[SS][Z] time.  Dates and times will be interpreted in the system
time zone unless suffixed by a Z character, in which case they will be
interpreted in the UTC time zone.'  OpenSSH 9.2 refuses the key when
valid_before < now, with now = time(NULL) in whole seconds
(auth-options.c auth_authorise_keyopts).
"""

from __future__ import annotations

import datetime
import time

import pytest

from privsep.monitor.authorized_keys import AuthorizedKey, key_usable_from
from privsep.wire.keyoptions import key_expired, parse_key_options

UTC = datetime.timezone.utc


def at(text: str) -> datetime.datetime:
    """'2030-01-01 12:30:45' (or with .micro) as an aware UTC datetime."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(autouse=True)
def local_time_is_utc_plus_3(monkeypatch):
    """A fixed local zone without DST: local = UTC+3 (POSIX TZ, no zoneinfo needed)."""
    monkeypatch.setenv("TZ", "TST-03")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- key_expired ------------------------------------------------------------------------

@pytest.mark.parametrize("value,now,expected", [
    # YYYYMMDD: midnight at the start of that day
    ("20300101Z", "2029-12-31 23:59:59", False),
    ("20300101Z", "2030-01-01 00:00:01", True),
    ("20300101Z", "2031-06-01 00:00:00", True),
    ("20300101", "2029-12-31 20:59:59", False),       # local midnight = 21:00 UTC
    ("20300101", "2029-12-31 21:00:01", True),
    ("20300101", "2029-12-31 23:00:00", True),        # before UTC midnight, after local
    # YYYYMMDDHHMM
    ("203001011230Z", "2030-01-01 12:29:59", False),
    ("203001011230Z", "2030-01-01 12:30:01", True),
    ("203001011230", "2030-01-01 09:29:59", False),
    ("203001011230", "2030-01-01 09:30:01", True),
    ("203001011230", "2030-01-01 12:29:00", True),
    # YYYYMMDDHHMMSS
    ("20300101123045Z", "2030-01-01 12:30:44", False),
    ("20300101123045Z", "2030-01-01 12:30:46", True),
    ("20300101123045", "2030-01-01 09:30:44", False),
    ("20300101123045", "2030-01-01 09:30:46", True),
    # long ago and far ahead
    ("19700102Z", "2024-01-01 00:00:00", True),
    ("99991231Z", "2024-01-01 00:00:00", False),
    ("20240229Z", "2024-02-28 23:59:59", False),       # a leap day is a valid date
])
def test_key_expired(value: str, now: str, expected: bool) -> None:
    assert key_expired(value, at(now)) is expected


def test_now_in_another_zone_is_the_same_instant() -> None:
    plus_five = datetime.timezone(datetime.timedelta(hours=5))
    now = datetime.datetime(2030, 1, 1, 17, 29, 59, tzinfo=plus_five)   # 12:29:59 UTC
    assert key_expired("203001011230Z", now) is False
    assert key_expired("203001011230Z", now + datetime.timedelta(seconds=2)) is True


@pytest.mark.parametrize("value,now", [
    ("20300101123045Z", "2030-01-01 12:30:45"),
    ("20300101123045Z", "2030-01-01 12:30:45.999999"),
    ("20300101123045", "2030-01-01 09:30:45"),
    ("203001011230Z", "2030-01-01 12:30:00"),
    ("20300101Z", "2030-01-01 00:00:00"),
])
def test_the_expiry_second_itself_is_still_valid(value: str, now: str) -> None:
    """sshd refuses only when valid_before < time(NULL): during the named
    second the key is still accepted; one second later it is not."""
    assert key_expired(value, at(now)) is False
    assert key_expired(value, at(now) + datetime.timedelta(seconds=1)) is True


@pytest.mark.parametrize("value", [
    "",
    "Z",
    "2030",
    "2030010",                 # 7 digits
    "203001011",               # 9 digits
    "2030010112",              # 10 digits: YYYYMMDDHH is not a form
    "203001011230451",         # 15 digits
    "20301301",                # month 13
    "20300230",                # 30 February
    "20300101246000",          # hour 24
    "20300101126000",          # minute 60
    "2030-01-01",
    "abcdefgh",
    "20300101 ",
    " 20300101",
    "20300101ZZ",
    "Z20300101",
])
def test_malformed_counts_as_expired(value: str) -> None:
    assert key_expired(value, at("2000-01-01 00:00:00")) is True


def test_without_now_the_clock_is_used() -> None:
    assert key_expired("20000101Z") is True
    assert key_expired("99991231Z") is False


@pytest.mark.parametrize("text,ok", [
    ('expiry-time="20300101"', True),
    ('expiry-time="20300101Z"', True),
    ('expiry-time="203001011230"', True),
    ('expiry-time="20300101123045Z"', True),
    ('expiry-time="2030"', False),
    ('expiry-time="20301301"', False),
    ('expiry-time="20300101ZZ"', False),
    ("expiry-time=20300101", False),           # the value must be quoted
])
def test_parse_key_options_checks_expiry_time(text: str, ok: bool) -> None:
    if ok:
        assert parse_key_options(text)[0].name == "expiry-time"
    else:
        with pytest.raises(ValueError):
            parse_key_options(text)


# --- key_usable_from: from= and expiry-time= together ------------------------------------

def _key(options: str | None) -> AuthorizedKey:
    return AuthorizedKey("ssh-ed25519", b"blob", "test",
                         parse_key_options(options) if options else (), 1)


BEFORE = "2029-06-01 00:00:00"
AFTER = "2030-06-01 00:00:00"


@pytest.mark.parametrize("options,addr,now,expected", [
    (None, "192.0.2.1", BEFORE, True),
    (None, "192.0.2.1", AFTER, True),
    # from= alone
    ('from="192.0.2.0/24"', "192.0.2.1", BEFORE, True),
    ('from="192.0.2.0/24"', "198.51.100.1", BEFORE, False),
    ('from="192.0.2.*"', "192.0.2.77", BEFORE, True),
    ('from="192.0.2.*,!192.0.2.5"', "192.0.2.4", BEFORE, True),
    ('from="192.0.2.*,!192.0.2.5"', "192.0.2.5", BEFORE, False),
    ('from="!192.0.2.5,*"', "192.0.2.5", BEFORE, False),
    ('from="10.0.0.0/8,2001:db8::/32"', "2001:db8::1", BEFORE, True),
    ('from="10.0.0.0/8,2001:db8::/32"', "2001:db9::1", BEFORE, False),
    ('from="!10.0.0.0/8"', "192.0.2.1", BEFORE, False),   # only a negation
    # expiry-time= alone
    ('expiry-time="20300101Z"', "192.0.2.1", BEFORE, True),
    ('expiry-time="20300101Z"', "192.0.2.1", AFTER, False),
    # both: each must allow
    ('from="192.0.2.0/24",expiry-time="20300101Z"', "192.0.2.1", BEFORE, True),
    ('from="192.0.2.0/24",expiry-time="20300101Z"', "192.0.2.1", AFTER, False),
    ('from="192.0.2.0/24",expiry-time="20300101Z"', "198.51.100.1", BEFORE, False),
    ('from="192.0.2.0/24",expiry-time="20300101Z"', "198.51.100.1", AFTER, False),
    ('expiry-time="20300101Z",from="192.0.2.0/24",no-pty', "192.0.2.9", BEFORE, True),
    # local-time expiry with from=: local midnight is 21:00 UTC the day before
    ('from="192.0.2.0/24",expiry-time="20300101"', "192.0.2.1",
     "2029-12-31 20:59:59", True),
    ('from="192.0.2.0/24",expiry-time="20300101"', "192.0.2.1",
     "2029-12-31 21:00:01", False),
])
def test_key_usable_from(options, addr: str, now: str, expected: bool) -> None:
    assert key_usable_from(_key(options), addr, at(now)) is expected


def test_key_usable_at_the_expiry_second() -> None:
    """As sshd: usable during the named second, refused from the next one."""
    key = _key('from="192.0.2.0/24",expiry-time="20300101123045Z"')
    assert key_usable_from(key, "192.0.2.1", at("2030-01-01 12:30:45")) is True
    assert key_usable_from(key, "192.0.2.1", at("2030-01-01 12:30:46")) is False


def test_from_with_a_malformed_cidr_refuses_the_key() -> None:
    """auth_authorise_keyopts: match_host_and_ip() returns -1 for a bad CIDR
    entry ('invalid from criteria') and sshd denies the key, whatever the
    other entries say."""
    key = _key('from="10.0.0.0/33,*"')
    assert key_usable_from(key, "192.0.2.1", at(BEFORE)) is False


@pytest.mark.parametrize("value,stamp", [
    ("20300101z", "2030-01-01 00:00:00"),        # parse_absolute_time: Z in either case
    ("20300101UTC", "2030-01-01 00:00:00"),      # ... or a UTC suffix
])
def test_utc_suffixes(value: str, stamp: str) -> None:
    assert key_expired(value, at(stamp)) is False
    assert key_expired(value, at(stamp) + datetime.timedelta(seconds=1)) is True


def test_the_earliest_expiry_time_counts() -> None:
    """auth-options.c keeps the smallest of several expiry-time= values."""
    key = _key('expiry-time="20350101Z",expiry-time="20300101Z"')
    assert key_usable_from(key, "192.0.2.1", at(BEFORE)) is True
    assert key_usable_from(key, "192.0.2.1", at(AFTER)) is False


def test_key_refusal_names_the_reason() -> None:
    """auth_authorise_keyopts checks the expiry before from=, so an expired
    key is not blamed on a from= option."""
    from privsep.monitor.authorized_keys import key_refusal
    expired = _key('expiry-time="20000101Z"')
    assert key_refusal(expired, "alice", "192.0.2.1", at(BEFORE)) == ":1: entry expired"
    elsewhere = _key('from="10.0.0.0/8"')
    assert key_refusal(elsewhere, "alice", "192.0.2.1", at(BEFORE)) == (
        ":1: Authentication tried for alice with correct key but not from a permitted host "
        "(host=192.0.2.1, ip=192.0.2.1, required=10.0.0.0/8).")
    assert key_refusal(_key(None), "alice", "192.0.2.1", at(BEFORE)) is None
