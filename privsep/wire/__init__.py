"""Pure code both ends of the monitor link share: the SSH buffer reader and
writer, the monitor's typed messages, host key blobs, the signed userauth
data, key options and the facts every process agrees on.  No I/O.
"""
