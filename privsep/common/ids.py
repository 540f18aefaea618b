"""Every change of uid and gid in the daemon, in one place.  Called as root
only, at these moments:

* ``become_user``: the session process's first lines, for good (entering
  its ChrootDirectory between the groups and the uid, as sshd does);
* ``become_sandbox_user``: the net-child's first lines, for good, with no
  groups at all (netchild/sandbox.py adds the rest of the sandbox);
* ``user_rights``: the monitor, for the span of reading a user's files, with
  the effective ids only, as OpenSSH's temporarily_use_uid().
* ``become_user`` again, in the child the monitor forks for an
  AuthorizedKeysCommand or AuthorizedPrincipalsCommand (monitor/keycommand.py),
  between fork and exec: the command's user, for good.

A permanent drop is checked by trying to take root back.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import threading
from typing import Callable, Iterator


def become_user(pw: pwd.struct_passwd, before_uid: Callable[[], None] | None = None) -> None:
    """Become the user for good, with the user's groups.

    ``before_uid`` runs with the user's groups and gid but still root's
    uid: sshd's do_setusercontext enters the ChrootDirectory there, so that
    the groups come from the system's /etc/group and not the jail's."""
    if os.geteuid() == pw.pw_uid != 0:
        if before_uid is not None:
            before_uid()
        return  # an unprivileged daemon already runs as its one user
    os.initgroups(pw.pw_name, pw.pw_gid)
    os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
    if before_uid is not None:
        before_uid()
    _set_all_ids(pw.pw_uid, pw.pw_gid)


def become_sandbox_user(pw: pwd.struct_passwd) -> None:
    """Become the privilege-separation user for good, without any group."""
    os.setgroups([])
    _set_all_ids(pw.pw_uid, pw.pw_gid)


def _set_all_ids(uid: int, gid: int) -> None:
    """Real, effective and saved ids; then prove root cannot be regained."""
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if uid == 0:
        return
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise RuntimeError("root could be regained after dropping privileges")


def _fatal(message: str) -> None:
    """Die at once, as OpenSSH's fatal() does: the monitor's state is unknown."""
    try:
        os.write(2, f"privsep-sshd: fatal: {message}\n".encode(errors="replace"))
    finally:
        os._exit(255)


@contextlib.contextmanager
def user_rights(pw: pwd.struct_passwd) -> Iterator[None]:
    """Run the body with the user's effective uid, gid and groups.

    Why not fork a child that drops privileges for good and pipes the text
    back?  It would be more isolated, but a fork of a large Python process
    costs milliseconds per login and the design asks for fast logins.  The
    monitor is single-threaded and the body only opens, stats and reads
    files, so switching the *effective* ids, as OpenSSH's
    temporarily_use_uid() does, is both enough and cheap: the real and saved
    uid stay 0, so root comes back in the ``finally``.

    * Not root: nothing to switch (OpenSSH does the same); the body runs with
      the current rights.
    * More than one Python thread: refused with RuntimeError, because a
      seteuid applies to every thread of the process.
    * Failing to become root again: fatal (exit 255), never a monitor left
      running with the user's ids.
    """
    if os.geteuid() != 0:
        yield
        return
    if threading.active_count() != 1:
        raise RuntimeError("user_rights needs a single-threaded monitor")
    saved_egid = os.getegid()
    saved_groups = os.getgroups()
    user_groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    try:
        os.setgroups(user_groups)
        os.setegid(pw.pw_gid)
        os.seteuid(pw.pw_uid)
        yield
    finally:
        try:
            os.seteuid(0)
            os.setegid(saved_egid)
            os.setgroups(saved_groups)
        except OSError as exc:
            _fatal(f"cannot restore root privileges: {exc}")
        if (
            os.geteuid() != 0
            or os.getegid() != saved_egid
            or sorted(os.getgroups()) != sorted(saved_groups)
        ):
            _fatal("root privileges not restored")
