"""The receive window the session process holds a client to
(privsep/session_transport.ReceiveWindow): pure tests, no processes.

The same packets against both daemons are in
tests/test_session_requests.py::test_window_overrun_is_dropped.
"""

from __future__ import annotations

from privsep.session.transport import ReceiveWindow, WindowVerdict

WINDOW, MAX_PACKET = 64 * 32768, 32768


def test_data_within_the_window_is_counted() -> None:
    window = ReceiveWindow(WINDOW, MAX_PACKET)
    assert window.receive(MAX_PACKET) is WindowVerdict.ACCEPT
    assert window.left == WINDOW - MAX_PACKET


def test_a_packet_over_the_maximum_size_is_dropped_uncounted() -> None:
    window = ReceiveWindow(WINDOW, MAX_PACKET)
    assert window.receive(MAX_PACKET + 1) is WindowVerdict.BIG_PACKET
    assert window.left == WINDOW


def test_the_whole_window_then_nothing_more() -> None:
    window = ReceiveWindow(WINDOW, MAX_PACKET)
    verdicts = [window.receive(MAX_PACKET) for _ in range(WINDOW // MAX_PACKET + 3)]
    assert verdicts.count(WindowVerdict.ACCEPT) == WINDOW // MAX_PACKET
    assert verdicts[-3:] == [WindowVerdict.TOO_MUCH] * 3
    assert window.left == 0


def test_a_packet_larger_than_what_is_left_is_dropped_whole() -> None:
    """As sshd: no partial acceptance of a packet that does not fit."""
    window = ReceiveWindow(100, MAX_PACKET)
    assert window.receive(60) is WindowVerdict.ACCEPT
    assert window.receive(50) is WindowVerdict.TOO_MUCH
    assert window.left == 40
    assert window.receive(40) is WindowVerdict.ACCEPT


def test_a_grant_opens_the_window_again() -> None:
    window = ReceiveWindow(WINDOW, MAX_PACKET)
    while window.receive(MAX_PACKET) is WindowVerdict.ACCEPT:
        pass
    window.grant(2 * MAX_PACKET)
    assert window.receive(MAX_PACKET) is WindowVerdict.ACCEPT
    assert window.receive(MAX_PACKET) is WindowVerdict.ACCEPT
    assert window.receive(1) is WindowVerdict.TOO_MUCH
