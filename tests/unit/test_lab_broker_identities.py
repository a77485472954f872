"""The lab broker does not let a certificate's name stand for more than it is:
on the devices' port a client ID is the certificate's CN (no identity can knock
another off), a certificate named like the lab monitor is confined like any
other, and on the lab port only the monitor's whole subject (a lab identity)
reaches every device. A broker started with a CRL written long ago refreshes it,
and the revocation dates stay as recorded.

mosquitto on the host's loopback (or the lab bridge), no board."""
from __future__ import annotations

import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from sbd_harness.checks.check_lab_broker import _try_connect
from sbd_harness.identity import pki
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.broker import Broker


class Client:
    """A paho client with a given certificate, counting how often it was dropped."""

    def __init__(self, ca: LabCA, address: str, port: int, client_id: str, cert: bytes, key: bytes):
        self.received: list[tuple[str, bytes]] = []
        self.dropped = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.reconnect_delay_set(0.2, 1)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "c.pem").write_bytes(cert)
            (Path(tmp) / "k.pem").write_bytes(key)
            self.c.tls_set(ca_certs=str(ca.cert_path), certfile=f"{tmp}/c.pem", keyfile=f"{tmp}/k.pem")
        self.c.on_message = lambda c, u, m: self.received.append((m.topic, bytes(m.payload)))
        self.c.on_disconnect = self._dropped
        self.c.connect(address, port, keepalive=30)
        self.c.loop_start()

    def _dropped(self, *args: object) -> None:
        self.dropped += 1

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _bare(ca: LabCA, cn: str) -> tuple[bytes, bytes]:
    """A client certificate whose subject is `CN=<cn>` alone, as a device's is: what a CA that
    checked names less could have issued to a board that reported `cn` as its ID."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca._leaf(cn, key.public_key(), 1, [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)])
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.fixture(scope="module")
def broker(ca) -> Iterator[Broker]:
    with Broker(ca) as b:
        yield b


def test_a_second_identity_with_the_firsts_client_id_does_not_knock_it_off(broker, ca):
    a, c = _name("acl-a"), _name("acl-c")
    first = Client(ca, broker.address, broker.port, a, *ca.issue_client(a))
    try:
        time.sleep(0.5)
        second = Client(ca, broker.address, broker.port, a, *ca.issue_client(c))  # a's client ID, c's certificate
        time.sleep(2)
        second.close()
        assert first.dropped == 0, f"{c} connected with {a}'s client ID and the broker dropped {a}"
    finally:
        first.close()


def test_a_certificate_named_like_the_monitor_is_confined_on_the_devices_port(broker, ca):
    b = _name("acl-b")
    for named_monitor in (ca.issue_client("sbd-monitor"), _bare(ca, "sbd-monitor")):
        spy = Client(ca, broker.address, broker.port, "spy", *named_monitor)
        other = Client(ca, broker.address, broker.port, b, *ca.issue_client(b))
        try:
            spy.c.subscribe("devices/#", 1)
            time.sleep(0.5)
            other.c.publish(f"devices/{b}/telemetry", b"of b", qos=1)
            time.sleep(1)
            assert spy.received == [], f"a certificate named sbd-monitor read {spy.received}"
        finally:
            spy.close()
            other.close()


def test_only_the_monitors_lab_subject_reaches_every_device_on_the_lab_port(broker, ca):
    b = _name("acl-b")
    monitor = broker.monitor()
    seen: list[str] = []
    monitor.on_message = lambda c, u, m: seen.append(m.topic)
    monitor.loop_start()
    bare = Client(ca, broker.monitor_address, broker.monitor_port, "bare-monitor", *_bare(ca, "sbd-monitor"))
    device = Client(ca, broker.monitor_address, broker.monitor_port, "aabbccddeeff", *_bare(ca, "aabbccddeeff"))
    other = Client(ca, broker.address, broker.port, b, *ca.issue_client(b))
    try:
        for c in (monitor, bare.c, device.c):
            c.subscribe("devices/#", 1)
        time.sleep(0.5)
        other.c.publish(f"devices/{b}/telemetry", b"of b", qos=1)
        time.sleep(1)
        assert seen == [f"devices/{b}/telemetry"], "the monitor does not see the devices"
        assert bare.received == [] and device.received == [], \
            "a certificate without the lab's subject read devices' topics on the lab port"
    finally:
        monitor.loop_stop()
        monitor.disconnect()
        for c in (bare, device, other):
            c.close()


def test_a_broker_start_refreshes_a_crl_written_long_ago_and_keeps_its_revocation_dates(tmp_path, monkeypatch):
    real_now = pki._now()
    long_ago = real_now - dt.timedelta(days=40)
    monkeypatch.setattr(pki, "_now", lambda: long_ago)
    ca = LabCA(tmp_path / "pki")
    ca.init()
    revoked_cert, revoked_key = ca.issue_client("revoked-long-ago", days=365)
    serial = x509.load_pem_x509_certificate(revoked_cert).serial_number
    ca.revoke_serial(serial)
    broker = Broker(ca)
    broker.write_config()  # the broker was set up then, with the CRL of then
    monkeypatch.setattr(pki, "_now", lambda: real_now)
    assert x509.load_pem_x509_crl((broker.dir / "crl.pem").read_bytes()).next_update_utc < real_now
    broker.start()
    try:
        assert _try_connect(broker, ca.cert_path, *ca.issue_client("probe-now")) == "accepted"
        assert _try_connect(broker, ca.cert_path, revoked_cert, revoked_key) != "accepted"
    finally:
        broker.stop(remove=True)
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.next_update_utc > real_now
    revoked = crl.get_revoked_certificate_by_serial_number(serial)
    assert abs(revoked.revocation_date_utc - long_ago) < dt.timedelta(seconds=2), revoked.revocation_date_utc


def test_two_watchers_of_one_process_do_not_knock_each_other_off(broker):
    """The harness opens several monitors at once (a check's watcher beside a transfer's): each
    non-persistent one has a client ID of its own, or the broker would drop one for the other,
    over and over, as each reconnects."""
    from sbd_harness.lab.watch import Watcher
    topic = f"devices/{_name('w')}"
    with Watcher(broker, topic + "/#") as first, Watcher(broker, topic + "/#") as second:
        assert first.wait_subscribed(10) and second.wait_subscribed(10)
        time.sleep(1.0)  # long enough for paho to have reconnected a dropped one
        first.publish(topic + "/telemetry", b"one", acked=10)
        assert second.wait_for(lambda m: m.payload == b"one", 5) is not None
        assert first.wait_for(lambda m: m.payload == b"one", 5) is not None
        assert first.disconnects == 0 and second.disconnects == 0, (first.disconnects, second.disconnects)
        assert first.client._client_id != second.client._client_id
