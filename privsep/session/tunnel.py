"""``ssh -w``: tun@openssh.com channels, a tun or tap device joined to a
channel packet by packet, in the session process's event loop.

Runs in the post-auth session process, as the user.  The request is checked
as sshd's server_request_tun checks it, with sshd's debug messages to the
client (``ssh -v`` shows them as "Remote: ..."); the device is opened by the
monitor with the user's rights (monitor/tun.py) and its descriptor comes
back over the monitor socket, as a pty's does.

A tunnel channel carries datagrams: one device packet is one CHANNEL_DATA,
never split.  A packet that does not fit the client's window or maximum
packet size is dropped, as sshd drops it ("datagram too big"), and so is one
the device does not take at once: IP copes with loss, not with a stalled
session loop.  Point-to-point packets carry OpenSSH's 4-byte address-family
header on the channel (wire/tunnel.py).
"""

from __future__ import annotations

import logging
import os
import socket

import paramiko
from paramiko.common import cMSG_DEBUG
from paramiko.message import Message

from privsep.child.monitor_client import MonitorClient
from privsep.session.loop import EventLoop
from privsep.session.stdin import StdinSink
from privsep.session.transport import OPEN_CONNECT_FAILED, SessionTransport
from privsep.wire import tunnel

log = logging.getLogger("privsep.session")

#: One read from the device: the largest tun/tap packet (64 KiB MTU) fits.
_READ_SIZE = 65536 + 64
#: The most packets read from the device in one wake-up of the loop.
_BURST = 32
#: paramiko keeps this much of the client's maximum packet for the header.
_PACKET_OVERHEAD = 64


class Tunnels:
    """The connection's tunnels: opened on request, named in SSH_TUNNEL."""

    def __init__(self, loop: EventLoop, transport: SessionTransport, monitor: MonitorClient,
                 permit_tunnel: str, forced_unit: int | None) -> None:
        self.loop, self.transport, self.monitor = loop, transport, monitor
        self.permit_tunnel = permit_tunnel
        self.forced_unit = forced_unit
        #: interfaces forwarded so far, in order (sshd's tun_fwd_ifnames)
        self.ifnames: list[str] = []

    def _send_debug(self, text: str) -> None:
        """SSH_MSG_DEBUG, not always displayed: ssh -v prints it."""
        m = Message()
        m.add_byte(cMSG_DEBUG)
        m.add_boolean(False)
        m.add_string(text)
        m.add_string("")
        self.transport.send_reply(m)

    def _refuse(self, peer, debug: str) -> None:
        self._send_debug(debug)
        self.transport.refuse_channel(peer, OPEN_CONNECT_FAILED, "open failed")

    def open(self, peer, m: Message) -> None:
        """A client's CHANNEL_OPEN of tun@openssh.com (``m`` after the
        common fields): a tunnel channel, or sshd's refusal."""
        mode = m.get_int()
        if not tunnel.mode_known(mode):
            self._refuse(peer, "Unsupported tunnel device mode.")
            return
        if not tunnel.mode_permitted(self.permit_tunnel, mode):
            self._refuse(peer, "Server has rejected tunnel device forwarding")
            return
        requested = m.get_int()
        if requested > tunnel.TUNID_ANY:
            log.debug("server_request_tun: invalid tun")
        unit = tunnel.unit_to_open(requested, self.forced_unit)
        opened = self.monitor.tun(mode, unit) if unit is not None else None
        if not isinstance(opened, tuple):
            self._refuse(peer, "Failed to open the tunnel device.")
            return
        ifname, fd = opened
        log.debug("Tunnel forwarding using interface %s", ifname)
        try:
            chan = self.transport.new_channel(peer)
        except (OSError, EOFError, paramiko.SSHException):
            os.close(fd)
            return
        TunnelSplice(self.loop, chan, fd, mode)
        self.ifnames.append(ifname)


class TunnelSplice(StdinSink):
    """One device and one channel, packet by packet, both ways.  The sink
    half (client to device) is a StdinSink whose every delivery is one
    whole packet; the other half reads the device while the window has room."""

    def __init__(self, loop: EventLoop, chan: paramiko.Channel, fd: int, mode: int) -> None:
        super().__init__(loop, chan, fd, close_on_eof=False)
        self.pointopoint = mode == tunnel.MODE_POINTOPOINT
        self.closed = False
        loop.add_reader(fd, self._readable, when=self._may_read)
        chan.on_gone = self.close
        chan.attach_sink(self)

    # --- client to device --------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if not self._done:
            packet = tunnel.from_channel(data) if self.pointopoint else data
            if packet:
                self._write_packet(packet)
        self._consumed(len(data))  # written or dropped, the window opens again

    def prepend(self, data: bytes) -> None:
        """Nothing arrives before the sink: it is attached as the channel opens."""

    def _write_packet(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except (BlockingIOError, InterruptedError):
            pass  # the device's queue is full: lost, as a datagram may be
        except OSError as exc:  # a malformed packet (EINVAL), a device gone (EIO)
            log.debug("channel %d: tun write: %s", self.chan.chanid, exc.strerror)

    # --- device to client --------------------------------------------------------

    def _may_read(self) -> bool:
        if self.chan.closed:
            return True  # read once more, to notice and end
        return self.chan.out_window_size > 0 and self.chan.transport.may_send_data()

    def _readable(self) -> None:
        """Up to a burst of packets per wake-up: the device queues many
        between two waits, and one wait per packet would cost more than
        the packet."""
        if self.chan.closed or self.chan.eof_sent:
            self.close()
            return
        for _ in range(_BURST):
            if self.closed or not self._read_packet() or not self._may_read():
                return

    def _read_packet(self) -> bool:
        """One packet from the device to the channel; False when the device
        had none or the tunnel ended."""
        try:
            packet = os.read(self.fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # the interface was deleted under us
            log.debug("channel %d: tun read: %s", self.chan.chanid, exc.strerror)
            self._close_channel()
            return False
        data = tunnel.to_channel(packet) if self.pointopoint else packet
        if not data:
            return True
        if len(data) > self.chan.out_window_size or \
                len(data) > self.chan.out_max_packet_size - _PACKET_OVERHEAD:
            log.debug("channel %d: datagram too big", self.chan.chanid)
            return True
        try:
            self.chan.send(data)
        except (OSError, EOFError, socket.timeout, paramiko.SSHException):
            self._close_channel()
            return False
        return True

    # --- the end -----------------------------------------------------------------

    def _close_channel(self) -> None:
        try:
            self.chan.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self.close()

    def close(self) -> None:
        """The channel is gone (or failed): let go of the device, whose
        interface disappears with its last descriptor unless persistent."""
        if self.closed:
            return
        self.closed = True
        self.stop()
        self.loop.forget(self.fd)
        os.close(self.fd)
