"""Hostbased authentication, monitor side (RFC 4252 section 9): the checks
of sshd 9.2's auth2-hostbased.c, auth-rhosts.c and the host-file half of
auth.c and hostfile.c, in their order and with their log lines.

A client host proves itself with its host key (signed by its setuid
ssh-keysign); the server believes the client's user name because that host
is trusted.  So, in turn: the algorithm and the key blob; the user is valid;
RevokedKeys; the client's host name against the peer's (reverse-resolved
with UseDNS) unless HostbasedUsesNameFromPacketOnly; /etc/hosts.equiv and
/etc/ssh/shosts.equiv (not for root), then ~/.shosts and ~/.rhosts (unless
IgnoreRhosts; StrictModes); the key in /etc/ssh/ssh_known_hosts and
~/.ssh/known_hosts (unless IgnoreUserKnownHosts), or else in their "2"
files; and last the signature, over the data rebuilt here from this
connection's session id and user.  The user's files are read with the
user's rights (common/ids.user_rights), the system ones as root.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import enum
import functools
import hashlib
import hmac
import logging
import os
import pwd
import stat
from dataclasses import dataclass

from privsep.common.ids import user_rights
from privsep.common.log import verbose
from privsep.config.match import match_hostname
from privsep.config.servconf import ServerOptions
from privsep.monitor import certificates, pubkey
from privsep.monitor.authorized_keys import read_limited
from privsep.wire import certs, messages as wire
from privsep.wire.sshbuf import Reader
from privsep.wire.userauth import hostbased_signed_data

log = logging.getLogger("privsep.monitor")

#: The system-wide rhosts files, consulted for every user but root.
SYSTEM_EQUIV_FILES = ("/etc/hosts.equiv", "/etc/ssh/shosts.equiv")
#: The user's own, in their home directory, in this order.
USER_RHOSTS_FILES = (".shosts", ".rhosts")
#: Host-key files: the first pair, and the "2" pair tried only when the
#: first pair does not know the host's key at all (sshd's HOST_NEW).
KNOWN_HOSTS_FILES = (("/etc/ssh/ssh_known_hosts", ".ssh/known_hosts"),
                     ("/etc/ssh/ssh_known_hosts2", ".ssh/known_hosts2"))
#: At most this much of an rhosts or known_hosts file is read.
MAX_FILE_BYTES = 1024 * 1024
#: sshd reads rhosts lines with a 1024-byte buffer and 1023-byte fields.
MAX_RHOSTS_FIELD = 1023


class HostStatus(enum.Enum):
    """hostfile.c's answer for a host and a key."""

    OK = "the key is the host's"
    NEW = "no key of the host"
    CHANGED = "the host has another key"
    REVOKED = "the key is marked @revoked"


@dataclass(frozen=True)
class Outcome:
    """What the checks found: ``verified`` when every check and the
    signature passed; ``detail`` is what follows "ssh2" in the Accepted or
    Failed line ("" when sshd logs no such line at all: the request was
    refused before the monitor would have been asked)."""

    verified: bool
    detail: str = ""


# --- rhosts files (auth-rhosts.c) ---------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6", use_errno=True)


def _innetgr(netgroup: str, host: str | None, user: str | None) -> bool:
    """glibc's innetgr(3): is (host, user) in the NIS/files netgroup?"""
    libc = _libc()
    enc = (lambda s: None if s is None else s.encode("utf-8", "surrogateescape"))
    return bool(libc.innetgr(enc(netgroup), enc(host), enc(user), None))


def rhosts_entry_allows(line: str, hostname: str, ipaddr: str, client_user: str,
                        server_user: str) -> bool | None:
    """One line of an rhosts-style file: True (allow), False (a negated
    entry matched: deny) or None (the line does not apply).  "host [user]",
    either with a leading '-' (negate) or '+', '@' for a netgroup; a host
    alone stands for the server user's own name."""
    words = line.split()
    if not words or words[0].startswith("#") or line.lstrip(" \t").startswith("NO_PLUS"):
        return None
    if len(words) > 2 or any(len(w) > MAX_RHOSTS_FIELD for w in words):
        return None  # sshd: "Found garbage"
    host, user = words[0], words[1] if len(words) == 2 else server_user
    negated = False
    if host[0] in "-+":
        negated, host = host[0] == "-", host[1:]
    if user[0] in "-+":
        negated, user = negated or user[0] == "-", user[1:]
    if not host or not user:
        return None  # a bare '+' or '-': wild entries are ignored
    if host.startswith("@"):
        if not (_innetgr(host[1:], hostname, None) or _innetgr(host[1:], ipaddr, None)):
            return None
    elif host.lower() != hostname.lower() and host != ipaddr:
        return None
    if user.startswith("@"):
        if not _innetgr(user[1:], None, client_user):
            return None
    elif user != client_user:
        return None
    return not negated


