"""The signer: root, transient.  A child that the monitor forks for each
host-key signature (and the listener once at start-up, to check the keys):
it reads the private key from its file, uses it, writes the result to a pipe
and exits.  No long-lived process ever holds a host private key, so none can
leak it to a child forked later (the net-child, the session process).
"""
