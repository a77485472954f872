"""The port scan's retry passes: silent ports are tried again, more patiently, except a listener
the policy expects to keep quiet (the DHCP client), which would only cost seconds each run."""
from __future__ import annotations

import socket

from sbd_harness.lab import surface


def test_a_silent_port_is_tried_again_unless_its_silence_is_expected(monkeypatch):
    passes: list[list[int]] = []
    real = surface._probe_pass

    def recording(ports, *args):
        ports = list(ports)
        passes.append(ports)
        return real(ports, *args)

    monkeypatch.setattr(surface, "_probe_pass", recording)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as expected:
        quiet.bind(("127.0.0.1", 0))  # bound, never answers: silent
        expected.bind(("127.0.0.1", 0))
        q, e = quiet.getsockname()[1], expected.getsockname()[1]
        result = surface.probe_udp("127.0.0.1", [q, e], timeout=0.2, retries=2, expected_silent={e})
    assert passes[0] == [q, e]
    assert passes[1:] == [[q], [q]]  # the expected one is not waited on twice more
    assert result.unanswered == sorted([q, e])  # both are still reported silent
