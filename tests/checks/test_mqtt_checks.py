"""The broker and network checks of `sbd verify` pass on the
reference firmware and the lab broker, and each fails against a firmware
variant or a broker flaw made to break it."""
from __future__ import annotations

import json
import subprocess
import sys
from helpers import BROKER_CHECKS, DEVICE_NETWORK_CHECKS, only, verify_report

import pytest

from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release.mistakes import build_variant

NETWORK_CHECKS = DEVICE_NETWORK_CHECKS


def _verify(board, ca, tmp_path, port: int, *extra: str) -> tuple[int, dict[str, str], dict]:
    code, data = verify_report(board, ca, tmp_path / f"report-{board.name}.json", *extra, port=port)
    return code, {c["id"]: c["status"] for c in data["checks"]}, data


def _check(report: dict, check_id: str) -> dict:
    return next(c for c in report["checks"] if c["id"] == check_id)


@pytest.mark.parametrize("variant, failing, selector, reason", [
    ("silent-telemetry", "telemetry-over-mutual-tls", "check_telemetry", "no telemetry"),
    ("no-cert-verification", "rogue-brokers-refused", "check_rogue", "self-signed"),
    ("no-backoff", "outages-lose-nothing", "check_outages", "backoff"),
    ("volatile-outbox", "outages-lose-nothing", "check_outages", "lost"),
    ("crash-on-bad-packet", "hostile-broker-fuzzing-survived", "check_hostile", "restarted"),
    ("unsigned-commands", "invalid-commands-refused-over-mqtt", "check_invalid", "accepted"),
])
def test_a_network_check_fails_on_the_variant_broken_for_it(locked_board, ca, tmp_path, variant, failing,
                                                             selector, reason):
    port = free_port(lab_address())
    board = locked_board(build_variant(variant, tmp_path / "fw"), port)
    code, status, report = _verify(board, ca, tmp_path, port, "--firmware", str(tmp_path / "fw"), *only(failing))
    assert status[failing] == "fail", json.dumps(_check(report, failing), indent=1)[-3000:]
    assert reason in _check(report, failing)["message"]
    assert code == 1


@pytest.mark.parametrize("flaw, failing", [
    ("open-acl", ["broker-confines-each-identity"]),
    ("no-crl", ["broker-refuses-revoked-certificates"]),
    # without certificates there are no identities: revocation and the ACL go too
    ("anonymous", ["broker-requires-client-certificate", "broker-refuses-revoked-certificates",
                   "broker-confines-each-identity"]),
    ("weak-tls", ["broker-tls-configuration"]),
    ("clientid-takeover", ["broker-confines-each-identity"]),
    ("monitor-by-cn", ["broker-confines-each-identity"]),
])
def test_each_broker_check_fails_on_the_broker_flaw_it_guards_against(module_board, ca, tmp_path, flaw, failing):
    port = free_port(lab_address())
    code, status, report = _verify(module_board, ca, tmp_path, port, *only(*BROKER_CHECKS), "--broker-flaws", flaw)
    assert {c: status[c] for c in BROKER_CHECKS} == \
        {c: "fail" if c in failing else "pass" for c in BROKER_CHECKS}, json.dumps(report["checks"], indent=1)
    assert code == 1
    if flaw == "open-acl":  # for the leak itself, not for a broker that routes nothing
        assert "read another identity's topics" in _check(report, "broker-confines-each-identity")["message"]


def test_an_unknown_broker_flaw_is_a_clear_error(module_board, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "verify", "--board", module_board.name,
                           "--broker-flaws", "no-tls", "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown broker flaws ['no-tls']" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_a_broker_whose_port_is_taken_says_so_instead_of_passing_for_it(ca):
    import socket

    from sbd_harness.lab.broker import Broker, BrokerError
    with socket.create_server((lab_address(), 0)) as taken:
        with pytest.raises(BrokerError, match="Address already in use"):
            Broker(ca, address=lab_address(), port=taken.getsockname()[1]).start()


def test_rogue_brokers_refused_and_the_broker_certificate_lives_a_day(locked_board, ca, tmp_path):
    """On the reference every rogue is refused, a lab-CA certificate for the broker's name made for
    clients (clientAuth) among them, and the broker's certificate lives a day: the device cannot
    check revocation, so that is what bounds the trust in a revoked one. A broker with a year-long
    certificate fails the check at once, before any rogue."""
    port = free_port(lab_address())
    board = locked_board(None, port)
    code, status, report = _verify(board, ca, tmp_path, port, *only("rogue-brokers-refused"))
    check = _check(report, "rogue-brokers-refused")
    seen = check["evidence"]["rogue_brokers"]
    assert list(seen) == ["self-signed", "other-ca", "wrong-host", "expired", "tls1.1", "client-cert"]
    assert all(v["attempts"] >= 1 and v["bytes_sent_by_device"] == 0 for v in seen.values()), seen
    assert check["evidence"]["broker_certificate"]["valid_hours"] <= 24.1
    assert status["rogue-brokers-refused"] == "pass" and code == 0, check["message"]
    code, status, report = _verify(board, ca, tmp_path, port, *only("rogue-brokers-refused"),
                                   "--broker-flaws", "long-lived-cert")
    check = _check(report, "rogue-brokers-refused")
    assert status["rogue-brokers-refused"] == "fail" and code == 1
    assert "the broker's certificate is valid for 365 days" in check["message"], check["message"]
    assert "rogue_brokers" not in check["evidence"]  # failed before any rogue stood in
