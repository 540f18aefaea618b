"""The listener: root, before any connection.

Parses the command line and sshd_config, binds, accepts, forks one monitor
per connection and counts unauthenticated ones (MaxStartups).  Never reads a
byte of SSH.
"""
