"""privsep-tree: a separate, read-only program that shows the process tree
of privsep-sshd or sshd, with roles, rights and descriptors."""
