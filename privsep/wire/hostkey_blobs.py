"""Host key blobs and names, pure: shared by the monitor (which signs) and the
children (which offer the public halves and ask for signatures).

* ``algorithms_for_type``: the host-key algorithm names a key type answers to.
* ``blob_key_type``: the key type a public key blob names.
* hostkeys-prove-00@openssh.com (UpdateHostKeys): the blob sshd signs to
  prove it holds a host key, built by the session process and recognised by
  the monitor before it signs anything after authentication.
"""

from __future__ import annotations

from dataclasses import dataclass

from privsep.wire.facts import RSA_ALGORITHMS
from privsep.wire.sshbuf import Reader, Writer


@dataclass(frozen=True)
class HostKey:
    """A host key as the listener and the monitor know it: the file its
    private half stays in, and its public blob.  Only a signer process
    (privsep/signer/) ever reads the file."""

    path: str
    blob: bytes
    #: the HostCertificate for this key (a -cert-v01 blob), if any
    certificate: bytes = b""

    @property
    def key_type(self) -> str:
        return blob_key_type(self.blob)


def algorithms_for_type(key_type: str) -> tuple[str, ...]:
    """The host-key algorithm names a key of ``key_type`` answers to in KEXINIT."""
    return RSA_ALGORITHMS if key_type == "ssh-rsa" else (key_type,)


HOSTKEYS_PROVE = "hostkeys-prove-00@openssh.com"


def hostkeys_prove_data(session_id: bytes, keyblob: bytes) -> bytes:
    """What sshd signs to prove it holds a host key: the request name, the
    session id and the key, each an SSH string."""
    return bytes(Writer().text(HOSTKEYS_PROVE).string(session_id).string(keyblob))


def parse_hostkeys_prove(data: bytes) -> tuple[bytes, bytes]:
    """(session id, key blob) of a hostkeys-prove blob; ValueError for anything else.

    Pure: the monitor uses it to decide whether a post-auth signature request
    is such a proof, and nothing more."""
    r = Reader(data, what="hostkeys-prove blob")
    name, session_id, keyblob = r.string(), r.string(), r.string()
    if r.remaining():
        raise ValueError("trailing bytes after hostkeys-prove blob")
    if name != HOSTKEYS_PROVE.encode():
        raise ValueError("not a hostkeys-prove blob")
    if not session_id or not keyblob:
        raise ValueError("empty session id or key in hostkeys-prove blob")
    return session_id, keyblob


def blob_key_type(keyblob: bytes) -> str:
    """The key type named at the start of a public key blob ('' if malformed)."""
    try:
        return Reader(keyblob).string().decode("ascii")
    except ValueError:  # truncated, or not ASCII (UnicodeDecodeError)
        return ""


# --- the signer's start-up report: each host key's public blob, or why not ---------

#: How a BadPermissions reads in the signer's start-up report.
BAD_PERMISSIONS = "bad permissions"


def unprotected_key_warning(path: str, report: str) -> list[str]:
    """sshd's lines for a BadPermissions ``report`` ("bad permissions 644"),
    as authfile.c writes them before it ignores the key."""
    border = "@" * 59
    return [border, "@         WARNING: UNPROTECTED PRIVATE KEY FILE!          @", border,
            f"Permissions 0{report.split()[-1]} for '{path}' are too open.",
            "It is required that your private key files are NOT accessible by others.",
            "This private key will be ignored."]


def encode_key_checks(results: list[tuple[str, bool, bytes, str]]) -> bytes:
    """(path, loaded, public blob or error text, why the private file did
    not load though the key did: "" or the error text) for each key."""
    out = Writer().uint32(len(results))
    for path, ok, payload, note in results:
        out.text(path).boolean(ok).string(payload).text(note)
    return bytes(out)


def decode_key_checks(data: bytes) -> list[tuple[str, bool, bytes, str]]:
    """The inverse of encode_key_checks; ValueError for anything malformed."""
    r = Reader(data, what="host key report")
    results = [(r.name("path"), r.boolean(), r.string(), r.text())
               for _ in range(r.uint32())]
    r.end()
    return results
