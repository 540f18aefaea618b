"""sshd's line for an algorithm negotiation that found nothing in common.

paramiko says "Incompatible ssh peer (no acceptable kex algorithm)"; sshd 9.2
says which kind of algorithm failed and what the client offered for it
(packet.c's sshpkt_vfatal with kex->failed_choice):

    Unable to negotiate with 127.0.0.1 port 40000: no matching key exchange
    method found. Their offer: diffie-hellman-group1-sha1,ext-info-c

The offer is the client's list exactly as it came in its KEXINIT, for the
client-to-server direction of ciphers, MACs and compression unless that one
had a match and the other did not (sshd chooses client-to-server first).
"""

from __future__ import annotations

from dataclasses import dataclass

import paramiko


@dataclass(frozen=True)
class Category:
    """One kind of algorithm: paramiko's words for it, sshd's (ssh_err), and
    the KEXINIT fields that hold the client's offers, client-to-server first."""

    paramiko_text: tuple[str, ...]
    sshd_text: str
    fields: tuple[str, ...]
    #: the transport's list of ours (to find the direction that failed)
    ours: str = ""


CATEGORIES = (
    Category(("no acceptable kex algorithm",), "no matching key exchange method found",
             ("kex_algo_list",)),
    Category(("no acceptable host key", "can't match requested host key type"),
             "no matching host key type found", ("server_key_algo_list",)),
    Category(("no acceptable ciphers",), "no matching cipher found",
             ("client_encrypt_algo_list", "server_encrypt_algo_list"), "preferred_ciphers"),
    Category(("no acceptable macs",), "no matching MAC found",
             ("client_mac_algo_list", "server_mac_algo_list"), "preferred_macs"),
    Category(("no acceptable compression",), "no matching compression method found",
             ("client_compress_algo_list", "server_compress_algo_list"),
             "preferred_compression"),
)


class NegotiationFailed(paramiko.SSHException):
    """Nothing in common for one kind of algorithm; str() is sshd's reason
    ("no matching cipher found"), ``offer`` the client's list."""

    def __init__(self, reason: str, offer: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offer = offer

    def log_line(self, remote_id: str) -> str:
        """The whole line, for the connection ``remote_id`` ("127.0.0.1 port 40000")."""
        return f"Unable to negotiate with {remote_id}: {self.reason}. Their offer: {self.offer}"


def explain(exc: paramiko.IncompatiblePeer, transport: paramiko.Transport,
            kexinit_payload: bytes) -> paramiko.SSHException:
    """A NegotiationFailed for paramiko's ``exc``, read from the client's
    KEXINIT (its payload after the message number); ``exc`` itself when it
    is not about a list of algorithms (a protocol version, say)."""
    text = str(exc)
    category = next((c for c in CATEGORIES if any(t in text for t in c.paramiko_text)), None)
    if category is None:
        return exc
    # paramiko's own parser, on a copy: its negotiation edits the lists it parsed
    parsed = transport._really_parse_kex_init(paramiko.Message(kexinit_payload))
    field = category.fields[0]
    if len(category.fields) == 2 and category.ours:
        ours = set(getattr(transport, category.ours))
        if any(name in ours for name in parsed[field]):
            field = category.fields[1]  # client-to-server matched: the other way failed
    return NegotiationFailed(category.sshd_text, ",".join(parsed[field]))
