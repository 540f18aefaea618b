"""The session process's transport: paramiko's, with the hooks a session needs.

Runs in the post-auth session process, as the user.  paramiko's server side
queues every opened channel for ``accept()``, answers ``tcpip-forward``
itself, opens ``direct-tcpip`` channels before anything is connected and does
not know ``signal``, ``break``, the streamlocal forwards or the OpenSSH
connection requests.  This subclass overrides the single-underscore hooks
(``_parse_channel_open``, ``_parse_global_request``, ``_queue_incoming_channel``,
``_unlink_channel`` and the channel-request entry of ``_channel_handler_table``)
and hands those messages to the connection object (session.SessionProcess),
which decides.  Every other message goes to paramiko as before.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import paramiko
from paramiko.channel import Channel
from paramiko.common import (
    MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA, MSG_CHANNEL_REQUEST, OPEN_SUCCEEDED,
    cMSG_DISCONNECT, cMSG_CHANNEL_FAILURE, cMSG_CHANNEL_OPEN_FAILURE,
    cMSG_CHANNEL_OPEN_SUCCESS, cMSG_CHANNEL_SUCCESS, cMSG_GLOBAL_REQUEST, cMSG_REQUEST_FAILURE,
    cMSG_REQUEST_SUCCESS,
)
from paramiko.message import Message

from privsep.child.packetizer import pkt_get, pkt_set
from privsep.session.resume import ResumedPacketizer, ResumedTransport

log = logging.getLogger("privsep.session")


class Connection(Protocol):
    """What the transport asks of the session process (session.SessionProcess)."""

    def channel_open(self, transport: "SessionTransport", kind: str, m: Message,
                     peer: tuple[int, int, int]) -> bool:
        """Handle a CHANNEL_OPEN of ``kind`` (``m`` positioned after the common
        fields; ``peer`` = (client channel id, window, max packet)); False lets
        paramiko handle it."""

    def global_request(self, kind: str, want_reply: bool, m: Message) -> bool | bytes | None:
        """True/False (or the reply's fields as bytes) to answer; None for paramiko."""

    def alive_reply(self) -> None:
        """The client answered one of our global requests (ClientAlive*)."""

    def channel_request(self, chan: Channel, kind: str, m: Message) -> bool | None:
        """An answer to a channel request; None to let paramiko handle it."""

    def channel_gone(self, chanid: int) -> None:
        """A channel was closed on both sides and forgotten."""

    def protocol_error(self, text: str) -> None:
        """The client broke the protocol; the connection ends after this."""


# OpenSSH's reason codes (RFC 4254 5.1)
OPEN_ADMINISTRATIVELY_PROHIBITED = 1
OPEN_CONNECT_FAILED = 2
OPEN_UNKNOWN_CHANNEL_TYPE = 3
OPEN_RESOURCE_SHORTAGE = 4


#: CHANNEL_WINDOW_ADJUST .. CHANNEL_FAILURE: messages that name a channel of ours.
_CHANNEL_MESSAGES = range(93, 101)


#: SSH_DISCONNECT_PROTOCOL_ERROR (RFC 4253 11.1)
DISCONNECT_PROTOCOL_ERROR = 2


class WindowVerdict(enum.Enum):
    """What becomes of one CHANNEL_DATA packet."""

    ACCEPT = "accept"
    #: larger than the maximum packet size we announced: dropped
    BIG_PACKET = "big packet"
    #: larger than what is left of the window: dropped
    TOO_MUCH = "too much data"


@dataclass
class ReceiveWindow:
    """How much data the client may still send on one of our channels.

    The window we announced, minus what arrived, plus what we granted again
    in WINDOW_ADJUST.  sshd 9.2 logs and drops a packet larger than the
    maximum packet size or than the window left, and the connection goes on;
    paramiko alone would buffer whatever comes.  Pure bookkeeping: the
    channel holds the lock."""

    left: int
    max_packet: int

    def receive(self, size: int) -> WindowVerdict:
        """Count ``size`` bytes of data against the window, or refuse them."""
        if size > self.max_packet:
            return WindowVerdict.BIG_PACKET
        if size > self.left:
            return WindowVerdict.TOO_MUCH
        self.left -= size
        return WindowVerdict.ACCEPT

    def grant(self, size: int) -> None:
        """We sent WINDOW_ADJUST for ``size`` more bytes."""
        self.left += size


class WindowedChannel(Channel):
    """A paramiko channel that holds the client to the window it was given,
    and can hand its data to a sink (session_stdin.StdinSink) instead of
    paramiko's buffer."""

    window: ReceiveWindow
    #: where accepted data goes once attached, in the transport thread
    sink = None

    def attach_sink(self, sink) -> None:
        """From now on data goes to ``sink``; what paramiko buffered so far
        goes first, and a client EOF already received follows it.  On a
        channel already closed the sink stops at once (closing a pipe)."""
        with self.lock:
            sink.prepend(self.in_buffer.empty())
            self.sink = sink
            eof, closed = self.eof_received, self.closed
        if closed:  # the client closed the channel before the program ran
            sink.stop()
        elif eof:
            sink.client_eof()

    def _set_window(self, window_size: int, max_packet_size: int) -> None:
        super()._set_window(window_size, max_packet_size)
        self.window = ReceiveWindow(window_size, max_packet_size)

    def _check_add_window(self, n: int) -> int:
        granted = super()._check_add_window(n)
        if granted:
            with self.lock:
                self.window.grant(granted)
        return granted

    def feed_data(self, m: Message) -> None:
        """CHANNEL_DATA from the client: buffered only within the window."""
        data = m.get_binary()
        with self.lock:
            verdict = self.window.receive(len(data))
            left, sink = self.window.left, self.sink
            if verdict is WindowVerdict.ACCEPT and sink is None:
                self._feed(data)
        if verdict is WindowVerdict.ACCEPT:
            if sink is not None:
                sink.deliver(data)
        elif verdict is WindowVerdict.BIG_PACKET:
            log.info("channel %d: rcvd big packet %d, maxpack %d",
                     self.chanid, len(data), self.window.max_packet)
        else:
            log.info("channel %d: rcvd too much data %d, win %d", self.chanid, len(data), left)

    def handle_eof(self, m: Message) -> None:
        """The client's EOF: paramiko's bookkeeping, then the sink's."""
        Channel._handle_eof(self, m)
        with self.lock:
            sink = self.sink
        if sink is not None:
            sink.client_eof()

    def feed_extended_data(self, m: Message) -> None:
        """CHANNEL_EXTENDED_DATA from the client: no channel of a server
        reads a client's stderr, so sshd drops it (paramiko would buffer it
        unread for ever); after the client's EOF it is a protocol error."""
        if self.eof_received:
            raise self.transport.disconnect(
                f"Received extended_data after EOF on channel {self.chanid}.")
        log.info("channel %d: bad ext data", self.chanid)


class SessionPacketizer(ResumedPacketizer):
    """Ends the connection on a message for a channel that is gone, as sshd
    does ("unknown channel"), where paramiko would ignore it.

    And fewer system calls per packet.  paramiko reads a packet in three
    reads (length, body, MAC), each a poll and a recv, and polls before every
    send.  The socket is non-blocking underneath (it has a timeout), so here
    one read(2) takes whatever the socket holds and later packets come out of
    that, and a write is tried before anything waits; paramiko's own loops,
    with their timeouts and rekey checks, run only when the socket has too
    little to read or no room to write."""

    transport: "SessionTransport | None" = None
    #: how much one read may take from the socket
    READ_AHEAD = 256 * 1024
    #: bytes read from the socket but not yet asked for (set on first use)
    _ahead: bytearray | None = None

    def _fd(self) -> int:
        """The socket's fd now: -1 once the transport closed it (a number
        kept from before could by then name another file)."""
        return pkt_get(self, "socket").fileno()

    def read_all(self, n, check_rekey=False):
        ahead = self._ahead
        if ahead is None:  # first read: what the net-child had read comes first
            ahead = self._ahead = bytearray(pkt_get(self, "remainder"))
            pkt_set(self, "remainder", b"")
        fd = self._fd()
        if len(ahead) < n and fd >= 0:
            try:
                ahead += os.read(fd, max(self.READ_AHEAD, n))
            except OSError:  # nothing there yet, or an error paramiko will see too
                pass
        if len(ahead) >= n:
            out = bytes(memoryview(ahead)[:n])
            del ahead[:n]
            return out
        pkt_set(self, "remainder", bytes(ahead))
        ahead.clear()
        return super().read_all(n, check_rekey)

    def write_all(self, out) -> None:
        fd = self._fd()
        if self.banner is not None or fd < 0:
            super().write_all(out)
            return
        try:
            written = os.write(fd, out)
        except OSError:  # full (paramiko waits), or gone (paramiko raises)
            written = 0
        pkt_set(self, "keepalive_last", time.time())
        if written < len(out):
            super().write_all(out[written:])

    def read_message(self):
        ptype, m = super().read_message()
        transport = self.transport
        if transport is not None and ptype in _CHANNEL_MESSAGES:
            chanid = m.get_int()
            m.rewind()
            if transport._channels.get(chanid) is None:
                name = paramiko.common.MSG_NAMES.get(ptype, str(ptype))
                raise transport.disconnect(f"{name} for unknown channel {chanid}")
        return ptype, m


class SessionTransport(ResumedTransport):
    """A resumed server transport whose connection-level decisions are ours."""

    def __init__(self, sock, state, username: str, **kwargs) -> None:
        super().__init__(sock, state, username, **kwargs)
        self.connection: Connection | None = None
        #: paramiko's channel map holds channels weakly; a forward's channel
        #: whose threads are done must still be known until the client's
        #: CLOSE, or that CLOSE would name an unknown channel.
        self._live: dict[int, Channel] = {}
        self.packetizer.__class__ = SessionPacketizer
        self.packetizer.transport = self

    def disconnect(self, text: str) -> paramiko.SSHException:
        """Log ``text`` and tell the client why the connection ends, as
        sshd's packet_disconnect does; the caller raises what this returns,
        which ends the transport's run loop."""
        if self.connection is not None:
            self.connection.protocol_error(text)
        m = Message()
        m.add_byte(cMSG_DISCONNECT)
        m.add_int(DISCONNECT_PROTOCOL_ERROR)
        m.add_string(text)
        m.add_string("")
        try:
            self._send_message(m)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client is gone already
        return paramiko.SSHException(text)

    # --- channel opens ------------------------------------------------------------

    def _parse_channel_open(self, m: Message) -> None:
        kind = m.get_text()
        peer = (m.get_int(), m.get_int(), m.get_int())
        if self.connection is not None and self.connection.channel_open(self, kind, m, peer):
            return
        m.rewind()
        super()._parse_channel_open(m)

    def new_channel(self, peer: tuple[int, int, int]) -> Channel:
        """Confirm a client's CHANNEL_OPEN; the channel, ready for data."""
        remote_id, window, max_packet = peer
        with self.lock:
            chanid = self._next_channel()
            chan = WindowedChannel(chanid)
            self._channels.put(chanid, chan)
            self.channels_seen[chanid] = True
            chan._set_transport(self)
            chan._set_window(self.default_window_size, self.default_max_packet_size)
            chan._set_remote_channel(remote_id, window, max_packet)
            self._live[chanid] = chan
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN_SUCCESS)
        m.add_int(remote_id)
        m.add_int(chanid)
        m.add_int(self.default_window_size)
        m.add_int(self.default_max_packet_size)
        self.send_reply(m)
        return chan

    def refuse_channel(self, peer: tuple[int, int, int], reason: int, text: str) -> None:
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN_FAILURE)
        m.add_int(peer[0])
        m.add_int(reason)
        m.add_string(text)
        m.add_string("")
        self.send_reply(m)

    def send_reply(self, m: Message) -> None:
        """Send from any thread (see _send_user_message)."""
        self._send_user_message(m)

    def _send_user_message(self, data) -> None:
        """paramiko's handlers answer CLOSE and channel requests through this
        in the transport thread; during a key exchange it would wait for
        clear_to_send, which only that thread can set (30 s, then the
        connection dies).  The transport thread sends at once instead, as
        paramiko's own kex handlers do; so does anyone before that thread
        starts, when nobody else writes and no key exchange can be under way
        (paramiko would drop the packet: the transport is not active yet)."""
        if threading.current_thread() is self or self.ident is None:
            self._send_message(data)
        else:
            super()._send_user_message(data)

    def send_unless_rekeying(self, m: Message) -> bool:
        """Send ``m`` now, from any thread, unless a key exchange is under
        way (False: nothing sent).  The lock keeps another thread from
        starting one between the check and the send."""
        with self.clear_to_send_lock:
            if not self.clear_to_send.is_set():
                return False
            self._send_message(m)
            return True

    def open_channel_to_client(self, kind: str, fields: bytes, timeout: float = 60) -> Channel:
        """Open a channel of ``kind`` towards the client, ``fields`` following
        the common ones (forwarded-tcpip, forwarded-streamlocal, agent)."""
        if not self.active:
            raise paramiko.SSHException("SSH session not active")
        with self.lock:
            chanid = self._next_channel()
            chan = WindowedChannel(chanid)
            self._channels.put(chanid, chan)
            self.channel_events[chanid] = event = threading.Event()
            self.channels_seen[chanid] = True
            chan._set_transport(self)
            chan._set_window(self.default_window_size, self.default_max_packet_size)
            self._live[chanid] = chan
        m = Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_OPEN)
        m.add_string(kind)
        m.add_int(chanid)
        m.add_int(self.default_window_size)
        m.add_int(self.default_max_packet_size)
        m.add_bytes(fields)
        self._send_user_message(m)
        if not event.wait(timeout) or not self.active:
            raise paramiko.SSHException("Unable to open channel.")
        opened = self._channels.get(chanid)
        if opened is None:
            self._live.pop(chanid, None)
            raise paramiko.SSHException("channel refused by the client")
        return opened

    def _queue_incoming_channel(self, channel: Channel) -> None:
        """Session channels are served through their requests; nobody calls
        accept(), so nothing is queued for it."""

    def _unlink_channel(self, chanid: int) -> None:
        super()._unlink_channel(chanid)
        self._live.pop(chanid, None)
        if self.connection is not None:
            self.connection.channel_gone(chanid)

    # --- global requests ------------------------------------------------------------

    def _parse_global_request(self, m: Message) -> None:
        kind = m.get_text()
        want_reply = m.get_boolean()
        answer = (None if self.connection is None
                  else self.connection.global_request(kind, want_reply, m))
        if answer is None:
            m.rewind()
            super()._parse_global_request(m)
            return
        if want_reply:
            reply = Message()
            if answer:
                reply.add_byte(cMSG_REQUEST_SUCCESS)
                if isinstance(answer, bytes):
                    reply.add_bytes(answer)
            else:
                reply.add_byte(cMSG_REQUEST_FAILURE)
            self._send_message(reply)

    def _parse_request_success(self, m: Message) -> None:
        super()._parse_request_success(m)
        if self.connection is not None:
            self.connection.alive_reply()

    def _parse_request_failure(self, m: Message) -> None:
        super()._parse_request_failure(m)
        if self.connection is not None:
            self.connection.alive_reply()

    def send_global_request(self, kind: str, fields: bytes = b"", want_reply: bool = False) -> None:
        """A global request whose answer nobody waits for (hostkeys-00, keepalive)."""
        m = Message()
        m.add_byte(cMSG_GLOBAL_REQUEST)
        m.add_string(kind)
        m.add_boolean(want_reply)
        m.add_bytes(fields)
        self.send_reply(m)

    # --- channel requests -----------------------------------------------------------

    def _channel_request(self, chan: Channel, m: Message) -> None:
        kind = m.get_text()
        want_reply = m.get_boolean()
        answer = None
        if self.connection is not None:
            answer = self.connection.channel_request(chan, kind, m)
        if answer is None:
            m.rewind()
            m.get_int()  # the channel id, read already by the run loop
            Channel._handle_request(chan, m)
            return
        if want_reply and not chan.closed:
            reply = Message()
            reply.add_byte(cMSG_CHANNEL_SUCCESS if answer else cMSG_CHANNEL_FAILURE)
            reply.add_int(chan.remote_chanid)
            self.send_reply(reply)

    _channel_handler_table = {
        **ResumedTransport._channel_handler_table,
        MSG_CHANNEL_REQUEST: lambda chan, m: chan.transport._channel_request(chan, m),
        MSG_CHANNEL_DATA: WindowedChannel.feed_data,
        MSG_CHANNEL_EXTENDED_DATA: WindowedChannel.feed_extended_data,
        MSG_CHANNEL_EOF: WindowedChannel.handle_eof,
    }


__all__ = ["SessionTransport", "WindowedChannel", "ReceiveWindow", "WindowVerdict", "OPEN_SUCCEEDED", "OPEN_ADMINISTRATIVELY_PROHIBITED",
           "OPEN_CONNECT_FAILED", "OPEN_UNKNOWN_CHANNEL_TYPE", "OPEN_RESOURCE_SHORTAGE"]
