"""The monitor: root, one process per connection, the only one that decides.

Serves the net-child and then the session process over a socketpair, answers
each request the request table (policy.py) admits: user lookup, PAM,
public keys, host-key signatures, ptys and login records.  Trusts nothing a
child says.
"""
