"""AuthenticationMethods and ExposeAuthInfo (issue 14, points 4 and 6).

Side by side with Debian's sshd: the stock client's debug1 lines show the
method list and the partial success of each USERAUTH_FAILURE; the servers'
logs show "Partial ..." and "Accepted ..." in order; a session prints its
SSH_USER_AUTH file.  Then the refusals (a missing second factor, a method
list naming a disabled method at start) and a compromised net-child that
claims the login after a partial success (the monitor harness of
test_hostile_child.py).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest

from privsep.config.authmethods import MethodLists, list_error, parse
from privsep.monitor import pubkey
from privsep.wire import messages as wire
from tests.daemon import OPENSSH, privsep_command, ssh
from tests.test_hostile_child import (  # noqa: F401  (fixtures)
    ALG, HANDED_OFF, PEER, assert_refused, fake_handoff, host_key_path, hostile, signed_verify,
    user_key, userauth_blob,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("openssh", "privsep")


# --- the lists, pure -----------------------------------------------------------------


def test_lists_cross_off_in_order_with_submethods():
    lists, skipped = MethodLists.setup(("publickey,password", "publickey,keyboard-interactive:pam"),
                                       ["publickey", "password", "keyboard-interactive"])
    assert skipped == []
    enabled = ["publickey", "password", "keyboard-interactive"]
    assert lists.offered(enabled) == "publickey"
    assert not lists.allows("password")
    assert lists.complete("publickey", None) is False
    assert lists.offered(enabled) == "password,keyboard-interactive"
    # keyboard-interactive:pam is offered as the method, crossed off only by pam
    assert lists.complete("keyboard-interactive", "pam") is True


def test_list_with_disabled_method_is_skipped_as_sshd_logs_it():
    lists, skipped = MethodLists.setup(("publickey,password", "publickey"), ["publickey"])
    assert skipped == ['Authentication methods list "publickey,password" contains disabled '
                       "method, skipping"]
    assert lists.complete("publickey", None) is True
    with pytest.raises(ValueError, match="No AuthenticationMethods left"):
        MethodLists.setup(("password",), ["publickey"])


def test_list_errors_in_sshds_words():
    assert list_error("publickey,foo") == 'Unknown authentication method "foo" in list'
    with pytest.raises(ValueError, match='"any" must appear alone'):
        parse(["publickey", "any"])
    assert parse(["any"]) == ("any",)


# --- side by side with sshd ----------------------------------------------------------------


def _continue_lines(stderr: bytes) -> list[str]:
    """The client's view of each USERAUTH_FAILURE and success."""
    keep = ("Authentications that can continue", "partial success", "Authenticated to")
    lines = [line for line in stderr.decode(errors="replace").splitlines()
             if any(k in line for k in keep)]
    return [re.sub(r"\(\[127\.0\.0\.1\]:\d+\)", "", line) for line in lines]


def _auth_log(server, user) -> list[str]:
    """Partial/Accepted/Failed lines of the server's log, the port removed."""
    lines = []
    for line in server.log_text().splitlines():
        found = re.search(r"(Partial|Accepted|Failed) \S+ for \S+ from \S+ port \d+ ssh2.*", line)
        if found:
            lines.append(re.sub(r" port \d+ ", " port N ", found.group(0)))
    return lines


def _login(server, user, methods: str, *command: str):
    return ssh(server, user, *command, password=user.password, flags=["-v"],
               options=[f"PreferredAuthentications={methods}", f"IdentityFile={user.key_path}"])


