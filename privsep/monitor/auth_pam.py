"""One PAM handle per login, held by the root monitor.

This is the monitor's side of OpenSSH's ``auth-pam.c``: the handle is
started once when the user is named, authentication, account checks,
credentials and the session all run on that same handle, and it is ended
when the connection goes away.

Why not python-pam's ``PamAuthenticator.authenticate``: it ends its
conversation callback's life when it returns, so any later PAM call that
talks (pam_motd during ``pam_open_session``) jumps into freed memory; it
never sets PAM_RHOST/PAM_RUSER; and it answers only the first hidden prompt.
Here the conversation function and its ``struct pam_conv`` are attributes of
the :class:`PamLogin`, so they live exactly as long as the handle, and the
conversation delegates to a Python *responder* chosen per call.

PAM failures are results (:class:`PamResult`), never exceptions; nothing
here prints. A handle is not thread-safe: one login, one monitor process.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    byref,
    c_char_p,
    c_int,
    c_size_t,
    c_void_p,
    cast,
    sizeof,
)
from dataclasses import dataclass, field

from privsep.common.trace import trace

log = logging.getLogger("privsep.pam")

__all__ = [
    "PAM_SUCCESS", "PAM_SYSTEM_ERR", "PAM_BUF_ERR", "PAM_PERM_DENIED",
    "PAM_AUTH_ERR", "PAM_USER_UNKNOWN", "PAM_MAXTRIES",
    "PAM_NEW_AUTHTOK_REQD", "PAM_ACCT_EXPIRED", "PAM_CONV_ERR",
    "PAM_AUTHTOK_EXPIRED", "PAM_BAD_ITEM",
    "PAM_SERVICE", "PAM_USER", "PAM_TTY", "PAM_RHOST", "PAM_CONV",
    "PAM_RUSER", "PAM_USER_PROMPT",
    "PAM_PROMPT_ECHO_OFF", "PAM_PROMPT_ECHO_ON", "PAM_ERROR_MSG",
    "PAM_TEXT_INFO",
    "PAM_SILENT", "PAM_DISALLOW_NULL_AUTHTOK", "PAM_ESTABLISH_CRED",
    "PAM_DELETE_CRED", "PAM_REINITIALIZE_CRED", "PAM_REFRESH_CRED",
    "PAM_MAX_NUM_MSG",
    "PamPrompt", "PamResult", "Responder", "PamLogin",
]

# --- Linux-PAM constants (security/_pam_types.h) -------------------------

PAM_SUCCESS = 0
PAM_SYSTEM_ERR = 4
PAM_BUF_ERR = 5
PAM_PERM_DENIED = 6
PAM_AUTH_ERR = 7
PAM_USER_UNKNOWN = 10
PAM_MAXTRIES = 11
PAM_NEW_AUTHTOK_REQD = 12
PAM_ACCT_EXPIRED = 13
PAM_CONV_ERR = 19
PAM_AUTHTOK_EXPIRED = 27
PAM_BAD_ITEM = 29

# Items for pam_set_item/pam_get_item.
PAM_SERVICE = 1
PAM_USER = 2
PAM_TTY = 3
PAM_RHOST = 4
PAM_CONV = 5
PAM_AUTHTOK = 6
PAM_OLDAUTHTOK = 7
PAM_RUSER = 8
PAM_USER_PROMPT = 9
PAM_XDISPLAY = 11
PAM_AUTHTOK_TYPE = 13

# Only these items are plain C strings; the others (PAM_CONV, the fail-delay
# function, xauth data) are structs or function pointers that a str cannot
# describe, and setting PAM_CONV would replace the conversation kept alive
# below.
_STRING_ITEMS = frozenset({
    PAM_SERVICE, PAM_USER, PAM_TTY, PAM_RHOST, PAM_AUTHTOK, PAM_OLDAUTHTOK,
    PAM_RUSER, PAM_USER_PROMPT, PAM_XDISPLAY, PAM_AUTHTOK_TYPE,
})

# Message styles.
PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2
PAM_ERROR_MSG = 3
PAM_TEXT_INFO = 4

# Flags.
PAM_SILENT = 0x8000
PAM_DISALLOW_NULL_AUTHTOK = 0x0001
PAM_ESTABLISH_CRED = 0x0002
PAM_DELETE_CRED = 0x0004
PAM_REINITIALIZE_CRED = 0x0008
PAM_REFRESH_CRED = 0x0010

# Linux-PAM never sends more than this many messages in one call; OpenSSH
# refuses bigger conversations, and so do we.
PAM_MAX_NUM_MSG = 32

# Strings cross into C as UTF-8. surrogateescape lets a caller pass on a
# password that arrived as arbitrary bytes (decoded with surrogateescape)
# without changing a byte of it.
_ENCODING = "utf-8"


# --- C structures ---------------------------------------------------------
# Defined here rather than imported from python-pam's private module, so a
# change there cannot silently change the ABI we rely on. The response text
# is a void pointer because it must hold memory from libc's malloc, which
# PAM frees; ctypes must never own it.

class _PamMessage(Structure):
    _fields_ = [("msg_style", c_int), ("msg", c_char_p)]


class _PamResponse(Structure):
    _fields_ = [("resp", c_void_p), ("resp_retcode", c_int)]


# Linux-PAM passes ``const struct pam_message **msg`` as an array of
# pointers (msg[i]->...), not Solaris' pointer to an array.
_ConvFunc = CFUNCTYPE(
    c_int, c_int, POINTER(POINTER(_PamMessage)),
    POINTER(POINTER(_PamResponse)), c_void_p,
)


class _PamConv(Structure):
    _fields_ = [("conv", _ConvFunc), ("appdata_ptr", c_void_p)]


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    # Private CDLL instances: argtypes set here cannot clash with whatever
    # python-pam sets on its own instance of the same libraries.
    pam = ctypes.CDLL("libpam.so.0")
    libc = ctypes.CDLL("libc.so.6")
    h = c_void_p
    for name in ("pam_authenticate", "pam_acct_mgmt", "pam_setcred",
                 "pam_open_session", "pam_close_session", "pam_end"):
        fn = getattr(pam, name)
        fn.argtypes = [h, c_int]
        fn.restype = c_int
    pam.pam_start.argtypes = [c_char_p, c_char_p, POINTER(_PamConv),
                              POINTER(c_void_p)]
    pam.pam_start.restype = c_int
    pam.pam_set_item.argtypes = [h, c_int, c_char_p]
    pam.pam_set_item.restype = c_int
    pam.pam_get_item.argtypes = [h, c_int, POINTER(c_void_p)]
    pam.pam_get_item.restype = c_int
    pam.pam_strerror.argtypes = [h, c_int]
    pam.pam_strerror.restype = c_char_p
    pam.pam_getenvlist.argtypes = [h]
    pam.pam_getenvlist.restype = POINTER(c_void_p)
    pam.pam_putenv.argtypes = [h, c_char_p]
    pam.pam_putenv.restype = c_int
    libc.calloc.argtypes = [c_size_t, c_size_t]
    libc.calloc.restype = c_void_p
    libc.strdup.argtypes = [c_char_p]
    libc.strdup.restype = c_void_p
    libc.free.argtypes = [c_void_p]
    libc.free.restype = None
    return pam, libc


_pam, _libc = _load()


def _strerror(handle: int | None, code: int) -> str:
    # Linux-PAM's pam_strerror does not look at the handle, so this also
    # works for a handle that failed to start or has ended.
    raw = _pam.pam_strerror(handle, code)
    return raw.decode(_ENCODING, "replace") if raw else f"PAM error {code}"


def _cstr(value: str, what: str) -> bytes:
    # A NUL would silently cut the string in C: "alice\0x" would become
    # "alice". Refuse it; the caller must never reach PAM with such input.
    raw = value.encode(_ENCODING, "surrogateescape")
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL byte")
    return raw


# --- public types -----------------------------------------------------------

@dataclass(frozen=True)
class PamPrompt:
    """One message of a conversation: a prompt, or a text to show."""

    style: int  # PAM_PROMPT_ECHO_OFF/ON, PAM_ERROR_MSG, PAM_TEXT_INFO
    text: str


@dataclass(frozen=True)
class PamResult:
    """Outcome of one PAM call.

    ``info`` holds the PAM_TEXT_INFO and PAM_ERROR_MSG texts the stack sent
    during the call (pam_motd's message of the day, "You have mail", an
    expiry warning), in order; OpenSSH keeps these as its ``loginmsg``.
    """

    code: int
    ok: bool
    message: str
    info: tuple[str, ...] = field(default=())


# Gets every message of one conversation call (prompts and texts alike) and
# returns one answer per message, or None to fail the conversation. Answers
# to PAM_TEXT_INFO/PAM_ERROR_MSG are ignored. It must not call back into the
# same PamLogin.
Responder = Callable[[list[PamPrompt]], list[str] | None]

_PROMPTS = (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON)
_TEXTS = (PAM_ERROR_MSG, PAM_TEXT_INFO)


def _store_only(prompts: list[PamPrompt]) -> list[str] | None:
    """Default responder, as OpenSSH's sshpam_store_conv: texts are kept (in
    PamResult.info), any prompt fails, since nobody is there to answer."""
    if any(p.style not in _TEXTS for p in prompts):
        return None
    return [""] * len(prompts)


class PamLogin:
    """A PAM handle for one login, with its conversation kept alive.

    ``service`` names the file in /etc/pam.d. ``rhost`` is the client's
    address (or name, with UseDNS); ``tty`` starts as "ssh", as OpenSSH sets
    it before any pty exists, because some modules (pam_time) need a tty.
    Empty ``rhost``/``ruser`` leave those items unset: an empty string is
    not "unknown" to every module, and OpenSSH never sets PAM_RUSER.

    If pam_start or setting an item fails, the handle is ended at once and
    every method returns that failure (see ``start_result``). A NUL in any
    argument raises ValueError: C would silently cut the string there.
    """

    def __init__(self, service: str, user: str, rhost: str,
                 ruser: str = "", tty: str = "ssh") -> None:
        self._initial_user = user
        self._handle: int | None = None
        # pam_end belongs to the process that called pam_start (the
        # monitor), as OpenSSH's sshpam_cleanup checks mm_is_monitor().
        self._owner_pid = os.getpid()
        self._last_code = PAM_SUCCESS
        self._responder: Responder = _store_only
        self._info: list[str] = []
        self._conv_exception: BaseException | None = None
        #: What the responder raised during the latest call, if anything
        #: (the conversation reported PAM_CONV_ERR instead), for logging.
        self.conversation_error: BaseException | None = None
        # Both objects must outlive every PAM call on the handle: libpam
        # keeps a copy of the struct but calls through the function pointer,
        # which is only valid while this ctypes thunk exists.
        self._conv_func = _ConvFunc(self._converse)
        self._conv = _PamConv(self._conv_func, None)

        handle = c_void_p()
        code = _pam.pam_start(_cstr(service, "service"), _cstr(user, "user"),
                              byref(self._conv), byref(handle))
        self._last_code = code
        trace(log, "monitor", "PAM pam_start(%s, %s): %s", service, user, _strerror(None, code))
        if code != PAM_SUCCESS:
            if handle.value:
                _pam.pam_end(handle.value, code)
            self.start_result = self._result(code)
            return
        self._handle = handle.value

        items = [(PAM_RHOST, rhost), (PAM_RUSER, ruser), (PAM_TTY, tty)]
        for item, value in items:
            if not value:
                continue
            result = self.set_item(item, value)
            if not result.ok:
                self.end()
                self.start_result = result
                return
        self.start_result = self._result(PAM_SUCCESS)

    # --- the conversation --------------------------------------------------

    def _converse(self, num_msg: int, msg: ctypes._Pointer,  # type: ignore[name-defined]
                  resp: ctypes._Pointer, _appdata: int | None) -> int:  # type: ignore[name-defined]
        # Called by libpam from C. An exception escaping here would be
        # printed by ctypes and turned into a return value of 0, which is
        # PAM_SUCCESS with no replies: catch everything.
        try:
            return self._converse_inner(num_msg, msg, resp)
        except BaseException as exc:  # noqa: BLE001 - C must see a code
            self._conv_exception = exc
            return PAM_CONV_ERR

    def _converse_inner(self, num_msg: int, msg: ctypes._Pointer,  # type: ignore[name-defined]
                        resp: ctypes._Pointer) -> int:  # type: ignore[name-defined]
        resp[0] = POINTER(_PamResponse)()  # *resp = NULL until we succeed
        if not 0 < num_msg <= PAM_MAX_NUM_MSG:
            return PAM_CONV_ERR
        prompts: list[PamPrompt] = []
        for i in range(num_msg):
            m = msg[i].contents
            text = (m.msg or b"").decode(_ENCODING, "replace")
            prompts.append(PamPrompt(m.msg_style, text))
            if m.msg_style in _TEXTS:
                self._info.append(text)

        answers = self._responder(list(prompts))
        if answers is None or len(answers) != num_msg:
            return PAM_CONV_ERR
        # Encode everything before allocating, so a refusal needs no freeing.
        replies: list[bytes] = []
        for prompt, answer in zip(prompts, answers):
            if prompt.style in _TEXTS:
                replies.append(b"")  # as OpenSSH: an empty reply, not NULL
            elif prompt.style in _PROMPTS and isinstance(answer, str):
                raw = answer.encode(_ENCODING, "surrogateescape")
                if b"\0" in raw:
                    return PAM_CONV_ERR  # would be cut short in C
                replies.append(raw)
            else:
                return PAM_CONV_ERR  # binary prompts, non-str answers

        # PAM frees the array and each string with free(): they must come
        # from libc's allocator, never from ctypes buffers.
        addr = _libc.calloc(num_msg, sizeof(_PamResponse))
        if not addr:
            return PAM_BUF_ERR
        array = cast(addr, POINTER(_PamResponse))
        for i, raw in enumerate(replies):
            copy = _libc.strdup(raw)
            if not copy:
                for j in range(i):
                    _libc.free(array[j].resp)
                _libc.free(addr)
                return PAM_BUF_ERR
            array[i].resp = copy
            array[i].resp_retcode = 0
        resp[0] = array
        return PAM_SUCCESS

    # --- plumbing ---------------------------------------------------------

    def _result(self, code: int) -> PamResult:
        return PamResult(code, code == PAM_SUCCESS,
                         _strerror(self._handle, code), tuple(self._info))

    def _inactive(self) -> PamResult:
        if not self.start_result.ok:
            return self.start_result
        return PamResult(PAM_SYSTEM_ERR, False, "PAM handle has ended")

    def _call(self, func: Callable[[int, int], int], flags: int,
              responder: Responder | None = None) -> PamResult:
        if self._handle is None:
            return self._inactive()
        self._responder = responder if responder is not None else _store_only
        self._info = []
        self._conv_exception = None
        self.conversation_error = None
        try:
            code = func(self._handle, flags)
        finally:
            self._responder = _store_only
        self._last_code = code
        pending, self._conv_exception = self._conv_exception, None
        if pending is not None:
            self.conversation_error = pending
            if not isinstance(pending, Exception):
                # KeyboardInterrupt/SystemExit were held back while C was on
                # the stack; deliver them now that it is not.
                raise pending
        trace(log, "monitor", "PAM %s (flags %#x): %s", getattr(func, "__name__", "call"), flags,
              _strerror(self._handle, code))
        return self._result(code)

    # --- public API ---------------------------------------------------------

    @property
    def active(self) -> bool:
        """True from a successful start until end()."""
        return self._handle is not None

    @property
    def user(self) -> str:
        """PAM_USER as the stack now sees it: a module may have changed it
        (for example, mapped a login name to a canonical one)."""
        current = self.get_item(PAM_USER)
        return current if current is not None else self._initial_user

    def authenticate(self, responder: Responder, flags: int = 0) -> PamResult:
        """pam_authenticate with ``responder`` answering the conversation
        (keyboard-interactive relays prompts to the client through it)."""
        return self._call(_pam.pam_authenticate, flags, responder)

    def authenticate_password(
        self, password: str, flags: int = PAM_DISALLOW_NULL_AUTHTOK,
    ) -> PamResult:
        """pam_authenticate answering as OpenSSH's sshpam_passwd_conv:
        every hidden prompt gets ``password``, a visible prompt fails the
        conversation (the client sent no answer to it), texts are collected
        in the result's ``info``.

        ``flags`` defaults to PAM_DISALLOW_NULL_AUTHTOK, which is what
        OpenSSH passes with PermitEmptyPasswords no (its default); pass 0 to
        allow empty passwords. For an unknown user OpenSSH still runs the
        stack, with a junk password, so the timing does not tell; that
        choice belongs to the caller.
        """
        def answer(prompts: list[PamPrompt]) -> list[str] | None:
            if any(p.style == PAM_PROMPT_ECHO_ON for p in prompts):
                return None
            return [password if p.style == PAM_PROMPT_ECHO_OFF else ""
                    for p in prompts]
        return self._call(_pam.pam_authenticate, flags, answer)

    def acct_mgmt(self, flags: int = 0) -> PamResult:
        """pam_acct_mgmt: expired or locked accounts fail here.
        PAM_NEW_AUTHTOK_REQD means the password must be changed."""
        return self._call(_pam.pam_acct_mgmt, flags)

    def setcred(self, flag: int = PAM_ESTABLISH_CRED) -> PamResult:
        """pam_setcred with PAM_ESTABLISH_CRED, PAM_REINITIALIZE_CRED,
        PAM_REFRESH_CRED or PAM_DELETE_CRED (optionally | PAM_SILENT)."""
        return self._call(_pam.pam_setcred, flag)

    def open_session(self, flags: int = 0) -> PamResult:
        """pam_open_session. Runs in this (the monitor's) process, so
        pam_loginuid sets *this* process's loginuid and pam_limits and
        pam_keyinit act on it too, exactly as with OpenSSH's monitor.
        Texts such as the message of the day come back in ``info``."""
        return self._call(_pam.pam_open_session, flags)

    def close_session(self, flags: int = 0) -> PamResult:
        """pam_close_session (OpenSSH passes PAM_SILENT at cleanup)."""
        return self._call(_pam.pam_close_session, flags)

    def getenvlist(self) -> dict[str, str]:
        """The PAM environment (pam_env, pam_systemd's XDG_*, ...)."""
        if self._handle is None:
            return {}
        env: dict[str, str] = {}
        array = _pam.pam_getenvlist(self._handle)
        if not array:
            return env
        # Both the strings and the array are ours to free.
        try:
            i = 0
            while array[i]:
                entry = ctypes.string_at(array[i]).decode(
                    _ENCODING, "surrogateescape")
                name, sep, value = entry.partition("=")
                if sep:
                    env[name] = value
                _libc.free(array[i])
                i += 1
        finally:
            _libc.free(cast(array, c_void_p))
        return env

    def putenv(self, name: str, value: str) -> PamResult:
        """pam_putenv("NAME=value"), as OpenSSH does for SSH_CONNECTION and
        SSH_AUTH_INFO_0 so that modules can see them."""
        if self._handle is None:
            return self._inactive()
        if not name or "=" in name:
            return PamResult(PAM_BAD_ITEM, False, _strerror(None, PAM_BAD_ITEM))
        code = _pam.pam_putenv(self._handle,
                               _cstr(f"{name}={value}", "environment entry"))
        return PamResult(code, code == PAM_SUCCESS,
                         _strerror(self._handle, code))

    def set_item(self, item: int, value: str) -> PamResult:
        """pam_set_item for string items (PAM_RHOST, PAM_TTY, ...). PAM
        copies the string. PAM_CONV and other non-string items are refused
        with PAM_BAD_ITEM."""
        if self._handle is None:
            return self._inactive()
        if item not in _STRING_ITEMS:
            return PamResult(PAM_BAD_ITEM, False, _strerror(None, PAM_BAD_ITEM))
        code = _pam.pam_set_item(self._handle, item, _cstr(value, "item"))
        return PamResult(code, code == PAM_SUCCESS,
                         _strerror(self._handle, code))

    def get_item(self, item: int) -> str | None:
        """pam_get_item for a string item; None if unset or not a string."""
        if self._handle is None or item not in _STRING_ITEMS:
            return None
        out = c_void_p()
        code = _pam.pam_get_item(self._handle, item, byref(out))
        if code != PAM_SUCCESS or not out.value:
            return None
        return ctypes.string_at(out.value).decode(_ENCODING, "surrogateescape")

    def set_tty(self, tty: str) -> PamResult:
        """Set PAM_TTY once a pty exists; OpenSSH passes the full path,
        e.g. "/dev/pts/3"."""
        return self.set_item(PAM_TTY, tty)

    def end(self) -> None:
        """pam_end with the last call's status. Idempotent. In a forked
        child the handle is only forgotten: module cleanups (pam_systemd,
        pam_keyinit) belong to the monitor, which still holds it."""
        handle, self._handle = self._handle, None
        if handle is not None and os.getpid() == self._owner_pid:
            _pam.pam_end(handle, self._last_code)
            trace(log, "monitor", "PAM pam_end")

    def __enter__(self) -> PamLogin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


#: The shared objects preload_modules() keeps loaded, for the listener's life.
_PRELOADED: list[ctypes.CDLL] = []


def preload_modules(service: str) -> int:
    """Load the modules of ``service``'s PAM stack (and the libraries they
    link) once, in the listener, and keep them loaded; the number of
    shared objects kept.

    Every monitor's pam_start would otherwise open, map and relocate each
    of them again and run their constructors, and its pam_end unload them:
    about 2 ms of CPU and 0.2 MB of pages per login (docs/DESIGN.md, "Memory
    per session").  Loaded here, they are shared pages in every monitor,
    whose pam_start finds them loaded.  The handle used to load them is
    ended at once: no module function is called, nothing is authenticated,
    and no PAM state stays in the listener."""
    before = _mapped_objects()
    conv_func = _ConvFunc(lambda *_: PAM_CONV_ERR)  # never called: nothing converses
    conv = _PamConv(conv_func, None)
    handle = c_void_p()
    code = _pam.pam_start(_cstr(service, "service"), None, byref(conv), byref(handle))
    try:
        if code == PAM_SUCCESS:
            for path in sorted(_mapped_objects() - before):
                try:
                    _PRELOADED.append(ctypes.CDLL(path))
                except OSError:
                    pass  # the monitor's pam_start will load it as before
    finally:
        if handle.value:
            _pam.pam_end(handle.value, code)
    return len(_PRELOADED)


def _mapped_objects() -> set[str]:
    """The shared objects mapped into this process now."""
    with open("/proc/self/maps") as maps:
        return {fields[5] for fields in map(str.split, maps)
                if len(fields) > 5 and ".so" in os.path.basename(fields[5])}
