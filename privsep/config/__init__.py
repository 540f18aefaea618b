"""sshd_config: parsing, Match blocks, access rules and algorithm lists.
Parses the files it is given; no sockets, accounts, processes or privilege.
"""
