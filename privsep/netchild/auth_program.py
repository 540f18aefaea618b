"""The exec'd pre-auth program of process generation 10: OpenSSH 10's
``sshd-auth``.  The monitor forks, and the child execs this module in a
fresh interpreter (monitor/exec_auth.py) with the connection's socket and
its end of the monitor socketpair.  So it holds nothing the monitor had:
not the PAM handle, not the Match blocks, not a byte of the monitor's heap;
only the global options, the host keys' public halves and the banner.

It imports everything the transport needs while it may still read files,
then is the net-child of generation 9 (netchild.py): chrooted, the privsep
user, no capabilities, no_new_privs, seccomp; titled
``privsep-sshd-auth: [session-auth]``, then ``alice [net]``, and named
``sshd-auth`` in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from privsep.common import proctitle, roles


@dataclass
class AuthBundle:
    """What the monitor passes across the exec."""

    options: object  # ServerOptions, global: no Match blocks
    host_keys: list  # list[HostKey]: public halves and paths only
    banner: str
    log: tuple  # common/log.py's setup arguments


def main() -> int:
    proctitle.use_program(roles.AUTH_PROGRAM_PREFIX, roles.AUTH_PROGRAM_COMM)
    proctitle.set(roles.AUTH_EARLY_TITLE)
    from privsep.common import exec_program

    exec_program.skip_client_only_modules()
    import socket

    from privsep.child import hostkey_proxy
    from privsep.common import log as logsetup
    from privsep.netchild import netchild

    bundle, fds = exec_program.receive()
    assert isinstance(bundle, AuthBundle)
    logsetup.setup(*bundle.log)
    publics = hostkey_proxy.public_keys(bundle.host_keys)
    sock = socket.socket(fileno=fds["sock"])
    channel_sock = socket.socket(fileno=fds["monitor"])
    netchild.run(sock, channel_sock, bundle.options, publics, bundle.banner,  # type: ignore[arg-type]
                 close_fds=(), title=roles.AUTH_TITLE)