def rhosts_file_allows(path: str, hostname: str, ipaddr: str, client_user: str,
                       server_user: str) -> bool:
    """check_rhosts_file: whether ``path`` lets ``client_user`` from that
    host in as ``server_user``; the first entry that applies decides.  An
    unreadable file allows nothing, and a FIFO cannot hang the monitor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.info("User %s hosts file %s is not a regular file", server_user, path)
            return False
        data, _ = read_limited(fd, MAX_FILE_BYTES)
    except OSError:
        return False
    finally:
        os.close(fd)
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        verdict = rhosts_entry_allows(line, hostname, ipaddr, client_user, server_user)
        if verdict is not None:
            return verdict
    return False


def _bad_modes(st: os.stat_result, uid: int) -> bool:
    """StrictModes: owned by someone other than root and the user, or
    writable by group or others."""
    return (st.st_uid not in (0, uid)) or bool(st.st_mode & 0o022)


def auth_rhosts2(options: ServerOptions, pw: pwd.struct_passwd, client_user: str,
                 hostname: str, ipaddr: str) -> bool:
    """auth_rhosts2: the system files (not for root), then the user's own
    (unless IgnoreRhosts), each user file and the home directory under
    StrictModes."""
    home = pw.pw_dir.rstrip("/") or "/"
    with user_rights(pw):
        user_files = [f"{home}/{name}" for name in USER_RHOSTS_FILES]
        any_user_file = any(os.path.exists(path) for path in user_files)
    if not any_user_file and not any(os.path.exists(p) for p in SYSTEM_EQUIV_FILES):
        return False  # nothing to consult: no name lookups either
    if pw.pw_uid != 0:
        for path in SYSTEM_EQUIV_FILES:
            if rhosts_file_allows(path, hostname, ipaddr, client_user, pw.pw_name):
                return True
    try:
        home_st = os.stat(home)
    except OSError:
        log.info("Rhosts authentication refused for %s: no home directory %s", pw.pw_name,
                 pw.pw_dir)
        return False
    if options.strict_modes and _bad_modes(home_st, pw.pw_uid):
        log.info("Rhosts authentication refused for %s: bad ownership or modes for home "
                 "directory.", pw.pw_name)
        return False
    with user_rights(pw):
        for name, path in zip(USER_RHOSTS_FILES, user_files):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if options.strict_modes and _bad_modes(st, pw.pw_uid):
                log.info("Rhosts authentication refused for %s: bad modes for %s",
                         pw.pw_name, path)
                continue
            if options.ignore_rhosts == "yes" or (
                    options.ignore_rhosts == "shosts-only" and name != ".shosts"):
                continue
            if rhosts_file_allows(path, hostname, ipaddr, client_user, pw.pw_name):
                return True
    return False


# --- known_hosts files (hostfile.c) ---------------------------------------------------


@dataclass(frozen=True)
class HostKeyEntry:
    """A known_hosts line that names the host: its marker ("",
    "@revoked" or "@cert-authority") and its key blob."""

    marker: str
    blob: bytes
    where: str


def host_matches(host: str, names: str) -> bool:
    """A known_hosts host field against ``host``: a hashed name
    (|1|base64 salt|base64 HMAC-SHA1 of the name), or a pattern list."""
    if names.startswith("|"):
        parts = names.split("|")
        if len(parts) != 4 or parts[1] != "1":
            return False
        try:
            salt = base64.b64decode(parts[2], validate=True)
            digest = base64.b64decode(parts[3], validate=True)
        except (binascii.Error, ValueError):
            return False
        mine = hmac.new(salt, host.encode("utf-8", "surrogateescape"), hashlib.sha1).digest()
        return len(salt) == 20 and hmac.compare_digest(mine, digest)
    return match_hostname(host, names) == 1


def parse_known_hosts(text: str, host: str, source: str) -> list[HostKeyEntry]:
    """The entries of a known_hosts file that name ``host``; malformed lines
    are skipped, as sshd skips them."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        marker = ""
        if words[0].startswith("@"):
            marker, words = words[0], words[1:]
            if marker not in ("@revoked", "@cert-authority"):
                continue
        if len(words) < 3 or not host_matches(host, words[0]):
            continue
        try:
            blob = binascii.a2b_base64(words[2].encode("ascii"), strict_mode=True)
            if Reader(blob).name("key type") != words[1]:
                continue
        except (UnicodeEncodeError, binascii.Error, ValueError):
            continue
        entries.append(HostKeyEntry(marker, blob, f"{source}:{lineno}"))
    return entries


