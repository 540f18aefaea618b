"""privsep/monitor/auth_pam.py against the real PAM stack with throwaway users.

No mocks: /etc/pam.d/privsep-sshd (installed by the pam_service fixture, as
the install script would) runs Debian's pam_unix, pam_motd and friends.

Anything that calls pam_setcred or pam_open_session runs in a subprocess:
pam_loginuid, pam_limits, pam_keyinit and pam_cap change the calling
process (its loginuid cannot be set back), and a crash in C must fail one
test rather than kill pytest.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from privsep.monitor.auth_pam import (
    PAM_ACCT_EXPIRED,
    PAM_AUTH_ERR,
    PAM_CONV,
    PAM_NEW_AUTHTOK_REQD,
    PAM_ERROR_MSG,
    PAM_PROMPT_ECHO_OFF,
    PAM_PROMPT_ECHO_ON,
    PAM_RHOST,
    PAM_RUSER,
    PAM_SUCCESS,
    PAM_TEXT_INFO,
    PAM_TTY,
    PAM_USER,
    PamLogin,
    PamPrompt,
)
from tests.userutil import TestUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

REPO = Path(__file__).resolve().parent.parent
RHOST = "192.0.2.7"  # TEST-NET-1: never a real peer


def login(service: str, user: TestUser | str, **kw: str) -> PamLogin:
    name = user if isinstance(user, str) else user.name
    handle = PamLogin(service, name, RHOST, **kw)
    assert handle.start_result.ok, handle.start_result
    return handle


def run_in_child(script: str, payload: dict) -> dict:
    """Run ``script`` in a fresh interpreter that gets ``payload`` as JSON
    on stdin and prints one JSON object; fail on any non-zero exit (a
    segfault is -11)."""
    proc = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(payload),
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    return json.loads(proc.stdout)


# --- password authentication ----------------------------------------------

def test_right_password_is_accepted(pam_service: str, user: TestUser) -> None:
    with login(pam_service, user) as pam:
        auth = pam.authenticate_password(user.password)
        assert (auth.code, auth.ok) == (PAM_SUCCESS, True)
        assert auth.message == "Success"
        assert pam.acct_mgmt().ok
        assert pam.user == user.name


def test_wrong_password_is_refused(pam_service: str, user: TestUser) -> None:
    with login(pam_service, user) as pam:
        result = pam.authenticate_password(user.password + "x")
        assert not result.ok
        assert result.code == PAM_AUTH_ERR
        assert result.message == "Authentication failure"


def test_password_with_nul_is_not_cut_short(pam_service: str,
                                            user: TestUser) -> None:
    # In C "secret\0junk" would read as "secret": it must be refused, not
    # accepted as the right password.
    with login(pam_service, user) as pam:
        assert not pam.authenticate_password(user.password + "\0junk").ok
        # The handle is still usable afterwards.
        assert pam.authenticate_password(user.password).ok


def test_empty_password_is_refused(pam_service: str, user: TestUser) -> None:
    with login(pam_service, user) as pam:
        assert not pam.authenticate_password("").ok


def test_unknown_user_is_refused(pam_service: str) -> None:
    with login(pam_service, "pstnosuchuser") as pam:
        assert not pam.authenticate_password("whatever").ok
        assert not pam.acct_mgmt().ok


def test_locked_account_is_refused(pam_service: str, user: TestUser) -> None:
    subprocess.run(["usermod", "-L", user.name], check=True)
    with login(pam_service, user) as pam:
        # usermod -L prefixes the hash with "!": the right password no
        # longer matches.
        assert not pam.authenticate_password(user.password).ok


def test_expired_account_is_refused_by_acct_mgmt(pam_service: str,
                                                 user: TestUser) -> None:
    subprocess.run(["chage", "-E", "0", user.name], check=True)
    with login(pam_service, user) as pam:
        # The password is still right; the account is what is refused.
        assert pam.authenticate_password(user.password).ok
        account = pam.acct_mgmt()
        assert not account.ok
        # pam_unix says PAM_ACCT_EXPIRED; common-account's jump-over-deny
        # block turns that into PAM_AUTH_ERR (measured). The reason reached
        # the default conversation as an error message.
        assert account.code in (PAM_ACCT_EXPIRED, PAM_AUTH_ERR)
        assert any("expired" in text for text in account.info), account


def test_password_change_required(pam_service: str, user: TestUser) -> None:
    # chage -d 0: the password is right but must be changed now. OpenSSH
    # treats this code from acct_mgmt as "account ok, change the password".
    subprocess.run(["chage", "-d", "0", user.name], check=True)
    with login(pam_service, user) as pam:
        assert pam.authenticate_password(user.password).ok
        account = pam.acct_mgmt()
        assert account.code == PAM_NEW_AUTHTOK_REQD
        assert not account.ok


# --- items ----------------------------------------------------------------

def test_items_are_set_for_modules(pam_service: str, user: TestUser) -> None:
    with login(pam_service, user, ruser="remoteuser") as pam:
        assert pam.get_item(PAM_RHOST) == RHOST
        assert pam.get_item(PAM_RUSER) == "remoteuser"
        assert pam.get_item(PAM_TTY) == "ssh"  # as OpenSSH, before a pty
        assert pam.get_item(PAM_USER) == user.name
        assert pam.set_tty("/dev/pts/42").ok
        assert pam.get_item(PAM_TTY) == "/dev/pts/42"
        # The conversation must not be replaceable through set_item.
        assert not pam.set_item(PAM_CONV, "x").ok


def test_empty_ruser_leaves_it_unset(pam_service: str, user: TestUser) -> None:
    with login(pam_service, user) as pam:
        assert pam.get_item(PAM_RUSER) is None


def test_end_is_idempotent_and_later_calls_fail(pam_service: str,
                                                user: TestUser) -> None:
    pam = login(pam_service, user)
    pam.end()
    pam.end()
    assert not pam.active
    assert not pam.authenticate_password(user.password).ok
    assert not pam.open_session().ok
    assert pam.getenvlist() == {}
    assert pam.get_item(PAM_RHOST) is None


# --- the conversation -----------------------------------------------------

@pytest.fixture
def echo_service(pam_service: str) -> Iterator[str]:
    """A throwaway stack where pam_echo speaks (%H is PAM_RHOST, %t PAM_TTY) before pam_unix asks, so one
    pam_authenticate holds a text and a prompt. Removed afterwards."""
    name = f"privsep-sshd-test-{os.getpid()}"
    path = Path("/etc/pam.d") / name
    path.write_text(
        "auth optional  pam_echo.so Hello %u from %H on %t\n"
        "auth required  pam_unix.so\n"
        "account required pam_unix.so\n"
    )
    yield name
    path.unlink()


def test_responder_sees_texts_and_prompts(echo_service: str,
                                          user: TestUser) -> None:
    seen: list[PamPrompt] = []

    def responder(prompts: list[PamPrompt]) -> list[str]:
        seen.extend(prompts)
        return [user.password if p.style == PAM_PROMPT_ECHO_OFF else "ignored"
                for p in prompts]

    with login(echo_service, user) as pam:
        result = pam.authenticate(responder)
        assert result.ok, result
    hello = f"Hello {user.name} from {RHOST} on ssh"
    assert seen == [PamPrompt(PAM_TEXT_INFO, hello),
                    PamPrompt(PAM_PROMPT_ECHO_OFF, "Password: ")]
    assert result.info == (hello,)


def test_refusing_responder_fails_the_login(echo_service: str,
                                            user: TestUser) -> None:
    with login(echo_service, user) as pam:
        assert not pam.authenticate(lambda prompts: None).ok
        # A wrong number of answers is refused as well.
        assert not pam.authenticate(lambda prompts: []).ok
        assert pam.authenticate_password(user.password).ok


def test_raising_responder_does_not_crash(pam_service: str,
                                          user: TestUser) -> None:
    def responder(prompts: list[PamPrompt]) -> list[str]:
        raise RuntimeError("client went away")

    with login(pam_service, user) as pam:
        result = pam.authenticate(responder)
        assert not result.ok
        assert isinstance(pam.conversation_error, RuntimeError)
        # The same handle still works.
        assert pam.authenticate_password(user.password).ok


def test_keyboard_interrupt_waits_until_pam_returns(pam_service: str,
                                                    user: TestUser) -> None:
    def responder(prompts: list[PamPrompt]) -> list[str]:
        raise KeyboardInterrupt

    with login(pam_service, user) as pam:
        with pytest.raises(KeyboardInterrupt):
            pam.authenticate(responder)
        assert pam.authenticate_password(user.password).ok


def test_multi_message_conversation(pam_service: str, user: TestUser) -> None:
    """Call the conversation PAM holds, as a module does, with several
    messages at once (no stock module on Debian batches them)."""

    class Message(ctypes.Structure):
        _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]

    class Response(ctypes.Structure):
        _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]

    conv_func = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.c_int,
        ctypes.POINTER(ctypes.POINTER(Message)),
        ctypes.POINTER(ctypes.POINTER(Response)), ctypes.c_void_p)

    class Conv(ctypes.Structure):
        _fields_ = [("conv", conv_func), ("appdata_ptr", ctypes.c_void_p)]

    libpam = ctypes.CDLL("libpam.so.0")
    libpam.pam_get_item.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_void_p)]
    libc = ctypes.CDLL("libc.so.6")
    libc.free.argtypes = [ctypes.c_void_p]

    sent = [(PAM_ERROR_MSG, b"Your password expires soon"),
            (PAM_PROMPT_ECHO_ON, b"Token: "),
            (PAM_PROMPT_ECHO_OFF, b"PIN: ")]
    messages = [Message(style, text) for style, text in sent]
    pointers = (ctypes.POINTER(Message) * len(messages))(
        *[ctypes.pointer(m) for m in messages])
    seen: list[PamPrompt] = []

    def responder(prompts: list[PamPrompt]) -> list[str]:
        seen.extend(prompts)
        return ["not used", "123456", "4321"]

    with login(pam_service, user) as pam:
        out = ctypes.c_void_p()
        # The handle address is private; a module gets it from PAM itself.
        assert libpam.pam_get_item(pam._handle, PAM_CONV,
                                   ctypes.byref(out)) == PAM_SUCCESS
        conv = ctypes.cast(out, ctypes.POINTER(Conv)).contents
        pam._responder = responder  # what authenticate() does for a call
        replies = ctypes.POINTER(Response)()
        code = conv.conv(len(messages), pointers, ctypes.byref(replies), None)
        assert code == PAM_SUCCESS
        answers = [ctypes.string_at(replies[i].resp) for i in range(3)]
        for i in range(3):
            libc.free(replies[i].resp)
        libc.free(ctypes.cast(replies, ctypes.c_void_p))

        # A refusal leaves *resp NULL, so a module frees nothing.
        pam._responder = lambda prompts: None
        replies = ctypes.POINTER(Response)()
        assert conv.conv(len(messages), pointers, ctypes.byref(replies),
                         None) != PAM_SUCCESS
        assert not replies
        # So does a count PAM never sends.
        assert conv.conv(0, pointers, ctypes.byref(replies), None) \
            != PAM_SUCCESS

    assert seen == [PamPrompt(s, t.decode()) for s, t in sent]
    assert answers == [b"", b"123456", b"4321"]


# --- setcred and the session (in a child process) -------------------------

SESSION_SCRIPT = r"""
import gc, json, sys
from privsep.monitor.auth_pam import *
args = json.load(sys.stdin)
out = {}
pam = PamLogin(args["service"], args["user"], "192.0.2.7")
out["auth"] = pam.authenticate_password(args["password"]).ok
out["acct"] = pam.acct_mgmt().ok
# Churn memory between the calls: a conversation that had been freed after
# pam_authenticate (python-pam's pitfall) would be overwritten by now, and
# pam_motd would call into it during pam_open_session.
gc.collect()
junk = [bytearray(256) for _ in range(20000)]
del junk
gc.collect()
out["putenv"] = pam.putenv("SSH_CONNECTION", "192.0.2.7 50000 192.0.2.1 22").ok
out["setcred"] = pam.setcred(PAM_ESTABLISH_CRED).ok
opened = pam.open_session()
out["open"] = opened.ok
out["info"] = list(opened.info)
out["env"] = pam.getenvlist()
out["loginuid"] = open("/proc/self/loginuid").read()
out["tty"] = pam.get_item(PAM_TTY)
out["close"] = pam.close_session().ok
out["delcred"] = pam.setcred(PAM_DELETE_CRED).ok
pam.end()
print(json.dumps(out))
"""


def test_session_after_authenticate_survives(pam_service: str,
                                             user: TestUser) -> None:
    out = run_in_child(SESSION_SCRIPT, {"service": pam_service,
                                        "user": user.name,
                                        "password": user.password})
    for step in ("auth", "acct", "putenv", "setcred", "open", "close",
                 "delcred"):
        assert out[step] is True, (step, out)
    # pam_motd talked through the conversation during pam_open_session.
    assert any("Debian GNU/Linux" in text for text in out["info"]), out
    env = out["env"]
    assert isinstance(env, dict)
    assert all(isinstance(k, str) and isinstance(v, str)
               for k, v in env.items())
    assert env["SSH_CONNECTION"] == "192.0.2.7 50000 192.0.2.1 22"
    # pam_loginuid acted on the calling process, as on OpenSSH's monitor.
    assert out["loginuid"] == str(user.uid)
    assert out["tty"] == "ssh"
