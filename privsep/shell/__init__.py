"""The user's program between fork and exec: the user's uid, a new session,
on its pty or pipes, until execve.
"""
