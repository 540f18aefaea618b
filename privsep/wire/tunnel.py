"""tun@openssh.com (OpenSSH PROTOCOL 2.3): the rules both ends agree on, pure.

The session process checks a client's request against these rules to answer
as sshd answers (its debug messages and refusals); the monitor checks the
session process's TunRequest against the same rules before it opens a
device, so a session process that asks for more is refused as hostile
(monitor/policy.py).  The address-family header of point-to-point packets
is here too: OpenSSH sends OpenBSD's numbers on the wire, and Linux's tun
with IFF_NO_PI has no header at all (port-net.c, SSH_TUN_PREPEND_AF).
"""

from __future__ import annotations

from collections.abc import Iterable

#: The channel type a client opens (ssh -w).
CHANNEL_TYPE = "tun@openssh.com"
#: Tunnel modes on the wire (SSH_TUNMODE_*).
MODE_POINTOPOINT = 1
MODE_ETHERNET = 2
#: "any unit" on the wire and in tunnel="any" (SSH_TUNID_ANY), and the
#: largest unit number (SSH_TUNID_MAX).
TUNID_ANY = 0x7FFFFFFF
TUNID_MAX = 0x7FFFFFFF - 2

#: PermitTunnel's values and the modes each admits.
_PERMITTED_MODES = {
    "no": frozenset(),
    "point-to-point": frozenset({MODE_POINTOPOINT}),
    "ethernet": frozenset({MODE_ETHERNET}),
    "yes": frozenset({MODE_POINTOPOINT, MODE_ETHERNET}),
}

#: OpenBSD's address families, as the header on the wire names them.
_OPENBSD_AF_INET = 2
_OPENBSD_AF_INET6 = 24
#: Shortest IP packet sshd passes on (it needs a whole IPv4 header).
_MIN_IP_PACKET = 21


def mode_known(mode: int) -> bool:
    return mode in (MODE_POINTOPOINT, MODE_ETHERNET)


def mode_permitted(permit_tunnel: str, mode: int) -> bool:
    """Whether PermitTunnel admits ``mode``."""
    return mode in _PERMITTED_MODES.get(permit_tunnel, frozenset())


def forced_unit(key_options: Iterable[object]) -> int | None:
    """The unit an authorized_keys ``tunnel="N"`` forces (TUNID_ANY for
    "any"), or None.  The last one counts, as sshd's parser overwrites."""
    forced = None
    for option in key_options:
        if getattr(option, "name", None) == "tunnel" and getattr(option, "value", None):
            value = option.value  # type: ignore[attr-defined]
            forced = TUNID_ANY if value.lower() == "any" else int(value)
    return forced


def unit_to_open(requested: int, forced: int | None) -> int | None:
    """The unit to open for a request of ``requested``, or None when the
    request must be refused: a number beyond int, or one other than the key
    forces (serverloop.c server_request_tun).  A forced unit wins over
    "any"; a unit beyond TUNID_MAX but not "any" is refused by the opener."""
    if requested > 0x7FFFFFFF:
        return None
    if forced is None:
        return requested
    if requested != TUNID_ANY and requested != forced:
        return None
    return forced


def interface_pattern(mode: int, unit: int) -> str:
    """TUNSETIFF's name: "tun6", "tap0", or "tun%d" for any unit."""
    base = "tap" if mode == MODE_ETHERNET else "tun"
    return f"{base}%d" if unit == TUNID_ANY else f"{base}{unit}"


def to_channel(packet: bytes) -> bytes | None:
    """A point-to-point packet read from the device, with the family header
    the channel carries; None for one too short to be IP."""
    if len(packet) < _MIN_IP_PACKET:
        return None
    family = _OPENBSD_AF_INET6 if packet[0] >> 4 == 6 else _OPENBSD_AF_INET
    return family.to_bytes(4, "big") + packet


def from_channel(data: bytes) -> bytes | None:
    """A point-to-point packet from the channel without its header (the
    device infers the family); None for data shorter than the header."""
    if len(data) < 4:
        return None
    return data[4:]
