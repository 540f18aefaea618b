"""Facts more than one process needs, each stated once.

Pure constants: paths the daemon installs or reads by default, protocol
numbers, and limits that both ends of the monitor link must agree on.
"""

from __future__ import annotations

#: Where install.sh puts the configuration and ``ssh-keygen -A``-style keys.
CONFIG_DIR = "/etc/privsep-sshd"
DEFAULT_CONFIG = f"{CONFIG_DIR}/sshd_config"
#: ssh-keygen -A's set of host keys, under this daemon's directory.
DEFAULT_HOST_KEYS = (
    f"{CONFIG_DIR}/ssh_host_rsa_key",
    f"{CONFIG_DIR}/ssh_host_ecdsa_key",
    f"{CONFIG_DIR}/ssh_host_ed25519_key",
)
#: The listener's pid, as sshd's /run/sshd.pid.
DEFAULT_PID_FILE = "/run/privsep-sshd.pid"
#: The port of the built-in defaults (sshd's 22 stays the real sshd's).
DEFAULT_PORT = 2222

#: Debian's sftp server; ``internal-sftp`` runs it too (as the user).
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
INTERNAL_SFTP = "internal-sftp"

#: SSH_MSG_USERAUTH_REQUEST (RFC 4252): the first byte of what a client signs
#: after the session id in publickey authentication.
SSH_MSG_USERAUTH_REQUEST = 50

#: The longest user name the monitor looks up (monitor/policy.py refuses a
#: PwnamRequest beyond it, or empty, or with a NUL, as a hostile child's);
#: the net-child ends a connection that names such a user before asking.
MAX_USER_LEN = 256

#: A child's log line is cut at this many characters, by the child before it
#: sends and again by the monitor: a compromised child may not flood the log.
MAX_CHILD_LOG = 1000

#: The signature algorithms an RSA key answers to, best first; ssh-rsa (SHA-1)
#: is never used to sign, as in OpenSSH 8.8 and later.
RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256")
#: What an RSA host key signs with when nothing else chose: the first above.
DEFAULT_RSA_ALGORITHM = RSA_ALGORITHMS[0]
