"""sshd's last line for a client message it could not parse, after login.

A field that runs past the end of a message (or trailing bytes where sshd
calls sshpkt_get_end, or a NUL inside a string sshd reads as a C string)
raises MessageIncomplete, TrailingData or InvalidFormat from the
StrictMessage being read (privsep/child/strict_message.py); the session
packetizer marks each message with its type (``ptype``), so the line can
name what sshd's own handler names, in its words and at its level:

- CHANNEL_DATA: channel_input_data's fatal_fr, "channel_input_data:
  channel N: get data: <error>" (sshd's fatal(): CRITICAL here);
- a CHANNEL_REQUEST whose fixed fields are short: server_input_channel_req's
  sshpkt_fatal; one of the session's requests short in its own fields:
  session_<x>_req's, "<function>: parse packet: Connection from user U A
  port P: <error>" (a logdie: INFO);
- anything else, and a packet sshd's packet layer refuses (its framing,
  MAC or type: child/packetizer.PacketCorrupt): the dispatch's,
  "ssh_dispatch_run_fatal: Connection from user U A port P: <error>".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from paramiko import SSHException
from paramiko.common import MSG_CHANNEL_DATA, MSG_CHANNEL_REQUEST

from privsep.child.packetizer import PacketCorrupt
from privsep.child.strict_message import (InvalidFormat, MessageIncomplete, StrictMessage,
                                          TrailingData)

#: the session channel requests sshd parses in a function of their own
#: (session.c session_input_channel_req), by request name
SESSION_REQUEST_FUNCTIONS = {
    "shell": "session_shell_req",
    "exec": "session_exec_req",
    "pty-req": "session_pty_req",
    "x11-req": "session_x11_req",
    "auth-agent-req@openssh.com": "session_auth_agent_req",
    "subsystem": "session_subsystem_req",
    "env": "session_env_req",
    "window-change": "session_window_change_req",
    "break": "session_break_req",
}

#: the fields after "want reply" of the session requests sshd parses whole,
#: then sshpkt_get_end (s: string, c: string read as a C string, no NUL but
#: a last one, u: uint32, b: byte); the first seven only while no program
#: runs (a LARVAL channel: sshd leaves them unread after)
SESSION_REQUEST_FIELDS = {
    "shell": "", "exec": "c", "pty-req": "cuuuus", "x11-req": "bccu",
    "auth-agent-req@openssh.com": "", "subsystem": "c", "env": "cc",
    "window-change": "uuuu", "break": "u",
}
ALWAYS_PARSED = ("window-change", "break")

#: what a StrictMessage raises for a message sshd cannot parse
PARSE_ERRORS = (MessageIncomplete, TrailingData, InvalidFormat)


class ChannelFatal(SSHException):
    """sshd's fatal() in its channel code (a window adjust that overflows
    the window): the line is the text at CRITICAL, and no DISCONNECT."""


@dataclass(frozen=True)
class FatalLine:
    """One log line and its level (a logging level)."""
    level: int
    text: str


def fatal_line(exc: BaseException, user: str, peer: object) -> FatalLine | None:
    """sshd's line for the parse error ``exc`` that ended the connection of
    ``user`` from ``peer`` ("A port P"), or for a packet its packet layer
    refused (PacketCorrupt: its dispatch's fatal), or for a fatal() of its
    channel code (ChannelFatal); None if ``exc`` is none of these."""
    error = str(exc)
    where = f"Connection from user {user} {peer}: {error}"
    if isinstance(exc, ChannelFatal):
        return FatalLine(logging.CRITICAL, error)
    if isinstance(exc, PacketCorrupt):
        return FatalLine(logging.INFO, f"ssh_dispatch_run_fatal: {where}")
    if not isinstance(exc, PARSE_ERRORS):
        return None
    m = exc.message
    ptype = getattr(m, "ptype", None)
    chanid = _channel_id(m) if ptype == MSG_CHANNEL_DATA else None
    if chanid is not None:
        return FatalLine(logging.CRITICAL,
                         f"channel_input_data: channel {chanid}: get data: {error}")
    if ptype == MSG_CHANNEL_REQUEST:
        return FatalLine(logging.INFO, f"{_request_function(m)}: parse packet: {where}")
    return FatalLine(logging.INFO, f"ssh_dispatch_run_fatal: {where}")


def check_session_request(kind: str, m: StrictMessage, larval: bool) -> None:
    """Read the fields of a session request as sshd's session_*_req does,
    before anything acts on it: MessageIncomplete for a short one,
    InvalidFormat for a NUL inside a C string, TrailingData for bytes
    after the last; ``m`` is left where it was
    (after "want reply").  ``larval``: no program has started yet."""
    fields = SESSION_REQUEST_FIELDS.get(kind)
    if fields is None or not (larval or kind in ALWAYS_PARSED):
        return
    where = m.packet.tell()
    readers = {"s": m.get_binary, "c": m.get_cstring, "u": m.get_int, "b": m.get_byte}
    for code in fields:
        readers[code]()
    m.expect_end()
    m.packet.seek(where)


def _channel_id(m: StrictMessage) -> int | None:
    """The recipient channel of a channel message; None if even that is short."""
    m.rewind()
    try:
        return m.get_int()
    except PARSE_ERRORS:
        return None


def _request_function(m: StrictMessage) -> str:
    """The sshd function that failed to parse the channel request ``m``:
    server_input_channel_req for the fields every request has, else the
    session request's own."""
    m.rewind()
    try:
        m.get_int()
        kind = m.get_string()
        m.get_boolean()
    except PARSE_ERRORS:
        return "server_input_channel_req"
    return SESSION_REQUEST_FUNCTIONS.get(kind.decode("utf-8", "replace"),
                                         "server_input_channel_req")


__all__ = ["FatalLine", "fatal_line", "check_session_request", "PARSE_ERRORS", "SESSION_REQUEST_FUNCTIONS"]
