"""The broker side of the device's connection: who may connect, what each
identity may reach, revocation, and the TLS configuration a scanner sees.

They probe the lab broker the run started (the `sbd_broker` fixture) with
host identities the lab CA issues for the purpose, never the device's own.
"""
from __future__ import annotations

import socket
import ssl
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.broker import BROKER_HOSTNAME, MONITOR
from sbd_harness.lab.watch import Watcher

ACK_S = 10  # for the broker's acknowledgement of a subscription or a message, and for its delivery

def _connect_packet(client_id: str = "sbdprobe") -> bytes:
    """An MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s, with this client ID."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


def _try_connect(broker, ca_path: Path, cert_pem: bytes | None = None, key_pem: bytes | None = None,
                 client_id: str = "sbdprobe", hold: float = 0) -> str:
    """'accepted' when the broker answers CONNECT with CONNACK 0; otherwise what happened.
    An accepted connection is held open `hold` seconds before it is closed."""
    ctx = ssl.create_default_context(cafile=str(ca_path))
    with tempfile.TemporaryDirectory() as tmp:
        if cert_pem:
            (Path(tmp) / "c.pem").write_bytes(cert_pem)
            (Path(tmp) / "k.pem").write_bytes(key_pem or b"")
            ctx.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
    try:
        with socket.create_connection((broker.address, broker.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=BROKER_HOSTNAME) as tls:
            tls.sendall(_connect_packet(client_id))
            answer = tls.recv(4)
            if answer == b"\x20\x02\x00\x00" and hold:
                time.sleep(hold)
    except (ssl.SSLError, OSError) as exc:
        return f"refused ({type(exc).__name__}: {str(exc)[:80]})"
    if answer == b"\x20\x02\x00\x00":
        return "accepted"
    return f"refused (answer {answer!r})"


def _suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.mark.sbd_check(
    id="broker-requires-client-certificate",
    title="The broker lets in a client with a lab certificate, and no client without one or with a foreign one")
def check_broker_requires_certificate(sbd_broker, sbd_ca, sbd_evidence):
    with tempfile.TemporaryDirectory() as tmp:
        foreign = LabCA(tmp)
        foreign.init("another CA")
        outcomes = {
            "lab certificate": _try_connect(sbd_broker, sbd_ca.cert_path, *sbd_ca.issue_client(f"probe-{_suffix()}")),
            "no certificate": _try_connect(sbd_broker, sbd_ca.cert_path),
            "foreign CA's certificate": _try_connect(sbd_broker, sbd_ca.cert_path,
                                                     *foreign.issue_client(f"probe-{_suffix()}")),
        }
    sbd_evidence["outcomes"] = outcomes
    assert outcomes["lab certificate"] == "accepted", f"the broker refused a lab client: {outcomes}"
    let_in = [k for k, v in outcomes.items() if k != "lab certificate" and v == "accepted"]
    assert not let_in, f"the broker let in a client with {let_in}"


@pytest.mark.sbd_check(
    id="broker-refuses-revoked-certificates",
    title="Once the lab CA revokes a certificate and the broker reloads the CRL, that identity is refused")
def check_broker_revocation(sbd_broker, sbd_ca, sbd_evidence):
    from cryptography import x509
    cert, key = sbd_ca.issue_client(f"revoked-{_suffix()}")
    before = _try_connect(sbd_broker, sbd_ca.cert_path, cert, key)
    sbd_ca.revoke_serial(x509.load_pem_x509_certificate(cert).serial_number)
    sbd_broker.reload_crl()
    after = _try_connect(sbd_broker, sbd_ca.cert_path, cert, key)
    sbd_evidence.update({"before_revocation": before, "after_revocation": after})
    assert before == "accepted", f"the identity was refused even before it was revoked: {before}"
    assert after != "accepted", "the broker still accepts a revoked certificate"


@pytest.mark.sbd_check(
    id="broker-confines-each-identity",
    title="An identity can read and write its own topic tree only, not another device's, whatever its name, "
          "and cannot take over another's connection")
def check_broker_acl(sbd_broker, sbd_ca, sbd_evidence):
    a, b, c = f"acl-a-{_suffix()}", f"acl-b-{_suffix()}", f"acl-c-{_suffix()}"
    with Watcher(sbd_broker, "#", identity=a) as wa, Watcher(sbd_broker, f"devices/{b}/#", identity=b) as wb, \
            Watcher(sbd_broker, "devices/#", identity=MONITOR) as wm:
        # wm: a certificate named like the lab's monitor, on the devices' port, as a device could
        # have got one from a CA that checked names less: it must be confined like any other
        assert all(w.wait_subscribed(ACK_S) for w in (wa, wb, wm)), "the broker did not acknowledge a subscription"
        wa.subscribe([(f"devices/{b}/#", 1), ("devices/#", 1), (f"devices/{a}/#", 1)], ACK_S)
        # One message at a time, each acknowledged (taken and routed by the broker) before the next.
        wb.publish(f"devices/{b}/telemetry", b'{"secret": "of b"}', acked=ACK_S)
        wa.publish(f"devices/{a}/telemetry", b"a's own", acked=ACK_S)
        wa.publish(f"devices/{b}/cmd", b"from a, into b's tree", acked=ACK_S)
        wm.publish(f"devices/{b}/cmd", b"from the monitor's name, into b's tree", acked=ACK_S)
        wb.publish(f"devices/{b}/telemetry", b"b's own, last", acked=ACK_S)
        # Each identity's own last message reaches it after anything routed to it before: once both
        # have theirs, whatever the ACL let through has arrived too.
        # one deadline for both: a broker that routes nothing fails in ACK_S, not twice that
        deadline = time.monotonic() + ACK_S
        own_a = next(iter(wa.seen(lambda m: m.topic == f"devices/{a}/telemetry")), None) or \
            wa.wait_for(lambda m: m.topic == f"devices/{a}/telemetry", deadline - time.monotonic())
        own_b = next(iter(wb.seen(lambda m: m.payload == b"b's own, last")), None) or \
            wb.wait_for(lambda m: m.payload == b"b's own, last", deadline - time.monotonic())
        a_saw = [(m.topic, m.payload.decode(errors="replace")) for m in wa.all]
        b_saw = [(m.topic, m.payload.decode(errors="replace")) for m in wb.all]
        m_saw = [(m.topic, m.payload.decode(errors="replace")) for m in wm.all]
        # c connects with a's client ID: the broker must not drop a for it
        dropped_before = wa.disconnects
        takeover = _try_connect(sbd_broker, sbd_ca.cert_path, *sbd_ca.issue_client(c), client_id=a, hold=1.5)
        a_dropped = wa.disconnects - dropped_before
    sbd_evidence["own_messages_back"] = {"a": own_a is not None, "b": own_b is not None}
    sbd_evidence.update({"a": a, "b": b, "a_received": a_saw, "b_received": b_saw,
                         f"{MONITOR}_on_the_devices_port_received": m_saw,
                         "takeover": {"identity": c, "client_id": a, "outcome": takeover, "a_dropped": a_dropped}})
    assert (f"devices/{a}/telemetry", "a's own") in a_saw, "an identity cannot even use its own topics"
    leaked = [t for t, _ in a_saw if not t.startswith(f"devices/{a}/")]
    assert not leaked, f"{a} read another identity's topics: {leaked}"
    injected = [p for t, p in b_saw if "from a" in p]
    assert not injected, f"{a} published into {b}'s topic tree"
    monitor_leaked = [t for t, _ in m_saw if not t.startswith(f"devices/{MONITOR}/")]
    monitor_injected = [p for t, p in b_saw if "monitor" in p]
    assert not (monitor_leaked or monitor_injected), (
        f"on the devices' port a certificate named {MONITOR} read {monitor_leaked} and published into {b}'s "
        f"tree {monitor_injected}: the monitor's rights rest on a CN alone")
    assert not a_dropped, (f"{c} connected with {a}'s client ID ({takeover}) and the broker dropped {a}: "
                           "client IDs are not bound to certificates")


@pytest.mark.sbd_check(
    id="broker-tls-configuration",
    title="A TLS scanner (sslyze) finds the broker compliant with Mozilla's 'intermediate' configuration")
def check_broker_tls_scan(sbd_broker, sbd_ca, sbd_evidence):
    from sbd_harness.lab import tls_scan
    if tls_scan.find_sslyze() is None:
        pytest.skip("sslyze is not installed (make setup installs it; or pipx install sslyze)")
    cert, key = sbd_ca.issue_client(f"scanner-{_suffix()}")
    result = tls_scan.scan(sbd_broker.address, sbd_broker.port, cert, key, BROKER_HOSTNAME,
                           ca_cert_pem=sbd_ca.cert_path.read_bytes())
    sbd_evidence.update({"tls_versions": result.tls_versions, "cipher_suites": result.cipher_suites,
                         "problems": result.problems})
    assert result.compliant, f"not Mozilla-intermediate compliant: {result.problems}"
