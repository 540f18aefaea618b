"""privsep-sshd: an SSH server with OpenSSH's privilege separation.

Each module is named for the process that runs it and the rights it has:
see README.md, "Where the code runs".
"""

__version__ = "0.1.0"
