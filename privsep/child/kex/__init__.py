"""The key exchanges this daemon speaks, installed on a paramiko transport by
both children: the net-child (first exchange) and the session process
(rekeys).  paramiko's own engines are kept; ours are added
(``groups.py``, ``sntrup.py``); every one learns RFC 4253's guesses
(``guess.py``).  Group exchange asks the monitor for its group."""

from __future__ import annotations

import paramiko

from privsep.child.kex.groups import (GexGroupSource, KexCurve25519RFC8731, KexGexSHA1Monitor,
                                      KexGexSHA256Monitor, KexGroup1SHA1, KexGroup14SHA1,
                                      KexGroup14SHA256Sshd, KexGroup16SHA512Sshd,
                                      KexGroup18SHA512)
from privsep.child.kex.guess import with_guesses
from privsep.child.kex.sntrup import KexSntrup761X25519, KexSntrup761X25519OpenSSH

GEX_PREFIX = "diffie-hellman-group-exchange-"

_OURS: dict[str, type] = {
    e.name: e for e in (
        KexSntrup761X25519, KexSntrup761X25519OpenSSH, KexCurve25519RFC8731,
        KexGexSHA256Monitor, KexGexSHA1Monitor, KexGroup14SHA256Sshd, KexGroup16SHA512Sshd,
        KexGroup18SHA512, KexGroup14SHA1, KexGroup1SHA1)
}

#: Every key exchange by name, each with guess handling.
ENGINES: dict[str, type] = {
    name: with_guesses(engine)
    for name, engine in {**paramiko.Transport._kex_info, **_OURS}.items()
}


def install(transport: paramiko.Transport, names: list[str],
            gex_groups: GexGroupSource | None) -> None:
    """Offer the key exchanges ``names`` (in that order) on ``transport``;
    group exchange gets its groups from ``gex_groups`` (the monitor), and is
    left out without it."""
    transport._kex_info = ENGINES  # the instance's, not paramiko's class table
    transport._preferred_kex = tuple(
        n for n in names
        if n in ENGINES and (gex_groups is not None or not n.startswith(GEX_PREFIX)))
    transport.gex_group_source = gex_groups
    # paramiko drops group exchange from a server's KEXINIT without a
    # modulus pack of its own; the monitor is ours.
    transport._modulus_pack = gex_groups