def _read_text(path: str) -> str:
    """A whole host file ("" if missing or unreadable; a FIFO cannot hang us)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        data, _ = read_limited(fd, MAX_FILE_BYTES)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return data.decode("utf-8", "surrogateescape")


def _plain_blob(blob: bytes) -> bytes:
    """The plain public key of a certificate blob; any other blob itself.
    (sshkey_equal_public compares keys without their certificates.)"""
    try:
        if certs.is_cert_type(Reader(blob).name()):
            return certs.parse_certificate(blob).key_blob
    except ValueError:
        pass
    return blob


def key_status(entries: list[HostKeyEntry], keyblob: bytes) -> HostStatus:
    """check_hostkeys_by_key_or_type.  A plain key: OK if a plain line holds
    it, CHANGED if plain lines hold only other keys, NEW if none.  A
    certificate: OK if a @cert-authority line holds its CA, else NEW.
    REVOKED over all of these if a @revoked line holds the key (or, for a
    certificate, the certified key or its CA)."""
    cert = certs.parse_certificate(keyblob) if certs.is_cert_type(
        pubkey.public_blob_type(keyblob)) else None
    wanted = "@cert-authority" if cert is not None else ""
    status = HostStatus.NEW
    for entry in entries:
        if entry.marker != wanted:
            continue
        if cert is not None:
            if _plain_blob(entry.blob) == _plain_blob(cert.signature_key):
                status = HostStatus.OK
                break
        elif entry.blob == keyblob:
            status = HostStatus.OK
            break
        else:
            status = HostStatus.CHANGED
    revoked = {_plain_blob(keyblob)}
    if cert is not None:
        revoked.add(_plain_blob(cert.signature_key))
    if any(e.marker == "@revoked" and _plain_blob(e.blob) in revoked for e in entries):
        status = HostStatus.REVOKED
    return status


def check_key_in_hostfiles(options: ServerOptions, pw: pwd.struct_passwd, keyblob: bytes,
                           host: str, system_file: str, user_file: str | None) -> HostStatus:
    """check_key_in_hostfiles: the system file as root, the user's with the
    user's rights, unless StrictModes finds it badly owned or writable."""
    entries = parse_known_hosts(_read_text(system_file), host, system_file)
    if user_file is not None:
        path = f"{pw.pw_dir.rstrip('/')}/{user_file}"
        try:
            st: os.stat_result | None = os.stat(path)
        except OSError:
            st = None
        if options.strict_modes and st is not None and _bad_modes(st, pw.pw_uid):
            log.info("Authentication refused for %s: bad owner or modes for %s", pw.pw_name,
                     path)
        else:
            with user_rights(pw):
                entries += parse_known_hosts(_read_text(path), host, path)
    status = key_status(entries, keyblob)
    if status is HostStatus.REVOKED:
        log.error("WARNING: revoked key for %s attempted authentication", host)
    return status


# --- the whole check ------------------------------------------------------------------


