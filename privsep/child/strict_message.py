"""The Message both unprivileged children read the client's packets with:
paramiko's, refusing a field that runs past the end of the packet.

paramiko's Message.get_bytes pads a short field with zero bytes, so a
string whose length field is larger than what follows is "read" with
invented NULs (a user name, a command, channel data).  OpenSSH's sshbuf
refuses it (SSH_ERR_MESSAGE_INCOMPLETE, "incomplete message") and sshd
ends the connection.  ``StrictMessage`` overrides the one method every
getter goes through (get_int, get_string, get_text, get_binary, get_mpint,
get_list, get_boolean ...), so a short field raises ``MessageIncomplete``,
a paramiko.SSHException: the transport ends as for any protocol error, and
the child logs sshd's line (netchild.describe_failure, session/main.py).

``expect_end`` is sshd's sshpkt_get_end, for the handlers where sshd
refuses trailing bytes (it ignores them elsewhere).

Every Message our packetizer hands to a handler is one of these: paramiko's
read_message makes it through the name ``Message`` of paramiko.packet
(replaced below, as packetizer.py replaces compute_hmac), and our own read
paths (the chacha20-poly1305 one, the session's direct one) build it by
name."""

from __future__ import annotations

import paramiko.packet
from paramiko.message import Message


class MessageIncomplete(paramiko.SSHException):
    """A field longer than what is left of the message (sshbuf's
    SSH_ERR_MESSAGE_INCOMPLETE)."""

    #: ssh_err()'s words for it
    TEXT = "incomplete message"

    def __init__(self, message: Message | None = None) -> None:
        super().__init__(self.TEXT)
        #: the message that fell short, for the log line that names it
        self.message = message


class TrailingData(paramiko.SSHException):
    """Bytes left after the last field where sshd calls sshpkt_get_end
    (SSH_ERR_UNEXPECTED_TRAILING_DATA)."""

    TEXT = "unexpected bytes remain after decoding"

    def __init__(self, message: Message | None = None) -> None:
        super().__init__(self.TEXT)
        self.message = message


class InvalidFormat(paramiko.SSHException):
    """A string read as a C string (sshbuf_get_cstring) with a NUL before
    its last byte (SSH_ERR_INVALID_FORMAT)."""

    TEXT = "invalid format"

    def __init__(self, message: Message | None = None) -> None:
        super().__init__(self.TEXT)
        self.message = message


class StrictMessage(Message):
    """paramiko's Message, without the zero padding of a short read."""

    def get_bytes(self, n: int) -> bytes:
        """The next ``n`` bytes; MessageIncomplete if fewer are left."""
        data = self.packet.read(n)
        if len(data) < n:
            raise MessageIncomplete(self)
        return data

    def get_cstring(self) -> bytes:
        """sshpkt_get_cstring: a string that may end with a NUL but hold
        none before that (a C string would be cut there); InvalidFormat."""
        data = self.get_binary()
        if b"\0" in data[:-1]:
            raise InvalidFormat(self)
        return data

    def expect_end(self) -> None:
        """sshpkt_get_end: nothing may follow the last field."""
        with self.packet.getbuffer() as view:
            if self.packet.tell() != len(view):
                raise TrailingData(self)


# paramiko's Packetizer.read_message builds each message it reads by this
# name, and only there: every message its read path hands out is strict.
paramiko.packet.Message = StrictMessage

__all__ = ["StrictMessage", "MessageIncomplete", "TrailingData", "InvalidFormat"]
