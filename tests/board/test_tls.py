"""The device's mutual-TLS client against the lab's
mosquitto, and rogue brokers it must refuse; variants with verification
weakened show each refusal is the client's doing."""
from __future__ import annotations

import socket
import ssl

import pytest

from sbd_harness.boards import lifecycle
from sbd_harness.boards.serial_board import SerialBoard
from sbd_harness.lab.broker import BROKER_HOSTNAME, Broker, lab_address
from sbd_harness.lab.rogue import KINDS, RogueBroker
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.mistakes import build_variant

CONNECT = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04" + b"abcd"
CONNECT_CODE = """
from sbd import clock, config, tls
c = config.load()
clock.sync(c["ntp_host"], c["ntp_port"])  # the clock starts in 2000: set it as the link does, from the lab's NTP
try:
    s = tls.connect({addr!r}, {port}, {host!r})
    s.write({connect!r})
    print('CONNACK', s.read(4))
    s.close()
except tls.TLSError as e:
    print('REFUSED', e)
"""


def _device(make_board, ca, firmware=None):
    board = make_board("tls")
    lifecycle.flashed(board, firmware)
    return board, lifecycle.provisioned(board, ca, lock=False)  # console left open: the test drives the client


def _connect(board, addr: str, port: int, host: str = BROKER_HOSTNAME) -> str:
    """The device's TLS client, run after a soft reset: on the heap a boot leaves, not on the one
    provisioning's key generation fragmented in the same REPL session (the TLS context needs 3 KiB
    in one piece)."""
    code = CONNECT_CODE.format(addr=addr, port=port, host=host, connect=CONNECT)
    return SerialBoard(board.port).exec(code, timeout=30, soft_reset=True).strip()


def test_device_reaches_the_lab_broker_over_mutual_tls(make_board, ca):
    board, result = _device(make_board, ca)
    with Broker(ca) as broker:
        out = _connect(board, broker.address, broker.port)
        log = broker.log_path.read_text()
    assert out == r"CONNACK b' \x02\x00\x00'", out
    assert f"u'{result.device_id}'" in log, "the broker took the certificate CN as the username"


def test_broker_refuses_a_client_without_a_certificate(ca):
    with Broker(ca) as broker:
        ctx = ssl.create_default_context(cafile=str(ca.cert_path))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with socket.create_connection((broker.address, broker.port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=BROKER_HOSTNAME) as tls:
                tls.write(CONNECT)
                assert tls.read(4) == b""  # TLS 1.3 reports the refusal on the first read
                raise ConnectionError("closed without CONNACK")


@pytest.fixture(scope="module")
def reference_device(tmp_path_factory, ca):
    import uuid
    from sbd_harness.boards.emulated import EmulatedBoard
    board = EmulatedBoard(f"tlsref-{uuid.uuid4().hex[:6]}")
    board.start()
    lifecycle.flashed(board)
    lifecycle.provisioned(board, ca, lock=False)
    yield board
    board.remove()


@pytest.mark.parametrize("kind", KINDS)
def test_device_refuses_a_rogue_broker(reference_device, ca, kind):
    with RogueBroker(kind, ca, lab_address()) as rogue:
        out = _connect(reference_device, rogue.address, rogue.port)
    assert out.startswith("REFUSED"), out
    assert rogue.received == b"", "the device sent data to a broker it should have refused"


def test_device_trusts_a_revoked_broker_certificate(reference_device, ca):
    """What remains (docs/mqtt.md, revoked broker certificates): the device does not check
    revocation, so a broker certificate the lab CA revoked still gets its MQTT CONNECT until it
    expires; the lab's broker certificates live a day (rogue-brokers-refused holds the broker to it)."""
    with RogueBroker("revoked", ca, lab_address()) as rogue:
        _connect(reference_device, rogue.address, rogue.port)
    assert rogue.revoked_serial in ca.index()["revoked"]
    assert rogue.received.startswith(b"\x10"), rogue.received


@pytest.mark.parametrize("variant, kind", [
    ("no-cert-verification", "self-signed"),
    ("no-cert-verification", "other-ca"),
    ("no-cert-verification", "wrong-host"),
    ("no-cert-verification", "expired"),
])
def test_a_weakened_client_falls_for_the_rogue(make_board, ca, tmp_path, variant, kind):
    board, _ = _device(make_board, ca, FirmwareBundle.from_dir(build_variant(variant, tmp_path / "fw")))
    with RogueBroker(kind, ca, lab_address()) as rogue:
        out = _connect(board, rogue.address, rogue.port)
    assert rogue.received.startswith(b"\x10"), (out, rogue.received)


def test_the_device_refuses_tls_with_an_unset_clock(reference_device, ca):
    code = ("import time\nfrom sbd import clock, tls\nclock.time = type('T', (), {'gmtime': staticmethod(lambda: "
            "(2000, 1, 1, 0, 0, 0, 5, 1))})\ntry:\n tls.connect('127.0.0.1', 1, 'x')\nexcept tls.TLSError as e:\n print(e)")
    assert SerialBoard(reference_device.port).exec(code).strip() == "clock not set"
