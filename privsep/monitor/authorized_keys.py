"""authorized_keys, monitor side: the files named by AuthorizedKeysFile (its
%-tokens expanded), read with the user's rights (common/ids.user_rights),
StrictModes applied to what was actually opened, lines parsed strictly, and
the offered key looked up with its options.

No logging here: callers log the problems returned.
"""

from __future__ import annotations

import binascii
import dataclasses
import datetime
import os
import pwd
import re
import stat
from dataclasses import dataclass
from typing import Sequence

from privsep.common.ids import user_rights
from privsep.monitor.pubkey import (
    ALGORITHMS_FOR_KEY_TYPE, UNSUPPORTED_KEY_TYPES, algorithm_fits_key, check_public_key,
)
from privsep.config.match import match_host_and_ip
from privsep.config.percent import PercentError, percent_expand
from privsep.wire.keyoptions import BLANKS, KeyOption, key_expired, parse_key_options
from privsep.wire.sshbuf import Reader


#: OpenSSH's default AuthorizedKeysFile, a space-separated list.
DEFAULT_AUTHORIZED_KEYS_FILES = ".ssh/authorized_keys .ssh/authorized_keys2"


#: At most this much of one authorized_keys file is read.
MAX_AUTHORIZED_KEYS_BYTES = 1024 * 1024


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


#: Compiled here, at import, in the listener's image: compiled on first use,
#: it was compiled again in every monitor, whose copy of the regular
#: expression compiler's tables and objects cost pages of its own.
_FIRST_WORD = re.compile(r"[^ \t]*")


def _first_word(text: str) -> tuple[str, str]:
    """Split off the first blank-separated word; the rest has blanks stripped."""
    match = _FIRST_WORD.match(text)
    assert match is not None
    return match.group(), text[match.end() :].lstrip(BLANKS)


def _split_options(line: str) -> tuple[str, str]:
    """Split a line into its options field and the rest (the key part).

    The options field ends at the first blank outside double quotes
    (``\\"`` does not close a quote).  Raises ValueError on an unterminated
    quote.
    """
    quoted = False
    pos = 0
    while pos < len(line) and (quoted or line[pos] not in BLANKS):
        if line[pos] == "\\" and line[pos + 1 : pos + 2] == '"':
            pos += 1
        elif line[pos] == '"':
            quoted = not quoted
        pos += 1
    if quoted:
        raise ValueError("unterminated quote in options")
    return line[:pos], line[pos:].lstrip(BLANKS)


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
        check_public_key(blob)
    except Exception as exc:  # cryptography raises various types
        raise ValueError(f"bad key: {exc}") from exc
    return keytype, blob, comment.rstrip(BLANKS)


def parse_authorized_line(line: str, lineno: int) -> AuthorizedKey | None:
    """Parse one authorized_keys line; None for blank lines and comments.

    Raises ValueError (the reason, without the line number) for a line that
    must be ignored.
    """
    line = line.rstrip("\r").lstrip(BLANKS)
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
    values = {"h": pw.pw_dir, "u": pw.pw_name, "U": str(pw.pw_uid)}
    try:
        path = percent_expand(template, values)
    except PercentError as exc:
        raise ValueError(f"unknown escape %{exc.key} in {template!r}") from None
    if path.startswith("/"):
        return path
    return pw.pw_dir.rstrip("/") + "/" + path


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


def read_limited(fd: int, limit: int) -> tuple[bytes, bool]:
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


def read_keys_file(
    path: str, pw: pwd.struct_passwd, strict_modes: bool, file_type: str = "authorized keys"
) -> tuple[bytes | None, list[str]]:
    """Open and read one authorized_keys (or ``file_type``: "authorized
    principals") file; call with the user's rights.

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
            f"Could not open user '{pw.pw_name}' {file_type} '{path}': "
            f"{exc.strerror}"
        ]
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, [
                f"User '{pw.pw_name}' {file_type} '{path}' is not a regular file"
            ]
        if strict_modes:
            reason = _secure_path_reason(path, st, pw)
            if reason:
                return None, [reason]
        data, truncated = read_limited(fd, MAX_AUTHORIZED_KEYS_BYTES)
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
            data, file_problems = read_keys_file(path, pw, strict_modes)
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


def key_refusal(key: AuthorizedKey, user: str, addr: str,
                now: datetime.datetime | None = None, host: str | None = None) -> str | None:
    """Why sshd's auth_authorise_keyopts() refuses the key for a login from
    ``addr`` (``host``: its name, or the address itself as with UseDNS no),
    in sshd's words, or None.  The expiry is checked first; with several
    expiry-time= options the earliest counts; a malformed from= list refuses."""
    loc = f"{key.source}:{key.lineno}"
    for option in key.options:
        if option.name == "expiry-time" and option.value and key_expired(option.value, now):
            return f"{loc}: entry expired"
    origin = key.option("from")
    if origin is not None and origin.value is not None and \
            match_host_and_ip(host or addr, addr, origin.value) != 1:
        return (f"{loc}: Authentication tried for {user} with correct key but not from a "
                f"permitted host (host={host or addr}, ip={addr}, required={origin.value}).")
    return None


def key_usable_from(key: AuthorizedKey, addr: str, now: datetime.datetime | None = None,
                    host: str | None = None) -> bool:
    """The key's from= and expiry-time= options, checked for a login from ``addr``."""
    return key_refusal(key, "", addr, now, host) is None