def hostbased_key_allowed(options: ServerOptions, pw: pwd.struct_passwd, client_user: str,
                          client_host: str, keyblob: bytes, ipaddr: str,
                          resolved: str) -> bool:
    """sshd's hostbased_key_allowed after its RevokedKeys check (see
    ``check``): the rhosts files for the name the client sent
    (HostbasedUsesNameFromPacketOnly) or for the peer's own name, a
    certificate's type, validity and principal (that name), then the key,
    or the certificate's CA, among that host's known keys."""
    chost = client_host[:-1] if client_host.endswith(".") else client_host
    if options.hostbased_uses_name_from_packet_only:
        if not auth_rhosts2(options, pw, client_user, chost, chost):
            return False
        lookup = chost
    else:
        if resolved.lower() != chost.lower():
            log.info("userauth_hostbased mismatch: client sends %s, but we resolve %s to %s",
                     chost, ipaddr, resolved)
        if not auth_rhosts2(options, pw, client_user, resolved, ipaddr):
            return False
        lookup = resolved
    cert = certs.parse_certificate(keyblob) if certs.is_cert_type(
        pubkey.public_blob_type(keyblob)) else None
    if cert is not None:
        try:
            certificates.check_authority(cert, False, lookup, want_host=True)
        except certificates.Refused as exc:
            log.error("%s", exc)
            return False
    status = HostStatus.NEW
    for system_file, user_file in KNOWN_HOSTS_FILES:
        status = check_key_in_hostfiles(options, pw, keyblob, lookup, system_file,
                                        None if options.ignore_user_known_hosts else user_file)
        if status is not HostStatus.NEW:
            break
    if status is HostStatus.OK and cert is not None:
        verbose(log, 'Accepted certificate ID "%s" signed by %s CA %s from %s@%s',
                cert.key_id, pubkey.key_label(pubkey.public_blob_type(cert.signature_key)),
                pubkey.fingerprint(cert.signature_key), client_user, lookup)
    elif status is HostStatus.OK:
        verbose(log, "Accepted %s public key %s from %s@%s",
                pubkey.key_label(pubkey.public_blob_type(keyblob)), pubkey.fingerprint(keyblob),
                client_user, lookup)
    return status is HostStatus.OK


def _request_refusal(options: ServerOptions, req: wire.HostbasedRequest
                     ) -> tuple[int, str] | None:
    """The checks sshd's net-child makes before it asks its monitor, in its
    order: the level and line (without the "[preauth]" the monitor adds
    here) of the first that fails, or None."""
    keytype = pubkey.key_type_of_algorithm(req.algorithm)
    if keytype is None:
        return logging.INFO, ("userauth_hostbased: unsupported public key algorithm: "
                              f"{req.algorithm}")
    try:
        blob_type = pubkey.check_public_key(req.keyblob)
        cert = certs.parse_certificate(req.keyblob) if certs.is_cert_type(blob_type) else None
    except Exception:  # paramiko's and cryptography's errors vary; all mean "no"
        return logging.ERROR, "userauth_hostbased: key_from_blob: invalid format"
    if cert is not None and certificates.ca_signature_bad(cert):
        return logging.ERROR, "userauth_hostbased: key_from_blob: incorrect signature"
    if blob_type != keytype:
        return logging.ERROR, ("userauth_hostbased: type mismatch for decoded key "
                               f"(received {blob_type}, expected {keytype})")
    if req.algorithm not in options.hostbased_accepted_algorithms:
        return logging.INFO, (f"userauth_hostbased: signature algorithm {req.algorithm} not "
                              "in HostbasedAcceptedAlgorithms")
    if cert is not None and certificates.ca_algorithm_refused(
            cert, options.ca_signature_algorithms):
        return logging.INFO, ("userauth_hostbased: certificate signature algorithm "
                              f"{cert.signature_type}: signature algorithm not supported")
    return None


def check(options: ServerOptions, pw: pwd.struct_passwd | None, user: str,
          session_id: bytes, ipaddr: str, resolved: str,
          req: wire.HostbasedRequest) -> Outcome:
    """The whole of userauth_hostbased for one request: the request, the
    user, the host and key, then the signature over the data sshd would
    rebuild (this connection's session id and ``user``, without a
    ":style")."""
    if not options.hostbased_authentication:
        return Outcome(False)
    refusal = _request_refusal(options, req)
    if refusal:
        level, line = refusal
        log.log(level, "%s [preauth]", line)
        return Outcome(False)
    if pw is None:
        return Outcome(False)  # sshd's net-child gives up without asking
    detail = certificates.key_detail(req.keyblob)
    refusal = certificates.revocation_refusal(options.revoked_keys, req.keyblob)
    if refusal:
        # sshd strips the client host's trailing dot in place, but only
        # after this check: its Failed line then shows the name as sent.
        log.error("%s", refusal)
        return Outcome(False, f'{detail}, client user "{req.client_user[:100]}", '
                              f'client host "{req.client_host[:100]}"')
    chost = req.client_host[:-1] if req.client_host.endswith(".") else req.client_host
    if not hostbased_key_allowed(options, pw, req.client_user, req.client_host, req.keyblob,
                                 ipaddr, resolved):
        return Outcome(False, f'{detail}, client user "{req.client_user[:100]}", '
                              f'client host "{chost[:100]}"')
    data = hostbased_signed_data(session_id, user, req.algorithm, req.keyblob,
                                 req.client_host, req.client_user)
    verified = pubkey.verify_userauth(req.algorithm, req.keyblob, data, req.signature)
    return Outcome(verified is not None, detail)
