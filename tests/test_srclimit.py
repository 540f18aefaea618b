"""PerSourcePenalties without processes: the keyword's parser, the
listener's penalty table (listener/srclimit.py) with a clock the test
moves, sshd 10's log rate limit, and the monitor's exit statuses
(monitor/exits.py).  The facts are OpenSSH 10.0's servconf.c, srclimit.c,
log.c, sshd.c and sshd-session.c."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from privsep.common.log import VERBOSE
from privsep.config import penalties
from privsep.config.values import ExtraArguments, SshdError
from privsep.listener import srclimit
from privsep.listener.srclimit import Kind, PenaltyTable
from privsep.monitor import exits

DEFAULT_DUMP = ("crash:90 authfail:5 noauth:1 grace-exceeded:10 refuseconnection:10 max:600 "
                "min:15 max-sources4:65536 max-sources6:65536 overflow:permissive "
                "overflow6:permissive")


def _config(*lines: str) -> penalties.PenaltyConfig:
    spec = penalties.PenaltySpec()
    for line in lines:
        spec.extend(penalties.parse(line.split()))
    return spec.resolve()


# --- the keyword --------------------------------------------------------------------

def test_defaults_are_sshd_10s() -> None:
    assert penalties.PenaltySpec().resolve().dump() == DEFAULT_DUMP
    assert _config("no").dump() == "no"
    assert _config("yes").dump() == DEFAULT_DUMP


def test_each_field_first_value_wins_and_any_field_enables() -> None:
    config = _config("authfail:1m authfail:3 overflow6:deny-all", "authfail:9 min:2")
    assert (config.authfail, config.min, config.overflow, config.overflow_for(6)) == (
        60, 2, "permissive", "deny-all")
    # "no" then a field: sshd enables penalties again; a field then "no": too
    assert _config("no", "crash:5").enabled and _config("crash:5", "no").enabled
    assert not _config("No", "yes").enabled
    assert _config("max-sources4:3 max-sources6:+7").max_sources(4) == 3
    assert _config("max-sources6:7").max_sources(6) == 7
    assert _config("overflow:deny-all").overflow_for(6) == "deny-all"  # overflow6 follows


@pytest.mark.parametrize("line,words", [
    ("no crash:5", 'keyword PerSourcePenalties "no" argument must appear alone.'),
    ("YES min:1", 'keyword PerSourcePenalties "YES" argument must appear alone.'),
    ("crash:x", "invalid PerSourcePenalties time value."),
    ("crash:", "invalid PerSourcePenalties time value."),
    ("Crash:5", "unsupported PerSourcePenalties keyword Crash:5"),
    ("overflow:Deny-All", "unsupported PerSourcePenalties keyword overflow:Deny-All"),
    ("max-sources4:", "PerSourcePenalties value missing."),
    ("max-sources4:x", "PerSourcePenalties value invalid."),
    ("max-sources6:-1", "PerSourcePenalties value too small."),
    ("max-sources6:2147483648", "PerSourcePenalties value too large."),
])
def test_bad_values_in_sshds_words(line: str, words: str) -> None:
    with pytest.raises(SshdError) as caught:
        penalties.parse(line.split())
    assert str(caught.value) == words


def test_exempt_list() -> None:
    assert penalties.parse_exempt(["10.0.0.0/8,::1"]) == "10.0.0.0/8,::1"
    assert penalties.parse_exempt(["NONE"]) is None
    with pytest.raises(SshdError, match="^keyword PerSourcePenaltyExemptList invalid "
                                        r"address argument\.$"):
        penalties.parse_exempt(["10.0.0.0/33"])
    with pytest.raises(ExtraArguments):
        penalties.parse_exempt(["a", "b"])


def test_only_generation_10_prints_or_uses_them() -> None:
    assert penalties.shown("per_source_penalties", 10)
    assert not penalties.shown("per_source_penalties", 9)
    assert not penalties.shown("per_source_penalty_exempt_list", 9)
    assert penalties.shown("max_startups", 9)


# --- the table ----------------------------------------------------------------------

def test_penalties_accumulate_and_activate_past_min() -> None:
    table = PenaltyTable(_config("authfail:10 min:15 max:25"))
    lines = table.penalise("192.0.2.7", Kind.AUTHFAIL, 100)
    assert lines == [(VERBOSE, "srclimit_penalise: ipv4: new 192.0.2.7/32 deferred penalty of "
                               "10 seconds for penalty: failed authentication")]
    assert table.refusal("192.0.2.7", 100) is None  # deferred: 10 is not above min 15
    lines = table.penalise("192.0.2.7", Kind.AUTHFAIL, 102)
    assert lines == [
        (logging.DEBUG, "srclimit_penalise: inactive penalty for ipv4 192.0.2.7/32 already "
                        "exists, 8 seconds remaining"),
        (VERBOSE, "srclimit_penalise: 192.0.2.7/32: activating ipv4 penalty of 18 seconds for "
                  "penalty: failed authentication")]
    assert table.refusal("192.0.2.7", 103) == "penalty: failed authentication"
    assert table.refusal("192.0.2.8", 103) is None  # another /32
    table.penalise("192.0.2.7", Kind.CRASH, 103)  # capped at max 25 from now
    assert table.families[4].by_network[next(iter(table.families[4].by_network))].expiry == 128
    assert table.refusal("192.0.2.7", 128) == "penalty: caused crash"  # the latest reason
    assert table.refusal("192.0.2.7", 129) is None  # expired: now > expiry
    assert not table.families[4].by_network


def test_a_penalty_above_min_is_active_at_once() -> None:
    table = PenaltyTable(_config("crash:20 min:15"))
    assert "new 198.51.100.1/32 active penalty of 20 seconds for penalty: caused crash" in (
        table.penalise("198.51.100.1", Kind.CRASH, 0)[0][1])
    assert table.refusal("198.51.100.1", 20) == "penalty: caused crash"
    assert table.refusal("198.51.100.1", 21) is None


def test_netblock_groups_sources_and_names_the_unmasked_address() -> None:
    table = PenaltyTable(_config("authfail:30"), netblock=(24, 64))
    lines = table.penalise("203.0.113.9", Kind.AUTHFAIL, 0)
    assert "new 203.0.113.9/24 active penalty" in lines[0][1]
    assert table.refusal("203.0.113.200", 1) == "penalty: failed authentication"
    assert table.refusal("203.0.114.1", 1) is None
    table.penalise("2001:db8:1:2::5", Kind.AUTHFAIL, 0)
    assert table.refusal("2001:db8:1:2:ffff::1", 1) == "penalty: failed authentication"
    assert table.refusal("2001:db8:1:3::1", 1) is None


def test_exempt_sources_are_never_penalised() -> None:
    table = PenaltyTable(_config("authfail:30"), exempt="192.0.2.0/24,!192.0.2.9")
    assert table.penalise("192.0.2.7", Kind.AUTHFAIL, 0) == [
        (logging.DEBUG, "srclimit_penalise: address 192.0.2.7 is exempt")]
    assert table.refusal("192.0.2.7", 1) is None and not table.families[4].by_network
    table.penalise("192.0.2.9", Kind.AUTHFAIL, 0)  # negated: not exempt
    assert table.refusal("192.0.2.9", 1) == "penalty: failed authentication"


def test_disabled_or_no_penalty_does_nothing() -> None:
    table = PenaltyTable(_config("no"))
    assert table.penalise("192.0.2.7", Kind.CRASH, 0) == []
    assert table.refusal("192.0.2.7", 0) is None
    table = PenaltyTable(_config("yes"))
    assert table.penalise("192.0.2.7", None, 0) == []


def test_permissive_overflow_forgets_the_soonest_to_expire() -> None:
    table = PenaltyTable(_config("authfail:30 noauth:20 max-sources4:2"))
    table.penalise("192.0.2.1", Kind.AUTHFAIL, 0)  # expires 30
    table.penalise("192.0.2.2", Kind.AUTHFAIL, 5)  # 35
    lines = table.penalise("192.0.2.3", Kind.NOAUTH, 6)  # 26: the soonest, goes at once
    assert lines[-1] == (logging.DEBUG, "srclimit_early_expire_penalties_from_tree: ipv4 "
                                        "overflow, remove 192.0.2.3/32")
    assert table.refusal("192.0.2.3", 7) is None
    table.penalise("192.0.2.4", Kind.AUTHFAIL, 7)  # 37: 192.0.2.1 (30) goes
    assert table.refusal("192.0.2.1", 8) is None
    assert table.refusal("192.0.2.2", 8) and table.refusal("192.0.2.4", 8)
    # IPv6 is counted apart
    table.penalise("2001:db8::1", Kind.AUTHFAIL, 8)
    assert table.refusal("2001:db8::1", 9) and table.refusal("192.0.2.2", 9)


def test_deny_all_overflow_refuses_everyone_while_full() -> None:
    table = PenaltyTable(_config("noauth:3 max-sources4:1 overflow:deny-all"),
                         exempt="192.0.2.250")
    table.penalise("192.0.2.1", Kind.NOAUTH, 0)  # deferred (3 < 15) but counted
    assert table.refusal("192.0.2.99", 1) == "too many penalised addresses"
    assert table.refusal("192.0.2.250", 1) is None  # exempt
    assert table.refusal("2001:db8::1", 1) is None  # overflow6 follows, but its own table
    assert table.penalise("192.0.2.2", Kind.CRASH, 1) == [
        (VERBOSE, "srclimit_penalise: ipv4 penalty table full, cannot penalise "
                  "192.0.2.2/32 for penalty: caused crash")]
    assert table.refusal("192.0.2.99", 4) is None  # the one penalty expired


def test_kind_of_exit_is_sshd_10s_child_reap() -> None:
    assert srclimit.kind_of_exit(True, 0) is None
    assert srclimit.kind_of_exit(True, exits.EXIT_LOGIN_GRACE) is Kind.GRACE_EXCEEDED
    assert srclimit.kind_of_exit(True, exits.EXIT_CHILD_CRASH) is Kind.CRASH
    assert srclimit.kind_of_exit(True, exits.EXIT_AUTH_ATTEMPTED) is Kind.AUTHFAIL
    assert srclimit.kind_of_exit(True, exits.EXIT_CONFIG_REFUSED) is Kind.REFUSECONNECTION
    assert srclimit.kind_of_exit(True, 255) is Kind.NOAUTH
    assert srclimit.kind_of_exit(True, 1) is Kind.NOAUTH
    assert srclimit.kind_of_exit(False, signal.SIGSEGV) is Kind.CRASH
    assert srclimit.kind_of_exit(False, signal.SIGKILL) is None
    assert srclimit.kind_of_exit(False, signal.SIGTERM) is None


def test_monitor_exit_statuses() -> None:
    exited, crashed = 0, signal.SIGSEGV  # wait statuses: exit 0, killed by SIGSEGV
    assert os.WIFSIGNALED(crashed)
    assert exits.preauth_exit(9, exited, True) == 0
    assert exits.preauth_exit(9, crashed, False) == 1
    assert exits.preauth_exit(9, None, True) == 1
    assert exits.preauth_exit(10, exited, False) == exits.EXIT_NOAUTH
    assert exits.preauth_exit(10, exited, True) == exits.EXIT_AUTH_ATTEMPTED
    assert exits.preauth_exit(10, None, True) == exits.EXIT_AUTH_ATTEMPTED
    assert exits.preauth_exit(10, crashed, True) == exits.EXIT_CHILD_CRASH
    assert exits.preauth_exit(10, signal.SIGKILL, False) == exits.EXIT_NOAUTH


# --- the drop lines' rate limit ------------------------------------------------------

def test_rate_limit_as_sshd_10s_log_ratelimit() -> None:
    limit = srclimit.penalty_log_limit()  # 8 events, 60 max, 30 s hysteresis, every 120 s
    seen = [limit.check(1000) for _ in range(10)]
    assert seen[:7] == [(False, 0)] * 7  # under the threshold
    assert seen[7:] == [(True, 0)] * 3  # the 8th starts the limit
    # ten a second for two minutes: all dropped but one, which says how many
    seen = [limit.check(now) for now in range(1001, 1121) for _ in range(10)]
    assert seen.count((True, 0)) == len(seen) - 1
    assert seen[-10] == (False, 3 + 1190)  # 1120, first: log_every has passed
    # quiet for longer than the hysteresis: the first line ends the limit
    assert limit.check(1200) == (False, 9)
    assert not limit.active
