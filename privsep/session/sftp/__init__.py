"""internal-sftp: sftp-server 9.2 in the session process's own code, so that
a ChrootDirectory jail without any binary serves sftp.  Built on paramiko's
SFTP server framework; each channel is served by a child the session
process forks (child.py), as the user, inside the jail."""
