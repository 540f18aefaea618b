"""The net-child: pre-authentication, sandboxed (an unprivileged user, chroot
to an empty directory, no capabilities, seccomp, rlimits).

Runs the SSH transport with paramiko and turns every credential into a
question for the monitor; hands the transport state over after success.
"""