@pytest.mark.parametrize("second", ["password", "keyboard-interactive"])
def test_two_factors_side_by_side(server_with, user, second):
    """publickey,password and publickey,keyboard-interactive:pam: the same
    method lists and partial success for the client, the same log lines,
    the same SSH_USER_AUTH file."""
    wanted = {"password": "publickey,password",
              "keyboard-interactive": "publickey,keyboard-interactive:pam"}[second]
    seen = {}
    for kind in KINDS:
        server = server_with(f"AuthenticationMethods {wanted}", "ExposeAuthInfo yes",
                             "KbdInteractiveAuthentication yes", kind=kind)
        result = _login(server, user, f"publickey,{second}",
                        'cat "$SSH_USER_AUTH"; echo "path=$SSH_USER_AUTH"')
        assert result.returncode == 0, (kind, result.stderr.decode())
        server.wait_for_log("Accepted")
        seen[kind] = (_continue_lines(result.stderr), _auth_log(server, user),
                      result.stdout.decode())
    assert seen["privsep"][0] == seen["openssh"][0]
    assert seen["privsep"][0][:3] == [
        "debug1: Authentications that can continue: publickey",
        'Authenticated using "publickey" with partial success.',
        f"debug1: Authentications that can continue: {second}"]
    assert seen["privsep"][1] == seen["openssh"][1]
    method = "keyboard-interactive/pam" if second != "password" else "password"
    fp = pubkey.fingerprint(base64.b64decode(user.pubkey.split()[1]))
    assert seen["privsep"][1] == [
        f"Partial publickey for {user.name} from 127.0.0.1 port N ssh2: ED25519 {fp}",
        f"Accepted {method} for {user.name} from 127.0.0.1 port N ssh2"]
    files = {kind: out.split("path=")[0] for kind, (_, _, out) in seen.items()}
    assert files["privsep"] == files["openssh"]
    assert files["privsep"] == f"publickey {' '.join(user.pubkey.split()[:2])}\n{method}\n"
    path = seen["privsep"][2].split("path=")[1].strip()
    assert re.fullmatch(r"/tmp/sshauth\.[A-Za-z0-9]{15}", path), path


def test_expose_auth_info_file_is_the_users_and_goes_with_the_connection(server_with, user):
    server = server_with("ExposeAuthInfo yes")
    result = ssh(server, user, 'stat -c "%U %a" "$SSH_USER_AUTH"; echo "$SSH_USER_AUTH"')
    assert result.returncode == 0, result.stderr.decode()
    owner_mode, path = result.stdout.decode().split("\n")[:2]
    assert owner_mode == f"{user.name} 600"
    server.wait_for_log("Disconnected from user")
    assert not os.path.exists(path)


def test_no_file_without_expose_auth_info(server_with, user):
    result = ssh(server_with(), user, 'echo "[${SSH_USER_AUTH-unset}]"')
    assert result.stdout == b"[unset]\n", result


def test_missing_second_factor_is_refused_side_by_side(server_with, user):
    """A key alone does not log in under publickey,password: the client
    sees partial success and the list "password", and gives up."""
    seen = {}
    for kind in KINDS:
        server = server_with("AuthenticationMethods publickey,password", kind=kind)
        result = ssh(server, user, "true", flags=["-v"])
        assert result.returncode == 255, (kind, result)
        server.wait_for_log("Partial publickey")
        seen[kind] = (_continue_lines(result.stderr), _auth_log(server, user))
        assert not any("Accepted" in line for line in seen[kind][1])
    assert seen["privsep"] == seen["openssh"]
    assert seen["privsep"][0] == [
        "debug1: Authentications that can continue: publickey",
        'Authenticated using "publickey" with partial success.',
        "debug1: Authentications that can continue: password"]


def test_match_block_asks_for_a_second_factor_side_by_side(server_with, user):
    """Only the Match block names the lists: its user needs both."""
    block = ("Match User " + user.name, "  AuthenticationMethods publickey,password")
    for kind in KINDS:
        server = server_with(tail=block, kind=kind)
        assert ssh(server, user, "true").returncode == 255, kind
        assert "Partial publickey" in server.wait_for_log("Partial publickey")
        result = _login(server, user, "publickey,password", "true")
        assert result.returncode == 0, (kind, result.stderr.decode())


