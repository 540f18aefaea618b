"""AuthorizedKeysCommand and AuthorizedPrincipalsCommand, run by the monitor.

As sshd's auth2-pubkey.c and misc.c subprocess() do: the command runs as
its configured user (never as root unless that user is root), with stdin
/dev/null, stderr discarded and a minimal environment, only after its
program passed the checks sshd makes (an absolute path, owned by root and
writable by nobody else, in directories of which the same holds, up to /).
Its output is read like an authorized_keys file (authorized_keys.py's
parser) or returned as principal lines for the certificate check.

Two limits sshd leaves to LoginGraceTime are this daemon's own: a command
that runs longer than COMMAND_TIMEOUT seconds, or prints more than
MAX_OUTPUT bytes, is killed (its whole process group) and refused.

Logs use sshd's words ("Unsafe AuthorizedKeysCommand ...", "... failed,
status 1").
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import pwd
import selectors
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from functools import partial

from privsep.common import ids
from privsep.common.peer import Peer
from privsep.config.percent import percent_expand
from privsep.config.servconf import ServerOptions
from privsep.monitor import authorized_keys, pubkey
from privsep.wire.certs import Certificate

log = logging.getLogger("privsep.monitor")

#: Seconds a command may run before it is killed and refused.
COMMAND_TIMEOUT = 10.0
#: Bytes of output a command may print; more is refused whole.
MAX_OUTPUT = authorized_keys.MAX_AUTHORIZED_KEYS_BYTES
#: Debian's _PATH_STDPATH, the command's PATH.
STD_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


def _root_only() -> pwd.struct_passwd:
    """Whom the program's path is checked for, as sshd's safe_path() with no
    home directory: owned by root, and every directory up to "/".  Made at
    each call: a struct_passwd built in Python and kept in a module global
    makes CPython 3.11's finalization report a SystemError at exit."""
    return pwd.struct_passwd(("root", "x", 0, 0, "", "/", ""))


@dataclass(frozen=True)
class KeyCommand:
    """One of the two commands, as configured."""

    tag: str  # "AuthorizedKeysCommand" or "AuthorizedPrincipalsCommand"
    command: str  # the configured line, or "none"
    user: str  # the ...CommandUser value, or "none"


def keys_command(options: ServerOptions) -> KeyCommand:
    return KeyCommand("AuthorizedKeysCommand", options.authorized_keys_command,
                      options.authorized_keys_command_user)


def principals_command(options: ServerOptions) -> KeyCommand:
    return KeyCommand("AuthorizedPrincipalsCommand", options.authorized_principals_command,
                      options.authorized_principals_command_user)


def connection_tokens(pw: pwd.struct_passwd, peer: Peer) -> dict[str, str]:
    """%%, %C (both ends: local address and port, remote address and port),
    %D (the routing domain: none on this system), %h, %U, %u."""
    return {"%": "%", "C": f"{peer.local_addr} {peer.local_port} {peer.addr} {peer.port}",
            "D": "", "h": pw.pw_dir, "U": str(pw.pw_uid), "u": pw.pw_name}


def key_tokens(keytype: str, blob: bytes, fingerprint: str) -> dict[str, str]:
    """%t (the key's type name), %k (its blob in base64), %f (its fingerprint)."""
    return {"t": keytype, "k": base64.b64encode(blob).decode("ascii"), "f": fingerprint}


def _command_user(cmd: KeyCommand, pw: pwd.struct_passwd) -> pwd.struct_passwd | None:
    if cmd.user == "none":
        log.error("No user for %s specified, skipping", cmd.tag)
        return None
    try:
        name = percent_expand(cmd.user, {"u": pw.pw_name})
        return pwd.getpwnam(name)
    except (KeyError, ValueError):
        log.error('%sUser "%s" not found: No such user', cmd.tag, cmd.user)
        return None


def _argv(cmd: KeyCommand, tokens: dict[str, str], default_arg: str | None) -> list[str] | None:
    """The command's arguments, %-tokens expanded after the program's name."""
    try:
        words = shlex.split(cmd.command)
    except ValueError:
        log.error('%s "%s" contains invalid quotes', cmd.tag, cmd.command)
        return None
    if not words:
        log.error('%s "%s" yielded no arguments', cmd.tag, cmd.command)
        return None
    try:
        argv = words[:1] + [percent_expand(word, tokens) for word in words[1:]]
    except ValueError as exc:
        log.error("%s: percent_expand: %s", cmd.tag, exc)
        return None
    if len(argv) == 1 and default_arg is not None:
        argv.append(default_arg)  # sshd's old behaviour: the user's name
    return argv


def _program_refusal(tag: str, program: str, runas: pwd.struct_passwd) -> str | None:
    """sshd's checks on the program, made with the command user's rights."""
    if not program.startswith("/"):
        return f"{tag} path is not absolute"
    with ids.user_rights(runas):
        try:
            os.stat(program)
        except OSError as exc:
            return f'Could not stat {tag} "{program}": {exc.strerror}'
        reason = authorized_keys.check_secure_path(program, _root_only(), True)
    if reason:
        return f'Unsafe {tag} "{program}": {reason}'
    return None


