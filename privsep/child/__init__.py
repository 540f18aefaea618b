"""Shared by the two unprivileged children (the net-child and the session
process), with no rights of their own: the monitor client stubs, the host
keys whose signatures come from the monitor, and the paramiko set-up and
internals both transports need.
"""