@pytest.mark.parametrize("lines", [
    ["PasswordAuthentication no", "AuthenticationMethods publickey,password"],
    ["AuthenticationMethods publickey,hostbased keyboard-interactive"],
    ["AuthenticationMethods publickey,foo"],
    ["AuthorizedKeysCommand /bin/true"],
])
def test_start_checks_as_sshd(tmp_path, lines):
    """-t: the same verdict and words as sshd -t (the file line prefix aside)."""
    config = tmp_path / "sshd_config"
    config.write_text("\n".join(["HostKey /etc/ssh/ssh_host_ed25519_key",
                                 "KbdInteractiveAuthentication no", *lines]) + "\n")
    results = {}
    for kind, argv in (("openssh", [OPENSSH]), ("privsep", privsep_command())):
        proc = subprocess.run([*argv, "-t", "-f", str(config)], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
        results[kind] = (proc.returncode, proc.stderr)
    assert results["privsep"][0] == results["openssh"][0] == 255
    last = results["openssh"][1].strip().splitlines()[0].split(": ")[-1]
    assert last in results["privsep"][1], results


# --- a compromised net-child -------------------------------------------------------------------

TWO_FACTORS = {"authentication_methods": ("publickey,password",)}


def _verify(child, req) -> wire.KeyVerifyAnswer:
    answer, _ = child.ch.call(req, wire.KeyVerifyAnswer)
    return answer


def test_partial_success_is_no_login(hostile, user, user_key):
    """After the key, the monitor answers partial success (not verified)
    and names "password"; a child that hands off anyway is refused."""
    answers = []

    def steps(child) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        blob = userauth_blob(session_id, user.name, user_key.asbytes())
        answers.append(_verify(child, signed_verify(user_key, blob)))
        child.attack(fake_handoff(session_id))

    outcome = hostile(steps, **TWO_FACTORS)
    assert answers == [wire.KeyVerifyAnswer(False, True, "password")]
    assert f"Partial publickey for {user.name} from {PEER} ssh2" in outcome.log
    assert_refused(outcome, "Handoff before authentication")


def test_second_factor_first_is_refused(hostile, user):
    """The right password before the key: the monitor does not even ask PAM."""
    def steps(child) -> None:
        child.kex()
        assert child.pwnam(user.name) is True
        child.attack(wire.PasswordRequest(user.password.encode()))

    outcome = hostile(steps, **TWO_FACTORS)
    assert_refused(outcome, "PasswordRequest for password, which AuthenticationMethods does "
                            "not allow now")


def test_same_key_cannot_count_twice(hostile, user, user_key):
    """publickey,password: after the key, publickey is no longer allowed; the
    child asking about the key again is refused."""
    def steps(child) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        blob = userauth_blob(session_id, user.name, user_key.asbytes())
        assert _verify(child, signed_verify(user_key, blob)).partial
        child.attack(wire.KeyAllowedRequest(ALG, user_key.asbytes()))

    assert_refused(hostile(steps, **TWO_FACTORS),
                   "KeyAllowedRequest for publickey, which AuthenticationMethods does not allow")


def test_publickey_twice_needs_two_keys(hostile, user, user_key):
    def steps(child) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        blob = userauth_blob(session_id, user.name, user_key.asbytes())
        assert _verify(child, signed_verify(user_key, blob)).partial
        assert child.key_allowed(user_key) is False

    outcome = hostile(steps, authentication_methods=("publickey,publickey",))
    assert "refusing previously-used ED25519 key" in outcome.log, str(outcome)
    assert "Accepted publickey" not in outcome.log  # sshd's "Accepted key ... found at" is no verdict


def test_control_both_factors_hand_off(hostile, user, user_key):
    answers = []

    def steps(child) -> None:
        session_id = child.up_to_key_allowed(user, user_key)
        blob = userauth_blob(session_id, user.name, user_key.asbytes())
        answers.append(_verify(child, signed_verify(user_key, blob)))
        answer, _ = child.ch.call(wire.PasswordRequest(user.password.encode()),
                                  wire.PasswordAnswer)
        answers.append(answer)
        child.ch.send(fake_handoff(session_id))

    outcome = hostile(steps, **TWO_FACTORS)
    assert answers[0] == wire.KeyVerifyAnswer(False, True, "password")
    assert (answers[1].accepted, answers[1].partial) == (True, False)
    assert outcome.code == HANDED_OFF, str(outcome)
    partial = outcome.log.index(f"Partial publickey for {user.name}")
    assert outcome.log.index(f"Accepted password for {user.name}") > partial
