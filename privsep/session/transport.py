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
import struct
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import paramiko
from paramiko.channel import Channel
from paramiko.common import (
    MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA, MSG_CHANNEL_REQUEST,
    MSG_CHANNEL_WINDOW_ADJUST, MSG_DEBUG, MSG_DISCONNECT, MSG_IGNORE, MSG_UNIMPLEMENTED,
    OPEN_SUCCEEDED, cMSG_CHANNEL_FAILURE, cMSG_CHANNEL_OPEN_FAILURE,
    cMSG_CHANNEL_OPEN_SUCCESS, cMSG_CHANNEL_SUCCESS, cMSG_GLOBAL_REQUEST, cMSG_REQUEST_FAILURE,
    cMSG_REQUEST_SUCCESS, cMSG_UNIMPLEMENTED,
)
from paramiko.message import Message
from paramiko.ssh_exception import MessageOrderError

from privsep.child.packetizer import disconnect_message
from privsep.session.loop import EventLoop
from privsep.session.packets import SessionPacketizer
from privsep.session.parse_fatal import ChannelFatal
from privsep.session.resume import ResumedTransport
from privsep.session.timeouts import SERVER_OPENED_TYPES

log = logging.getLogger("privsep.session")


class ConnectionClosed(EOFError):
    """The client's end closed the socket (a read returned nothing) with no
    DISCONNECT: sshd's server loop then ends with its own lines (main.py),
    where an EOFError from a failed write does not."""


class ReadError(OSError):
    """Reading the client's socket failed (a reset: the client died with our
    data unread): sshd's server loop writes "Read error from remote host"
    and exits at once (main.py)."""


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
    #: where accepted data goes once attached
    sink = None
    #: called when the client opens the window again (a pty drained at exit)
    on_window = None
    #: called once the channel is closed on both sides and forgotten (a forward)
    on_gone = None
    #: when data last moved either way (ChannelTimeout's clock, timeouts.py)
    lastused: float = 0.0
    #: sshd's name for the channel's type (ChannelTimeout's patterns)
    ctype: str = "session"

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

    def _send(self, s, m) -> int:
        """Data (or extended data) to the client: the channel is in use."""
        self.lastused = time.monotonic()
        return super()._send(s, m)

    def _check_add_window(self, n: int) -> int:
        granted = super()._check_add_window(n)
        if granted:
            with self.lock:
                self.window.grant(granted)
        return granted

    def feed_data(self, m: Message) -> None:
        data = m.get_binary()
        m.expect_end()  # sshd's channel_input_data refuses trailing bytes
        self.accept(data)

    def accept(self, data) -> None:
        """CHANNEL_DATA from the client (the slow path's Message, or the
        direct path's view, inbound.py): buffered only within the window."""
        with self.lock:
            verdict = self.window.receive(len(data))
            left, sink = self.window.left, self.sink
            if verdict is WindowVerdict.ACCEPT and sink is None:
                self._feed(data)
        if verdict is WindowVerdict.ACCEPT:
            self.lastused = time.monotonic()
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

    def window_adjust(self, m: Message) -> None:
        self.grow_window(m.get_int())

    def grow_window(self, nbytes: int) -> None:
        """The client's WINDOW_ADJUST (any path): paramiko's count, then the waiter."""
        if self.out_window_size + nbytes > 0xFFFFFFFF:  # sshd's u_int: its fatal()
            raise ChannelFatal(f"channel {self.chanid}: adjust {nbytes} overflows remote "
                               f"window {self.out_window_size}")
        with self.lock:
            self.out_window_size += nbytes
            self.out_buffer_cv.notify_all()
        if self.on_window is not None:
            self.on_window()

    def feed_extended_data(self, m: Message) -> None:
        """CHANNEL_EXTENDED_DATA from the client: no channel of a server
        reads a client's stderr, so sshd drops it (paramiko would buffer it
        unread for ever); after the client's EOF it is a protocol error."""
        if self.eof_received:
            raise self.transport.disconnect(
                f"Received extended_data after EOF on channel {self.chanid}.")
        log.info("channel %d: bad ext data", self.chanid)


