"""paramiko's Packetizer keeps its counters and keys in name-mangled private
attributes; both halves of the transport hand-off (netchild/capture.py,
session/resume.py) and the session's packetizer read and set them here, by
name, so that a paramiko upgrade that moves them fails in one place
(tests/test_handoff_internals.py)."""

from __future__ import annotations

from paramiko.packet import Packetizer

_PKT = "_Packetizer__"  # name-mangling prefix of Packetizer's private state


def pkt_get(packetizer: Packetizer, name: str):
    return getattr(packetizer, _PKT + name)


def pkt_set(packetizer: Packetizer, name: str, value) -> None:
    setattr(packetizer, _PKT + name, value)
