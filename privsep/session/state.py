"""The session process's per-channel state."""

from __future__ import annotations

from dataclasses import dataclass, field

import paramiko

from privsep.session.stdin import StdinSink


@dataclass
class Pty:
    tty: str
    master: int
    slave: int
    term: str
    modes: bytes
    last_login: str = ""


@dataclass
class SessionChannel:
    """One session channel: at most one pty and one program."""

    chan: paramiko.Channel
    pty: Pty | None = None
    env: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    started: bool = False
    pty_released: bool = False
    subsystem: bool = False
    #: the program is a forced command (ForceCommand, a key's command=):
    #: the client may not signal it, as sshd's s->forced
    forced: bool = False
    exited: bool = False
    #: eow@openssh.com: the client can take no more output (its stdout broke)
    eow: bool = False
    #: where the channel's data goes once the program runs
    sink: StdinSink | None = None
    #: the program's runner (programs.PtyRunner or PipeRunner), once started
    runner: object | None = None
    #: sshd's session number ("id 0" in "Starting session"): the lowest
    #: one no open session holds, given at the channel's opening
    number: int = 0
    #: the subsystem's name as the client asked for it ("sftp")
    subsystem_name: str = ""
    #: sshd's channel type once the program runs, for a subsystem
    #: ("session:subsystem:sftp"; ChannelTimeout's patterns)
    xtype: str = ""
    #: the forwarded X11 display (x11.X11Display), after an x11-req
    x11: object | None = None
