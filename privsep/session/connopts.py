"""What the session process does to the connection itself, as sshd's
packet.c does: the IPQoS marking once the first program starts, and an
SSH_MSG_DEBUG to the client (ssh -v shows it as "Remote: ...")."""

from __future__ import annotations

import logging
import socket

import paramiko
from paramiko.common import cMSG_DEBUG

from privsep.config.otherkeys import IPQOS_NONE

log = logging.getLogger("privsep.session")


def set_ip_qos(sock: socket.socket, tos: int) -> None:
    """IP_TOS on IPv4, IPV6_TCLASS on IPv6 (sshd's set_sock_tos); "none"
    leaves the socket as it is."""
    if tos == IPQOS_NONE:
        return
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
        elif sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    except OSError as exc:
        log.debug("set_sock_tos: setsockopt TOS %d: %s", tos, exc.strerror)


def send_debug(transport: paramiko.Transport, text: str) -> None:
    """sshd's ssh_packet_send_debug: logged at DEBUG1 and told the client."""
    log.debug("%s", text)
    m = paramiko.Message()
    m.add_byte(cMSG_DEBUG)
    m.add_boolean(False)
    m.add_string(text)
    m.add_string("")
    try:
        transport._send_user_message(m)
    except Exception as exc:  # the client went away: nothing to tell
        log.debug("debug message not sent: %s", exc)
