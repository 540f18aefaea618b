"""Used by every process and needing no rights: the monitor socketpair end,
process titles, logging and the phase trace, the peer's address text, and
the one module that changes uids and gids (ids.py, called as root only).
"""
