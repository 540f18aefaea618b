"""The session process: post-authentication, the user's uid and groups.

Carries the connection on from the hand-off: channels, ptys (allocated by the
monitor), shells and commands, forwarding, the agent socket, rekeys (signed
by the monitor).
"""
