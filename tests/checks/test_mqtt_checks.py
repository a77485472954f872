"""Issue 4: the broker and network checks of `sbd verify` pass on the
reference firmware and the lab broker, and each fails against a firmware
variant or a broker flaw made to break it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.boards.flashing import flash_firmware
from sbd_harness.identity.provisioning import lab_settings, provision
from helpers import BROKER_CHECKS, DEVICE_NETWORK_CHECKS, only, unexpected, verify_report
from sbd_harness.release.mistakes import build_variant

NETWORK_CHECKS = DEVICE_NETWORK_CHECKS


def _online_board(make_board, ca, port: int, firmware=None):
    """A board provisioned and locked, configured for the broker at the lab address and `port`."""
    board = make_board("net")
    flash_firmware(board, FirmwareBundle.from_dir(firmware))
    provision(board, ca, settings=lab_settings(board, port))
    return board


def _verify(board, ca, tmp_path, port: int, *extra: str) -> tuple[int, dict[str, str], dict]:
    code, data = verify_report(board, ca, tmp_path / f"report-{board.name}.json", *extra, port=port)
    return code, {c["id"]: c["status"] for c in data["checks"]}, data


def _check(report: dict, check_id: str) -> dict:
    return next(c for c in report["checks"] if c["id"] == check_id)


def test_every_network_and_broker_check_passes_on_the_reference(make_board, ca, tmp_path):
    port = free_port(lab_address())
    board = _online_board(make_board, ca, port)
    code, status, report = _verify(board, ca, tmp_path, port, *only(*DEVICE_NETWORK_CHECKS, *BROKER_CHECKS))
    assert {c: status.get(c) for c in NETWORK_CHECKS + BROKER_CHECKS} == \
        {c: "pass" for c in NETWORK_CHECKS + BROKER_CHECKS}, unexpected(report)
    assert code == 0
    assert report["tier"] == "default"
    outage = _check(report, "outages-lose-nothing")["evidence"]
    assert outage["missing"] == [] and outage["received"] >= 5
    # the default tier: 1 broker outage, 1 network cut, 1 power cut; the backoff judged from what the
    # device reported on serial, each claim held against the interval the host measured
    assert [p["phase"] for p in outage["phases"]] == ["broker outage 1", "network cut 1",
                                                      "power-cut with queued telemetry 1"]
    assert outage["backoff_problems"] == [] and len(outage["backoff_reported"]) >= 3
    assert all(b["measured_at_least_s"] >= b["claimed_s"] - 0.2 for b in outage["backoff_against_host"])
    fuzz = _check(report, "hostile-broker-fuzzing-survived")["evidence"]
    assert fuzz["run"] == fuzz["cases"] >= 9 and fuzz["restarts_seen_on_serial"] == 0


@pytest.mark.parametrize("variant, failing, selector, reason", [
    ("silent-telemetry", "telemetry-over-mutual-tls", "check_telemetry", "no telemetry"),
    ("no-cert-verification", "rogue-brokers-refused", "check_rogue", "self-signed"),
    ("no-backoff", "outages-lose-nothing", "check_outages", "backoff"),
    ("volatile-outbox", "outages-lose-nothing", "check_outages", "lost"),
    ("crash-on-bad-packet", "hostile-broker-fuzzing-survived", "check_hostile", "restarted"),
    ("unsigned-commands", "invalid-commands-refused-over-mqtt", "check_invalid", "accepted"),
])
def test_a_network_check_fails_on_the_variant_broken_for_it(make_board, ca, tmp_path, variant, failing,
                                                             selector, reason):
    port = free_port(lab_address())
    board = _online_board(make_board, ca, port, build_variant(variant, tmp_path / "fw"))
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
])
def test_each_broker_check_fails_on_the_broker_flaw_it_guards_against(module_board, ca, tmp_path, flaw, failing):
    port = free_port(lab_address())
    code, status, report = _verify(module_board, ca, tmp_path, port, *only(*BROKER_CHECKS), "--broker-flaws", flaw)
    assert {c: status[c] for c in BROKER_CHECKS} == \
        {c: "fail" if c in failing else "pass" for c in BROKER_CHECKS}, json.dumps(report["checks"], indent=1)
    assert code == 1


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