def _environment(runas: pwd.struct_passwd) -> dict[str, str]:
    env = {"PATH": STD_PATH, "USER": runas.pw_name, "LOGNAME": runas.pw_name,
           "HOME": runas.pw_dir}
    if "LANG" in os.environ:
        env["LANG"] = os.environ["LANG"]
    return env


@dataclass
class _Output:
    data: bytearray = dataclasses.field(default_factory=bytearray)
    problem: str = ""


def _collect(proc: subprocess.Popen, timeout: float, limit: int) -> _Output:
    """Read the command's stdout until EOF, the limit or the deadline."""
    out = _Output()
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                out.problem = f"timed out after {timeout:g} seconds"
                return out
            chunk = os.read(fd, 65536)
            if not chunk:
                return out
            out.data += chunk
            if len(out.data) > limit:
                out.problem = f"output longer than {limit} bytes"
                return out


def run(cmd: KeyCommand, pw: pwd.struct_passwd, tokens: dict[str, str],
        default_arg: str | None = None, timeout: float = COMMAND_TIMEOUT,
        limit: int = MAX_OUTPUT) -> str | None:
    """Run ``cmd`` for user ``pw``; its output, or None (not configured,
    refused, failed, too slow, too long: each logged)."""
    if cmd.command == "none":
        return None
    runas = _command_user(cmd, pw)
    argv = _argv(cmd, tokens, default_arg) if runas is not None else None
    if runas is None or argv is None:
        return None
    text = " ".join(argv)
    refusal = _program_refusal(cmd.tag, argv[0], runas)
    if refusal:
        log.error("%s", refusal)
        return None
    as_user = partial(ids.become_user, runas) if os.geteuid() == 0 else None
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=_environment(runas),
                                close_fds=True, start_new_session=True, preexec_fn=as_user)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error('%s execve "%s": %s', cmd.tag, text, getattr(exc, "strerror", None) or exc)
        return None
    try:
        out = _collect(proc, timeout, limit)
    finally:
        assert proc.stdout is not None
        proc.stdout.close()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group it leads, and only that
            except ProcessLookupError:
                pass
        status = proc.wait()
    if out.problem:
        log.error("%s %s %s, refused", cmd.tag, text, out.problem)
        return None
    if status < 0:
        log.error("%s %s exited on signal %d", cmd.tag, text, -status)
        return None
    if status != 0:
        log.info("%s %s failed, status %d", cmd.tag, text, status)
        return None
    return bytes(out.data).decode("utf-8", errors="surrogateescape")


def authorized_keys_for(options: ServerOptions, pw: pwd.struct_passwd, peer: Peer,
                        keyblob: bytes) -> list[authorized_keys.AuthorizedKey]:
    """The keys AuthorizedKeysCommand prints for the offered key ``keyblob``,
    parsed as authorized_keys lines (options included); their ``source``
    is the command as configured, as in sshd's messages."""
    if options.authorized_keys_command == "none":
        return []
    try:
        keytype = pubkey.public_blob_type(keyblob)
    except ValueError:
        return []
    tokens = connection_tokens(pw, peer) | key_tokens(keytype, keyblob,
                                                      pubkey.fingerprint(keyblob))
    output = run(keys_command(options), pw, tokens, default_arg=pw.pw_name)
    if output is None:
        return []
    keys, problems = authorized_keys.parse_authorized_keys(output)
    source = options.authorized_keys_command
    for problem in problems:
        log.info("%s: %s", source, problem)
    return [dataclasses.replace(key, source=source) for key in keys]


def cert_tokens(cert: Certificate, blob: bytes) -> dict[str, str]:
    """The certificate's own tokens for AuthorizedPrincipalsCommand, as sshd's
    match_principals_command: %F and %K the CA key's fingerprint and base64,
    %T its type; %f, %k and %t the certificate's; %i its key id; %s its serial."""
    ca_type = pubkey.public_blob_type(cert.signature_key)
    return {"F": pubkey.fingerprint(cert.signature_key),
            "K": base64.b64encode(cert.signature_key).decode("ascii"), "T": ca_type,
            "i": cert.key_id, "s": str(cert.serial),
            **key_tokens(cert.cert_type_name, blob, pubkey.fingerprint(blob))}


def principals_lines(options: ServerOptions, pw: pwd.struct_passwd, peer: Peer,
                     cert_tokens: dict[str, str]) -> list[str] | None:
    """What AuthorizedPrincipalsCommand prints for a certificate, one
    string per line (blank lines and comments included: the caller parses
    them as authorized_principals lines); None when the command is not
    configured or was refused or failed.

    ``cert_tokens`` are the certificate's own: %F, %f, %i, %K, %k, %s, %T
    and %t, as sshd's match_principals_command defines them; the
    connection's (%%, %C, %D, %h, %U, %u) are added here."""
    output = run(principals_command(options), pw, connection_tokens(pw, peer) | cert_tokens)
    return None if output is None else output.split("\n")
