"""Public-key authentication, monitor side: authorized_keys and signatures.

Runs in the root monitor; the counterpart of OpenSSH's ``auth2-pubkey.c``
with the bits of ``authfile.c``, ``auth-options.c`` and ``misc.c`` it needs.
The net-child only ever *asks*: "is this key allowed for this user?" and
"here is a signature, is it good?".  Everything here answers from what the
monitor itself read and parsed:

* ``parse_authorized_keys`` turns a file's text into keys and options (and
  a list of problems for the log), strictly: a line with anything unknown
  or malformed is dropped, as OpenSSH drops it.
* ``read_authorized_keys`` reads the user's files *with the user's rights*
  and applies StrictModes to what it actually opened.
* ``find_key`` matches an offered key and signature algorithm.
* ``parse_signed_userauth`` decodes the data a client signs, so that the
  monitor can check the session binding itself (monitor_policy.py).
* ``verify_userauth_signature`` verifies a signature with the public key.

No sockets, no logging: callers log the returned problems.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import hashlib
import os
import pwd
import re
import stat
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import paramiko

from privsep.sshbuf import Reader

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

#: SSH_MSG_USERAUTH_REQUEST (RFC 4252).
SSH_MSG_USERAUTH_REQUEST = 50

#: OpenSSH's default AuthorizedKeysFile, a space-separated list.
DEFAULT_AUTHORIZED_KEYS_FILES = ".ssh/authorized_keys .ssh/authorized_keys2"

#: At most this much of one authorized_keys file is read.
MAX_AUTHORIZED_KEYS_BYTES = 1024 * 1024

#: OpenSSH refuses RSA keys with a smaller modulus (SSH_RSA_MINIMUM_MODULUS_SIZE).
RSA_MIN_BITS = 1024

#: ECDSA key types: curve name inside the blob and coordinate size in bytes.
_ECDSA_CURVES: dict[str, tuple[str, int]] = {
    "ecdsa-sha2-nistp256": ("nistp256", 32),
    "ecdsa-sha2-nistp384": ("nistp384", 48),
    "ecdsa-sha2-nistp521": ("nistp521", 66),
}

#: Key types accepted in authorized_keys, with the signature algorithms each
#: may be used with.  Plain "ssh-rsa" (RSA with SHA-1) is absent on purpose:
#: OpenSSH 9.2's default PubkeyAcceptedAlgorithms no longer includes it.
ALGORITHMS_FOR_KEY_TYPE: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ssh-rsa": ("rsa-sha2-256", "rsa-sha2-512"),
    **{name: (name,) for name in _ECDSA_CURVES},
}

#: Key types that OpenSSH knows but this server does not support: security
#: keys, DSA and certificates.  A line with one of these is reported as such
#: rather than as garbage.
UNSUPPORTED_KEY_TYPES = frozenset(
    {
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-dss",
        "ssh-ed25519-cert-v01@openssh.com",
        "ssh-rsa-cert-v01@openssh.com",
        "ssh-dss-cert-v01@openssh.com",
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        "sk-ssh-ed25519-cert-v01@openssh.com",
        "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    }
)

#: Options that are bare words.  Most can be negated with a "no-" prefix
#: (OpenSSH's opt_flag with negation allowed); "restrict" and
#: "cert-authority" cannot.
_NEGATABLE_FLAGS = frozenset(
    {
        "port-forwarding",
        "agent-forwarding",
        "x11-forwarding",
        "pty",
        "user-rc",
        "touch-required",
        "verify-required",
    }
)
FLAG_OPTIONS = frozenset(
    {"restrict", "cert-authority"}
    | _NEGATABLE_FLAGS
    | {"no-" + name for name in _NEGATABLE_FLAGS}
)

#: Options that take a double-quoted value: name="value".
VALUE_OPTIONS = frozenset(
    {
        "command",
        "from",
        "environment",
        "permitopen",
        "permitlisten",
        "expiry-time",
        "principals",
        "tunnel",
    }
)

#: Value options that may appear only once per line.
_SINGLE_VALUE_OPTIONS = frozenset({"command", "from", "principals"})

#: Log labels, as OpenSSH's sshkey_type() prints them.
_KEY_LABELS: dict[str, str] = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "rsa-sha2-256": "RSA",
    "rsa-sha2-512": "RSA",
    "ssh-dss": "DSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
    **{name: "ECDSA" for name in _ECDSA_CURVES},
}

# The largest tunnel device number OpenSSH accepts (SSH_TUNID_MAX).
_TUNID_MAX = 0x7FFFFFFF - 2
_ENV_NAME = re.compile(r"[A-Za-z0-9_]+\Z")
_EXPIRY = re.compile(r"(\d{8}|\d{12}|\d{14})Z?\Z")
_BLANKS = " \t"


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyOption:
    """One authorized_keys option: ``no-pty`` (value None) or ``command="..."``.

    ``name`` is lower-case; ``value`` has its quotes removed and ``\\"``
    turned into ``"``.
    """

    name: str
    value: str | None = None


@dataclass(frozen=True)
class AuthorizedKey:
    """One valid line of an authorized_keys file.

    ``lineno`` counts from 1 in the file it came from; ``source`` is that
    file's path when it was read by ``read_authorized_keys`` ("" otherwise).
    """

    keytype: str
    blob: bytes
    comment: str
    options: tuple[KeyOption, ...]
    lineno: int
    source: str = ""

    def option(self, name: str) -> KeyOption | None:
        """The first option called ``name`` (lower-case), or None."""
        for opt in self.options:
            if opt.name == name:
                return opt
        return None


@dataclass(frozen=True)
class SignedUserauth:
    """The data a client signs for publickey auth (RFC 4252 section 7)."""

    session_id: bytes
    msg_type: int
    user: str
    service: str
    method: str
    has_signature: bool
    algorithm: str
    keyblob: bytes


# ---------------------------------------------------------------------------
# SSH wire decoding (privsep/sshbuf.py reads the fields)
# ---------------------------------------------------------------------------


def parse_signed_userauth(data: bytes) -> SignedUserauth:
    """Decode the data a client signs for publickey authentication.

    Layout: string session id, byte message type, string user, string
    service, string method, boolean "has signature", string algorithm, string
    key blob.  Only decoding happens here; whether the fields fit this
    connection is the monitor's decision (monitor_policy.py).  Raises
    ValueError on truncation, a length running past the end, trailing bytes,
    or names that are not UTF-8 (or contain NUL).
    """
    r = Reader(data)
    signed = SignedUserauth(
        session_id=r.string(),
        msg_type=r.byte(),
        user=r.name("user"),
        service=r.name("service"),
        method=r.name("method"),
        has_signature=r.boolean(),
        algorithm=r.name("algorithm"),
        keyblob=r.string(),
    )
    r.end()
    return signed


def public_blob_type(blob: bytes) -> str:
    """Check a public key blob strictly and return its key type.

    Only the supported plain key types pass: every field must be present
    and well formed, with nothing after the last one.  Raises ValueError.
    """
    r = Reader(blob)
    keytype = r.name("key type")
    if keytype == "ssh-ed25519":
        if len(r.string()) != 32:
            raise ValueError("ed25519 public key is not 32 bytes")
    elif keytype == "ssh-rsa":
        exponent = r.mpint()
        modulus = r.mpint()
        if exponent < 3 or exponent % 2 == 0:
            raise ValueError("bad RSA public exponent")
        if modulus.bit_length() < RSA_MIN_BITS:
            raise ValueError(
                f"RSA key of {modulus.bit_length()} bits is below the "
                f"{RSA_MIN_BITS}-bit minimum"
            )
    elif keytype in _ECDSA_CURVES:
        curve, size = _ECDSA_CURVES[keytype]
        if r.name("curve") != curve:
            raise ValueError(f"curve name does not match {keytype}")
        point = r.string()
        if len(point) != 1 + 2 * size or point[0] != 4:
            raise ValueError("ECDSA point is not an uncompressed point")
    else:
        raise ValueError(f"unsupported key type {keytype!r} in key blob")
    r.end()
    return keytype


def _load_public_key(blob: bytes) -> paramiko.PKey:
    """A paramiko public key from a blob that public_blob_type accepted.

    paramiko checks what we do not (the ECDSA point is on its curve, the
    ed25519 point decodes).  Raises ValueError (or paramiko's own errors,
    which callers treat alike).
    """
    keytype = public_blob_type(blob)
    return paramiko.PKey.from_type_string(keytype, blob)


# ---------------------------------------------------------------------------
# authorized_keys parsing
# ---------------------------------------------------------------------------


def _dequote(text: str, pos: int) -> tuple[str, int]:
    """Read a double-quoted value starting at ``text[pos]``.

    Inside the quotes ``\\"`` stands for a quote; every other character,
    backslashes included, is literal.  Returns the value and the index after
    the closing quote.
    """
    if pos >= len(text) or text[pos] != '"':
        raise ValueError("missing start quote")
    pos += 1
    out: list[str] = []
    while pos < len(text) and text[pos] != '"':
        if text[pos] == "\\" and text[pos + 1 : pos + 2] == '"':
            pos += 1
        out.append(text[pos])
        pos += 1
    if pos >= len(text):
        raise ValueError("missing end quote")
    return "".join(out), pos + 1


def _check_permit(value: str, bare_port_ok: bool) -> None:
    """Validate a permitopen/permitlisten value: host:port (port may be *)."""
    if bare_port_ok and ":" not in value:
        value = "*:" + value
    if value.startswith("["):
        close = value.find("]")
        if close < 0 or value[close + 1 : close + 2] not in (":", "/"):
            raise ValueError("invalid permission hostname")
        host, port = value[1:close], value[close + 2 :]
    else:
        cut = min((i for i in (value.find(":"), value.find("/")) if i >= 0), default=-1)
        if cut < 0:
            raise ValueError("invalid permission port")
        host, port = value[:cut], value[cut + 1 :]
    if len(host) >= 1025:
        raise ValueError("invalid permission hostname")
    if port != "*" and not (port.isdigit() and 0 < int(port) <= 65535):
        raise ValueError("invalid permission port")


def _check_expiry(value: str) -> None:
    """Validate an expiry-time: YYYYMMDD[HHMM[SS]], optionally ending in Z."""
    if not _EXPIRY.match(value):
        raise ValueError("invalid expires time")
    digits = value.rstrip("Z").ljust(14, "0")
    try:
        datetime.datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError as exc:
        raise ValueError("invalid expires time") from exc


def _check_option_value(name: str, value: str) -> None:
    """Reject option values OpenSSH would reject when it parses the line."""
    if name == "environment":
        env_name, eq, _ = value.partition("=")
        if not eq or not _ENV_NAME.match(env_name):
            raise ValueError("invalid environment string")
    elif name == "permitopen":
        _check_permit(value, bare_port_ok=False)
    elif name == "permitlisten":
        _check_permit(value, bare_port_ok=True)
    elif name == "expiry-time":
        _check_expiry(value)
    elif name == "tunnel":
        if value.lower() != "any" and not (
            value.isdigit() and int(value) <= _TUNID_MAX
        ):
            raise ValueError("invalid tun device")


def parse_key_options(text: str) -> tuple[KeyOption, ...]:
    """Parse the comma-separated options field of an authorized_keys line.

    Names are case-insensitive (returned lower-case).  Any unknown option,
    a flag given a value, a value option without a quoted value, a repeated
    command/from/principals, or a malformed value makes the whole field
    invalid: ValueError says why.
    """
    options: list[KeyOption] = []
    seen: set[str] = set()
    pos = 0
    while True:
        end = pos
        while end < len(text) and text[end] not in "=,":
            end += 1
        name = text[pos:end].lower()
        if name in FLAG_OPTIONS:
            if text[end : end + 1] == "=":
                raise ValueError(f"option {name!r} takes no value")
            options.append(KeyOption(name, None))
            pos = end
        elif name in VALUE_OPTIONS:
            if text[end : end + 1] != "=":
                raise ValueError(f"option {name!r} needs a value")
            value, pos = _dequote(text, end + 1)
            if name in _SINGLE_VALUE_OPTIONS and name in seen:
                raise ValueError(f'multiple "{name}" clauses')
            _check_option_value(name, value)
            options.append(KeyOption(name, value))
        else:
            raise ValueError(f"unknown key option {text[pos:end]!r}")
        seen.add(name)
        if pos == len(text):
            return tuple(options)
        if text[pos] != ",":
            raise ValueError("unexpected text after option " + repr(name))
        pos += 1
        if pos == len(text):
            raise ValueError("unexpected end-of-options")


def _split_options(line: str) -> tuple[str, str]:
    """Split a line into its options field and the rest (the key part).

    The options field ends at the first blank outside double quotes
    (``\\"`` does not close a quote).  Raises ValueError on an unterminated
    quote.
    """
    quoted = False
    pos = 0
    while pos < len(line) and (quoted or line[pos] not in _BLANKS):
        if line[pos] == "\\" and line[pos + 1 : pos + 2] == '"':
            pos += 1
        elif line[pos] == '"':
            quoted = not quoted
        pos += 1
    if quoted:
        raise ValueError("unterminated quote in options")
    return line[:pos], line[pos:].lstrip(_BLANKS)


def _first_word(text: str) -> tuple[str, str]:
    """Split off the first blank-separated word; the rest has blanks stripped."""
    match = re.match(r"[^ \t]*", text)
    assert match is not None
    return match.group(), text[match.end() :].lstrip(_BLANKS)


def _is_key_type_name(word: str) -> bool:
    return word in ALGORITHMS_FOR_KEY_TYPE or word in UNSUPPORTED_KEY_TYPES


def _parse_key_part(text: str) -> tuple[str, bytes, str]:
    """Parse "keytype base64 [comment]" into type, blob and comment."""
    keytype, rest = _first_word(text)
    if not keytype:
        raise ValueError("no key")
    if keytype in UNSUPPORTED_KEY_TYPES:
        raise ValueError(f"key type {keytype} is not supported")
    if keytype not in ALGORITHMS_FOR_KEY_TYPE:
        raise ValueError(f"unknown key type {keytype!r}")
    encoded, comment = _first_word(rest)
    if not encoded:
        raise ValueError("missing key data")
    try:
        blob = binascii.a2b_base64(encoded.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("bad base64 key data") from exc
    try:
        embedded = Reader(blob).name("key type")
    except ValueError as exc:
        raise ValueError("bad key blob") from exc
    if embedded != keytype:
        raise ValueError(f"key type mismatch: line says {keytype}, key is {embedded}")
    try:
        _load_public_key(blob)
    except Exception as exc:  # paramiko and cryptography raise various types
        raise ValueError(f"bad key: {exc}") from exc
    return keytype, blob, comment.rstrip(_BLANKS)


def parse_authorized_line(line: str, lineno: int) -> AuthorizedKey | None:
    """Parse one authorized_keys line; None for blank lines and comments.

    Raises ValueError (the reason, without the line number) for a line that
    must be ignored.
    """
    line = line.rstrip("\r").lstrip(_BLANKS)
    if not line or line.startswith("#"):
        return None
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("not valid UTF-8") from exc
    options: tuple[KeyOption, ...] = ()
    first, _ = _first_word(line)
    if not _is_key_type_name(first):
        options_text, line = _split_options(line)
        options = parse_key_options(options_text)
    keytype, blob, comment = _parse_key_part(line)
    return AuthorizedKey(keytype, blob, comment, options, lineno)


def parse_authorized_keys(text: str) -> tuple[list[AuthorizedKey], list[str]]:
    """Parse an authorized_keys file's text.

    Returns the valid keys in file order and one human-readable problem per
    invalid line ("line 3: unknown key option 'foo'").  Lines are split on
    "\\n" only, so line numbers match what an editor shows.  Text decoded
    with errors="surrogateescape" is welcome: lines with undecodable bytes
    are reported and skipped.
    """
    keys: list[AuthorizedKey] = []
    problems: list[str] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        try:
            key = parse_authorized_line(line, lineno)
        except ValueError as exc:
            problems.append(f"line {lineno}: {exc}")
            continue
        if key is not None:
            keys.append(key)
    return keys, problems


# ---------------------------------------------------------------------------
# AuthorizedKeysFile templates
# ---------------------------------------------------------------------------


def split_authorized_keys_files(spec: str = DEFAULT_AUTHORIZED_KEYS_FILES) -> list[str]:
    """The templates of an AuthorizedKeysFile setting (a blank-separated list).

    The word "none" (any case) stands for no file and is dropped.
    """
    return [word for word in spec.split() if word.lower() != "none"]


def expand_authorized_keys_path(template: str, pw: pwd.struct_passwd) -> str:
    """Expand %h (home), %u (user name), %U (numeric uid) and %% in a template.

    A result that is not absolute is taken relative to the home directory.
    Raises ValueError for any other %-escape or a lone trailing %.
    """
    values = {"h": pw.pw_dir, "u": pw.pw_name, "U": str(pw.pw_uid), "%": "%"}
    out: list[str] = []
    pos = 0
    while pos < len(template):
        char = template[pos]
        if char != "%":
            out.append(char)
            pos += 1
            continue
        escape = template[pos + 1 : pos + 2]
        if escape not in values:
            raise ValueError(f"unknown escape %{escape} in {template!r}")
        out.append(values[escape])
        pos += 2
    path = "".join(out)
    if path.startswith("/"):
        return path
    return pw.pw_dir.rstrip("/") + "/" + path


# ---------------------------------------------------------------------------
# StrictModes
# ---------------------------------------------------------------------------


def _owner_ok(st: os.stat_result, uid: int) -> bool:
    """Owned by root or the user, and writable by neither group nor others."""
    return st.st_uid in (0, uid) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _secure_path_reason(path: str, st: os.stat_result, pw: pwd.struct_passwd) -> str | None:
    """StrictModes for a file whose stat result is ``st``; None if it is safe.

    Like OpenSSH's safe_path(): the file must be a regular file owned by root
    or the user and not group- or world-writable; then each directory of its
    canonical path, walking upwards, must pass the same ownership and mode
    test.  The walk stops after the user's (canonical) home directory when it
    meets it, and otherwise goes on to "/": a file outside the home
    directory has its whole path checked.
    """
    try:
        current = os.path.realpath(path, strict=True)
    except OSError as exc:
        return f"realpath {path} failed: {exc.strerror}"
    try:
        home: str | None = os.path.realpath(pw.pw_dir, strict=True)
    except OSError:
        home = None
    if not stat.S_ISREG(st.st_mode):
        return f"{current} is not a regular file"
    if not _owner_ok(st, pw.pw_uid):
        return f"bad ownership or modes for file {current}"
    while True:
        current = os.path.dirname(current)
        try:
            dir_st = os.stat(current)
        except OSError:
            dir_st = None
        if dir_st is None or not _owner_ok(dir_st, pw.pw_uid):
            return f"bad ownership or modes for directory {current}"
        if current == home or current == "/":
            return None


def check_secure_path(path: str, pw: pwd.struct_passwd, strict: bool) -> str | None:
    """StrictModes check of ``path`` for user ``pw``: a reason to refuse, or None.

    With ``strict`` false nothing is checked.  The reasons read like
    OpenSSH's: "bad ownership or modes for file /home/x/.ssh/authorized_keys",
    "bad ownership or modes for directory /home/x/.ssh".  ``read_authorized_keys``
    does the same check on the file it actually opened (fstat) instead.
    """
    if not strict:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat file {path}: {exc.strerror}"
    return _secure_path_reason(path, st, pw)


# ---------------------------------------------------------------------------
# Reading with the user's rights
# ---------------------------------------------------------------------------


def _fatal(message: str) -> None:
    """Die at once, as OpenSSH's fatal() does: the monitor's state is unknown."""
    try:
        os.write(2, f"privsep-sshd: fatal: {message}\n".encode(errors="replace"))
    finally:
        os._exit(255)


@contextlib.contextmanager
def user_rights(pw: pwd.struct_passwd) -> Iterator[None]:
    """Run the body with the user's effective uid, gid and groups.

    Why not fork a child that drops privileges for good and pipes the text
    back?  It would be more isolated, but a fork of a large Python process
    costs milliseconds per login and the design asks for fast logins.  The
    monitor is single-threaded and the body only opens, stats and reads
    files, so switching the *effective* ids, as OpenSSH's
    temporarily_use_uid() does, is both enough and cheap: the real and saved
    uid stay 0, so root comes back in the ``finally``.

    * Not root: nothing to switch (OpenSSH does the same); the body runs with
      the current rights.
    * More than one Python thread: refused with RuntimeError, because a
      seteuid applies to every thread of the process.
    * Failing to become root again: fatal (exit 255), never a monitor left
      running with the user's ids.
    """
    if os.geteuid() != 0:
        yield
        return
    if threading.active_count() != 1:
        raise RuntimeError("user_rights needs a single-threaded monitor")
    saved_egid = os.getegid()
    saved_groups = os.getgroups()
    user_groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    try:
        os.setgroups(user_groups)
        os.setegid(pw.pw_gid)
        os.seteuid(pw.pw_uid)
        yield
    finally:
        try:
            os.seteuid(0)
            os.setegid(saved_egid)
            os.setgroups(saved_groups)
        except OSError as exc:
            _fatal(f"cannot restore root privileges: {exc}")
        if (
            os.geteuid() != 0
            or os.getegid() != saved_egid
            or sorted(os.getgroups()) != sorted(saved_groups)
        ):
            _fatal("root privileges not restored")


def _read_limited(fd: int, limit: int) -> tuple[bytes, bool]:
    """Read up to ``limit`` bytes; the flag says whether more was there."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, limit + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def _read_keys_file(
    path: str, pw: pwd.struct_passwd, strict_modes: bool
) -> tuple[bytes | None, list[str]]:
    """Open and read one authorized_keys file (call with the user's rights).

    Returns the bytes, or None when there is nothing to use, and problems.
    A missing file is not a problem.  The file is opened non-blocking (a
    FIFO must not hang the monitor), must be a regular file, and with
    ``strict_modes`` passes StrictModes on the descriptor's own fstat.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None, []
    except OSError as exc:
        return None, [
            f"Could not open user '{pw.pw_name}' authorized keys '{path}': "
            f"{exc.strerror}"
        ]
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, [
                f"User '{pw.pw_name}' authorized keys '{path}' is not a regular file"
            ]
        if strict_modes:
            reason = _secure_path_reason(path, st, pw)
            if reason:
                return None, [reason]
        data, truncated = _read_limited(fd, MAX_AUTHORIZED_KEYS_BYTES)
    except OSError as exc:
        return None, [f"Could not read '{path}': {exc.strerror}"]
    finally:
        os.close(fd)
    if not truncated:
        return data, []
    # Keep whole lines only: a cut line must not become a different key.
    data = data[: data.rfind(b"\n") + 1]
    return data, [
        f"{path}: longer than {MAX_AUTHORIZED_KEYS_BYTES} bytes, the rest is ignored"
    ]


def read_authorized_keys(
    pw: pwd.struct_passwd, templates: Sequence[str], strict_modes: bool
) -> tuple[list[AuthorizedKey], list[str]]:
    """Read the user's authorized_keys files with the user's rights.

    ``templates`` are AuthorizedKeysFile entries (see
    split_authorized_keys_files), expanded for ``pw``.  Files are opened
    while the monitor's effective ids are the user's (user_rights), so a
    file the user cannot read yields nothing, even to a root monitor.  At
    most MAX_AUTHORIZED_KEYS_BYTES are read from each.  Returns the keys of
    all files in order (each with its ``source``) and the problems to log.
    A StrictModes refusal is the bare reason ("bad ownership or modes for
    directory /home/x/.ssh"): OpenSSH logs it as "Authentication refused: "
    followed by the reason.
    """
    paths: list[str] = []
    problems: list[str] = []
    for template in templates:
        if template.lower() == "none":
            continue
        try:
            paths.append(expand_authorized_keys_path(template, pw))
        except ValueError as exc:
            problems.append(str(exc))
    contents: list[tuple[str, bytes]] = []
    with user_rights(pw):
        for path in paths:
            data, file_problems = _read_keys_file(path, pw, strict_modes)
            problems.extend(file_problems)
            if data is not None:
                contents.append((path, data))
    keys: list[AuthorizedKey] = []
    for path, data in contents:
        file_keys, file_problems = parse_authorized_keys(
            data.decode("utf-8", errors="surrogateescape")
        )
        keys.extend(dataclasses.replace(key, source=path) for key in file_keys)
        problems.extend(f"{path}: {problem}" for problem in file_problems)
    return keys, problems


# ---------------------------------------------------------------------------
# Matching and verifying
# ---------------------------------------------------------------------------


def algorithm_fits_key(algorithm: str, keytype: str) -> bool:
    """Whether a signature algorithm may be used with a key of ``keytype``.

    RSA keys sign with rsa-sha2-256 or rsa-sha2-512 only; the SHA-1
    "ssh-rsa" algorithm is refused.  Other types sign under their own name.
    """
    return algorithm in ALGORITHMS_FOR_KEY_TYPE.get(keytype, ())


def find_key(
    keys: Sequence[AuthorizedKey], algorithm: str, blob: bytes
) -> AuthorizedKey | None:
    """The first authorized key whose blob is exactly ``blob``, or None.

    None as well when ``algorithm`` does not fit the key's type.  A line
    marked cert-authority names a CA, not a login key, so (as in OpenSSH)
    it never matches a plain key.  Options such as from= and expiry-time
    are left to the caller, which knows the client address and the time.
    """
    for key in keys:
        if key.blob != blob or key.option("cert-authority") is not None:
            continue
        return key if algorithm_fits_key(algorithm, key.keytype) else None
    return None


def _signature_shape_ok(key: paramiko.PKey, keytype: str, sig: bytes) -> bool:
    """Check the inner signature encoding paramiko would read leniently."""
    if keytype == "ssh-ed25519":
        return len(sig) == 64
    if keytype == "ssh-rsa":
        return 0 < len(sig) <= (key.get_bits() + 7) // 8
    r = Reader(sig)  # ECDSA: mpint r, mpint s, nothing else
    r_value, s_value = r.mpint(), r.mpint()
    r.end()
    return r_value > 0 and s_value > 0


def verify_userauth_signature(
    algorithm: str, keyblob: bytes, data: bytes, signature: bytes
) -> bool:
    """Verify a publickey signature over ``data``; never raises.

    ``signature`` is the SSH signature blob (string algorithm, string raw
    signature, nothing after).  Its algorithm must equal ``algorithm``,
    which must fit the key type of ``keyblob`` (so plain "ssh-rsa" is
    refused).  The key is loaded from ``keyblob`` with paramiko and verifies
    the signature.  Anything malformed gives False.
    """
    try:
        r = Reader(signature)
        sig_algorithm = r.name()
        raw = r.string()
        r.end()
        if sig_algorithm != algorithm:
            return False
        keytype = public_blob_type(keyblob)
        if not algorithm_fits_key(algorithm, keytype):
            return False
        key = _load_public_key(keyblob)
        if not _signature_shape_ok(key, keytype, raw):
            return False
        return bool(key.verify_ssh_sig(data, paramiko.Message(signature)))
    except Exception:  # any parsing or crypto error means "not verified"
        return False


# ---------------------------------------------------------------------------
# Log helpers
# ---------------------------------------------------------------------------


def fingerprint(blob: bytes) -> str:
    """OpenSSH's default fingerprint: "SHA256:" and unpadded base64 of SHA-256."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def key_label(keytype: str) -> str:
    """The key type as OpenSSH's log lines name it: "ED25519", "RSA", "ECDSA".

    Signature algorithm names work too (rsa-sha2-512 gives "RSA");
    certificates get a "-CERT" suffix; anything else is "unknown".
    """
    suffix = "-cert-v01@openssh.com"
    if keytype.endswith(suffix):
        base = key_label(keytype[: -len(suffix)])
        return "unknown" if base == "unknown" else base + "-CERT"
    return _KEY_LABELS.get(keytype, "unknown")


__all__ = [
    "ALGORITHMS_FOR_KEY_TYPE",
    "AuthorizedKey",
    "DEFAULT_AUTHORIZED_KEYS_FILES",
    "FLAG_OPTIONS",
    "KeyOption",
    "MAX_AUTHORIZED_KEYS_BYTES",
    "SSH_MSG_USERAUTH_REQUEST",
    "SignedUserauth",
    "UNSUPPORTED_KEY_TYPES",
    "VALUE_OPTIONS",
    "algorithm_fits_key",
    "check_secure_path",
    "expand_authorized_keys_path",
    "find_key",
    "fingerprint",
    "key_label",
    "parse_authorized_keys",
    "parse_authorized_line",
    "parse_key_options",
    "parse_signed_userauth",
    "public_blob_type",
    "read_authorized_keys",
    "split_authorized_keys_files",
    "user_rights",
    "verify_userauth_signature",
]


def key_usable_from(key: AuthorizedKey, addr: str, now: datetime.datetime | None = None) -> bool:
    """The key's from= and expiry-time= options, checked for a login from ``addr``."""
    from privsep.servconf import match_address  # servconf is the one pattern matcher

    origin = key.option("from")
    if origin is not None and origin.value is not None and not match_address(addr, origin.value):
        return False
    expiry = key.option("expiry-time")
    if expiry is not None and expiry.value:
        text = expiry.value
        layout = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}.get(len(text.rstrip("Z")))
        if layout is None:
            return False
        when = datetime.datetime.strptime(text.rstrip("Z"), layout)
        if text.endswith("Z"):
            when = when.replace(tzinfo=datetime.timezone.utc)
        else:
            when = when.astimezone()
        if (now or datetime.datetime.now(datetime.timezone.utc)) >= when:
            return False
    return True
