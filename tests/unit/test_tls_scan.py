"""The broker's TLS configuration passes a real scanner (sslyze,
Mozilla "intermediate"), and the same scan fails a deliberately weakened
broker, so the pass is the configuration's doing and not the scanner's.

Not skipped without sslyze: `make setup` installs it, and a missing scanner
must not read as a passing broker."""
from __future__ import annotations

import socket
from typing import Iterator

import pytest

from sbd_harness.lab.broker import BROKER_HOSTNAME, Broker
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.tls_scan import ScanResult, TLSScanError, find_sslyze, scan

# TLS 1.2 suites the broker may offer: ECDHE key exchange, AEAD encryption.
AEAD = ("_GCM_", "_CHACHA20_POLY1305_")


@pytest.fixture(scope="module")
def sslyze() -> str:
    exe = find_sslyze()
    if exe is None:
        pytest.fail("sslyze not found: run `make setup` (it installs .venv/tools/sslyze) "
                    "or set SBD_SSLYZE to an sslyze program", pytrace=False)
    return exe


def _scan(broker: Broker, ca: LabCA, sslyze: str) -> ScanResult:
    cert, key = ca.issue_client("sslyze-scanner")
    return scan(broker.address, broker.port, cert, key, BROKER_HOSTNAME,
                ca_cert_pem=ca.cert_path.read_bytes(), sslyze=sslyze)


@pytest.fixture(scope="module")
def reference(ca, sslyze) -> Iterator[ScanResult]:
    with Broker(ca) as broker:
        yield _scan(broker, ca, sslyze)


def test_reference_broker_is_mozilla_intermediate_compliant(reference: ScanResult):
    assert reference.compliant, f"sslyze {reference.sslyze_version} on {reference.target}: {reference.problems}"
    assert reference.problems == []
    assert reference.incomplete == []


def test_reference_broker_accepts_only_tls12_and_tls13(reference: ScanResult):
    assert "TLSv1.2" in reference.tls_versions
    for old in ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"):
        assert old not in reference.tls_versions, reference.accepted


def test_reference_broker_tls12_suites_are_ecdhe_aead(reference: ScanResult):
    suites = reference.accepted["TLSv1.2"]
    assert suites
    weak = [s for s in suites if "_ECDHE_" not in s or not any(a in s for a in AEAD)]
    assert weak == [], f"non-ECDHE or non-AEAD TLS 1.2 suites accepted: {weak}"


def test_weak_tls_broker_is_not_compliant(ca, sslyze):
    with Broker(ca, flaws=["weak-tls"]) as broker:
        result = _scan(broker, ca, sslyze)
    assert not result.compliant
    assert "TLSv1.1" in result.tls_versions, result.problems
    assert any(p.startswith("tls_versions:") and "TLSv1.1" in p for p in result.problems), result.problems
    assert any(p.startswith("ciphers:") and "CBC" in p for p in result.problems), result.problems


def test_scan_of_closed_port_raises(ca, sslyze):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cert, key = ca.issue_client("sslyze-scanner")
    with pytest.raises(TLSScanError, match="could not connect"):
        scan("127.0.0.1", port, cert, key, BROKER_HOSTNAME, sslyze=sslyze)
