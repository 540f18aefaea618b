"""Which sessions internal-sftp serves, as sshd's do_exec decides it, and
the forked child that serves each (child.py)."""

from __future__ import annotations

import functools

from privsep.session import programs
from privsep.session.state import SessionChannel
from privsep.session.sftp import child
from privsep.shell import spawn
from privsep.wire.facts import INTERNAL_SFTP


def is_internal(command: str | None) -> bool:
    """``internal-sftp``, alone or with arguments (sshd's IS_INTERNAL_SFTP)."""
    return command is not None and (command == INTERNAL_SFTP
                                    or command.startswith(INTERNAL_SFTP + " "))


def runner(process, session: SessionChannel, command: str | None, forced: bool,
           env: dict[str, str]) -> programs.PipeRunner | None:
    """The runner of an internal-sftp session, or None for every other
    session.  A subsystem whose command (or ForceCommand) is internal-sftp
    is served in a child; a shell or command under ForceCommand
    internal-sftp gets sshd's refusal in a child; anything else is not ours."""
    if not is_internal(command):
        return None
    if not session.subsystem and not forced:
        return None  # "ssh host internal-sftp": a command like any other, as sshd
    pw = process.pw
    program = spawn.Program(INTERNAL_SFTP, [w for w in command.split(" ") if w], env,
                            pw.pw_dir, quiet_home=process.jail.active)
    keep = (process.monitor.fileno(),)
    if session.subsystem:
        entry = functools.partial(child.serve, program, pw, keep=keep)
    else:
        entry = functools.partial(child.refuse, program, f"user {pw.pw_name} {process.peer}",
                                  keep=keep)
    return programs.PipeRunner(process.loop, session, program, child=entry)