#: The transport layer's own messages (RFC 4253: 1 to 49), the only ones a
#: key exchange lets through.
TRANSPORT_MESSAGES = range(1, 50)


def _message_type(data) -> int:
    """The type byte of an outgoing message (a Message or its bytes), without
    copying the packet."""
    if isinstance(data, Message):
        with data.packet.getbuffer() as view:
            return view[0] if len(view) else 0
    return data[0] if data else 0


#: CHANNEL_DATA's fixed fields (type, recipient, data length), and
#: EXTENDED_DATA's (type, recipient, data type, length)
_DATA_HEAD = struct.Struct(">BII")
_EXTENDED_HEAD = struct.Struct(">BIII")

#: A program's output, a forward's data: read no more while this much waits for the socket.
OUTPUT_HIGH_WATER = 512 * 1024
#: How long the last packets (a DISCONNECT) may wait for room before the socket closes.
CLOSE_FLUSH_SECONDS = 1.0


class SessionTransport(ResumedTransport):
    """A resumed server transport whose connection-level decisions are ours,
    served by the session process's event loop (``serve``) instead of
    paramiko's transport thread.

    What paramiko's run() does for each packet, ``_dispatch`` does when the
    loop has a whole packet; the banner and the first key exchange were the
    net-child's.  Sending never waits: a packet above the transport layer
    waits in ``_held`` while a key exchange is under way, and goes, in order,
    once it is over (``_send_message``)."""

    def __init__(self, sock, state, username: str, **kwargs) -> None:
        super().__init__(sock, state, username, **kwargs)
        self.connection: Connection | None = None
        #: paramiko's channel map holds channels weakly; a forward's channel
        #: must still be known until the client's CLOSE, or that CLOSE would
        #: name an unknown channel.
        self._live: dict[int, Channel] = {}
        self.packetizer.__class__ = SessionPacketizer
        self.packetizer.transport = self
        self.loop: EventLoop | None = None
        #: messages held back while a key exchange is under way
        self._held: list[Message] = []
        #: channels we opened towards the client, waiting for its answer
        self._opening: dict[int, Callable[[Channel | None], None]] = {}
        #: when the last key exchange ended (RekeyLimit's time half)
        self.kex_done_at = time.monotonic()
        #: ChannelTimeout's clocks (timeouts.ChannelTimeouts), told of each
        #: channel once it is open
        self.channel_timeouts = None

    # --- the loop ------------------------------------------------------------------

    def serve(self, loop: EventLoop, server: paramiko.ServerInterface,
              first: Callable[[], None] | None = None) -> None:
        """Serve the connection from ``loop`` from now on; returns at once.
        ``first`` sends what must precede everything (hostkeys-00) before
        a byte of the client's is handled.  ``active`` turns false when the
        connection ends."""
        self.loop = loop
        self.server_mode, self.server_object, self.active = True, server, True
        self._skip_initial_kex = False  # the net-child had the banner and the first exchange
        self.packetizer.start_loop()
        fd = self.packetizer.fileno()
        loop.first_fd = fd
        loop.add_reader(fd, self._readable)
        loop.add_writer(fd, self._writable, when=lambda: self.packetizer.backlog() > 0)
        if first is not None:
            first()
        self._guarded(self._process)  # what the net-child had read already

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run ``step``; whatever it raises ends the connection, as in run()."""
        try:
            step()
        except Exception as exc:
            self._end(exc)

    def _readable(self) -> None:
        def step() -> None:
            try:
                more = self.packetizer.take()
            except OSError as exc:  # not EAGAIN or EINTR: take() handles those
                raise ReadError(exc.errno, exc.strerror) from None
            if not more:
                raise ConnectionClosed()
            self._process()
        self._guarded(step)

    def _writable(self) -> None:
        self._guarded(self.packetizer.flush)

    def _process(self) -> None:
        """Handle every whole packet buffered."""
        packetizer = self.packetizer
        while self.active and packetizer.packet_ready():
            self.rekey_if_due()
            ptype, m = packetizer.read_message()
            if not self._dispatch(ptype, m):
                self._end(None)
                return
        self.rekey_if_due()
        self._release_held()

    def rekey_if_due(self) -> None:
        """RekeyLimit's byte half (or the client's) asks for a key exchange."""
        if self.active and self.packetizer.need_rekey() and not self.in_kex:
            self._send_kex_init()

    def start_rekey(self) -> bool:
        """A key exchange now, unless one is under way (RekeyLimit's time half)."""
        if not self.active or self.in_kex:
            return False
        self._send_kex_init()
        return True

    def _dispatch(self, ptype: int, m: Message) -> bool:
        """One message from the client, as paramiko's run() handles it;
        False when the client said goodbye.  No ``m``: delivered already."""
        if m is None:
            return True
        if ptype == MSG_DISCONNECT:
            self._parse_disconnect(m)
            return False
        if ptype in (MSG_IGNORE, MSG_DEBUG):
            self._enforce_strict_kex(ptype)
            if ptype == MSG_DEBUG:
                self._parse_debug(m)
            return True
        if self._expected_packet:
            if ptype not in self._expected_packet:
                error = MessageOrderError if self.agreed_on_strict_kex else paramiko.SSHException
                raise error(f"Expecting packet from {self._expected_packet!r}, got {ptype:d}")
            self._expected_packet = ()
            if 30 <= ptype <= 41:  # the key exchange's own messages
                self.kex_engine.parse_next(ptype, m)
                return True
        if ptype in self._handler_table:
            refusal = self._ensure_authed(ptype, m)
            if refusal:
                self._send_message(refusal)
            else:
                self._handler_table[ptype](m)
        elif ptype in self._channel_handler_table:
            chan = self._channels.get(m.get_int())  # an unknown one: the packetizer refused it
            if chan is not None:
                self._channel_handler_table[ptype](chan, m)
        elif ptype in self.auth_handler._handler_table:
            self.auth_handler._handler_table[ptype](m)
        elif ptype != MSG_UNIMPLEMENTED:
            reply = Message()
            reply.add_byte(cMSG_UNIMPLEMENTED)
            reply.add_int(m.seqno)
            self._send_message(reply)
        return True

    def _end(self, failure: BaseException | None) -> None:
        """The connection is over: forget the channels, close the socket."""
        if failure is not None and self.saved_exception is None:
            self.saved_exception = failure
        if not self.active:
            return
        self.active = False
        for chan in list(self._channels.values()):
            chan._unlink()
        self.packetizer.flush_before_close(CLOSE_FLUSH_SECONDS)
        if self.loop is not None:
            self.loop.forget(self.packetizer.fileno())
        self.packetizer.close()
        self.sock.close()

    def close(self) -> None:
        """End the connection from our side (ClientAliveCountMax, an attack)."""
        self._end(None)

    def may_send_data(self) -> bool:
        """May channel data be read and sent now?  Not during a key exchange,
        nor while the client is slow to take what was sent."""
        return (self.active and self.clear_to_send.is_set()
                and self.packetizer.backlog() < OUTPUT_HIGH_WATER)

    # --- sending ---------------------------------------------------------------------

    def _send_message(self, data) -> None:
        """Every packet of ours goes through here.  During a key exchange only
        the transport layer's messages go (the exchange's own, DISCONNECT,
        IGNORE, UNIMPLEMENTED); anything else (a channel's data, EOF and
        CLOSE, a reply, a WINDOW_ADJUST) waits in ``_held`` and goes, in
        order, once it is over, as RFC 4253 7.1 asks and OpenSSH's packet
        layer does (a strict client ends the connection on a CHANNEL_DATA
        amid the exchange).  Nothing overtakes what waits: a channel's data
        must arrive whole and in order, before its EOF and CLOSE."""
        if _message_type(data) in TRANSPORT_MESSAGES:
            super()._send_message(data)
        elif self.clear_to_send.is_set():
            self._release_held()
            super()._send_message(data)
        else:
            self._held.append(data)

    def send_channel_data(self, chan: Channel, data, stderr: bool = False) -> int:
        """A pump's read to the client: CHANNEL_DATA (EXTENDED_DATA for
        stderr) packets of the client's maximum size, as many as the window
        takes, with Channel.send's bookkeeping, no Message per packet, one
        write for all (SessionPacketizer.send_messages).  The bytes sent: 0
        once the channel is closed or its EOF sent.  While packets are held
        back (a key exchange), paramiko's Channel.send, queued behind them.
        A key exchange due starts first; one due amid them, before the rest."""
        self.rekey_if_due()
        if not (self.active and self.clear_to_send.is_set()) or self._held:
            return (chan.send_stderr if stderr else chan.send)(bytes(data))
        with chan.lock:
            if chan.closed or chan.eof_sent:
                return 0
            total = min(len(data), chan.out_window_size)
            chan.out_window_size -= total
            remote = chan.remote_chanid
            # paramiko's Channel.send keeps 64 bytes of the packet for headers
            step = max(chan.out_max_packet_size - 64, 1)
        view = memoryview(data)
        messages = []
        for at in range(0, total, step):
            piece = view[at:at + step]
            head = (_EXTENDED_HEAD.pack(MSG_CHANNEL_EXTENDED_DATA, remote, 1, len(piece)) if stderr
                    else _DATA_HEAD.pack(MSG_CHANNEL_DATA, remote, len(piece)))
            messages.append((head, piece))
        if messages:
            chan.lastused = time.monotonic()
            sent = self.packetizer.send_messages(messages)
            if sent < len(messages):
                self.rekey_if_due()
                for head, piece in messages[sent:]:
                    m = Message()
                    m.add_bytes(head + bytes(piece))
                    self._send_user_message(m)
        return total

    def _send_user_message(self, data) -> None:
        """paramiko's channels send through this; its thread would wait on
        clear_to_send, nobody waits here (``_send_message`` holds it)."""
        if not self.active:
            return  # paramiko drops a packet for a dead connection too
        self._send_message(data)

    def send_when_clear(self, m) -> None:
        """Send ``m`` now, or after the key exchange under way (WINDOW_ADJUST)."""
        self._send_user_message(m)

    def _release_held(self) -> None:
        if self._held and self.clear_to_send.is_set() and self.active:
            held, self._held = self._held, []
            for m in held:
                super()._send_message(m)

    def send_reply(self, m: Message) -> None:
        self._send_user_message(m)

    def _parse_newkeys(self, m) -> None:
        super()._parse_newkeys(m)
        self.kex_done_at = time.monotonic()
        self._release_held()  # before anything sent from now on

    def disconnect(self, text: str) -> paramiko.SSHException:
        """Log ``text`` and tell the client why the connection ends, as
        sshd's packet_disconnect does; the caller raises what this returns,
        which ends the connection."""
        if self.connection is not None:
            self.connection.protocol_error(text)
        try:
            self._send_message(disconnect_message(text))
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

    def _add_channel(self) -> WindowedChannel:
        """A new channel of ours, known to paramiko and kept until its CLOSE."""
        chanid = self._next_channel()
        chan = WindowedChannel(chanid)
        self._channels.put(chanid, chan)
        self.channels_seen[chanid] = True
        chan._set_transport(self)
        chan._set_window(self.default_window_size, self.default_max_packet_size)
        # Never wait for window in Channel.send: the loop reads no more than fits.
        chan.settimeout(0.0)
        self._live[chanid] = chan
        return chan

    def new_channel(self, peer: tuple[int, int, int], ctype: str = "session") -> Channel:
        """Confirm a client's CHANNEL_OPEN of type ``ctype``; the channel,
        ready for data.  A session's inactivity clock starts with its
        program; any other channel's now."""
        remote_id, window, max_packet = peer
        chan = self._add_channel()
        chan._set_remote_channel(remote_id, window, max_packet)
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN_SUCCESS)
        m.add_int(remote_id)
        m.add_int(chan.chanid)
        m.add_int(self.default_window_size)
        m.add_int(self.default_max_packet_size)
        self.send_reply(m)
        if ctype != "session":
            self.channel_opened(chan, ctype)
        return chan

    def live_channels(self) -> list[tuple[int, Channel]]:
        """Every channel not yet closed on both sides (UnusedConnectionTimeout)."""
        return list(self._live.items())

    def channel_opened(self, chan: Channel, ctype: str) -> None:
        """``chan`` is open as ``ctype`` (ChannelTimeout's clock starts)."""
        if self.channel_timeouts is not None:
            self.channel_timeouts.opened(chan, ctype)

    def refuse_channel(self, peer: tuple[int, int, int], reason: int, text: str) -> None:
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN_FAILURE)
        m.add_int(peer[0])
        m.add_int(reason)
        m.add_string(text)
        m.add_string("")
        self.send_reply(m)

    def open_channel_to_client(self, kind: str, fields: bytes,
                               on_open: Callable[[Channel | None], None]) -> None:
        """Open a channel of ``kind`` towards the client, ``fields`` following
        the common ones (forwarded-tcpip, forwarded-streamlocal, agent);
        ``on_open`` gets the channel when the client confirms it, or None."""
        if not self.active:
            raise paramiko.SSHException("SSH session not active")
        chan = self._add_channel()
        self._opening[chan.chanid] = on_open
        chan.ctype = SERVER_OPENED_TYPES.get(kind, kind)
        m = Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_OPEN)
        m.add_string(kind)
        m.add_int(chan.chanid)
        m.add_int(self.default_window_size)
        m.add_int(self.default_max_packet_size)
        m.add_bytes(fields)
        self._send_user_message(m)

    @staticmethod
    def _channel_of(m: Message) -> int:
        chanid = m.get_int()
        m.rewind()
        return chanid

    def _parse_channel_open_success(self, m: Message) -> None:
        chanid = self._channel_of(m)
        super()._parse_channel_open_success(m)
        on_open = self._opening.pop(chanid, None)
        chan = self._channels.get(chanid)
        if chan is not None and on_open is not None:
            self.channel_opened(chan, chan.ctype)
        if on_open is not None:
            on_open(chan)

    def _parse_channel_open_failure(self, m: Message) -> None:
        chanid = self._channel_of(m)
        saved = self.saved_exception
        super()._parse_channel_open_failure(m)
        self.saved_exception = saved  # a refused forward does not end the connection
        on_open = self._opening.pop(chanid, None)
        if on_open is not None:
            self._channels.delete(chanid)
            self._live.pop(chanid, None)
            on_open(None)

    def _queue_incoming_channel(self, channel: Channel) -> None:
        """Session channels are served through their requests; nobody calls
        accept(), so nothing is queued for it."""

    def _unlink_channel(self, chanid: int) -> None:
        chan = self._live.pop(chanid, None)
        super()._unlink_channel(chanid)
        if self.channel_timeouts is not None:
            self.channel_timeouts.gone(chanid)
        if chan is not None and chan.on_gone is not None:
            chan.on_gone()
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
            m.get_int()  # the channel id, read already by the dispatch
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
        MSG_CHANNEL_WINDOW_ADJUST: WindowedChannel.window_adjust,
    }


__all__ = ["SessionTransport", "WindowedChannel", "ReceiveWindow", "WindowVerdict", "OPEN_SUCCEEDED",
           "OPEN_ADMINISTRATIVELY_PROHIBITED", "OPEN_CONNECT_FAILED", "OPEN_UNKNOWN_CHANNEL_TYPE",
           "OPEN_RESOURCE_SHORTAGE"]
