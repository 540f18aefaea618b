"""How much the session process reads from a program at once
(privsep/session/programs._output_read_size): pure tests, no processes.  The client
names the maximum packet size; the read follows it within bounds."""

from __future__ import annotations

from types import SimpleNamespace

from privsep.session.programs import _output_read_size


def read_size(client_max_packet: int) -> int:
    return _output_read_size(SimpleNamespace(out_max_packet_size=client_max_packet))


def test_two_full_packets_of_the_openssh_client() -> None:
    # 32768 announced, paramiko fills 32704 of it: a 64 KiB pipe in two packets
    assert read_size(32768) == 2 * 32704


def test_a_client_announcing_four_gigabytes_gets_a_bounded_read() -> None:
    assert read_size(2**32 - 1) == 256 * 1024


def test_a_tiny_maximum_packet_still_reads_something() -> None:
    assert read_size(1) == 2 * 1024
