"""The whole catalogue on the reference firmware, in one `sbd verify --destructive` run on one
board, as a maker runs it: every check passes, and only the hardware-only check (eFuses, on
the emulated board) skips. What each check saw is asserted here too; that each check fails on
the firmware broken for it is shown in the modules beside this one."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from helpers import unexpected, verify_report
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509

from sbd_harness.boards import lifecycle
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.emulator import netlab
from sbd_harness.identity.pki import certificate_mud_url
from sbd_harness.lab import ntp
from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release import mud
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.docs_policy import docs_url
from sbd_harness.reports.provisions import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_URL = "https://mud.example.invalid/sbd-reference-esp32.json"
VERSION_PY = (ROOT / "firmware/lib/sbd/version.py").read_text()
HARDWARE_ONLY = {"chip-security-fuses"}
# Fails on the emulated board as on the official MicroPython build (plaintext NVS), accepted as a gap the
# reference documents (docs/identity.md): the report says fail, the exit code leaves it out.
KNOWN_GAPS = {"keys-at-rest-protected"}


@pytest.fixture(scope="module")
def run(ca, release_key, tmp_path_factory):
    """One reference board, provisioned and locked, and one full `sbd verify --destructive` on it."""
    tmp = tmp_path_factory.mktemp("reference")
    port = free_port(lab_address())
    board = EmulatedBoard(f"ref-{uuid.uuid4().hex[:8]}")
    board.start()
    try:
        lifecycle.flashed(board)
        provisioned = lifecycle.provisioned(board, ca, broker_port=port, release_keys=[release_key.public_point])
        cert = ca.issued_certificate(provisioned.device_id)
        mud_file = tmp / "mud.json"
        made = subprocess.run([sys.executable, "-m", "sbd_harness", "mud", "--board", board.name,
                               "--out", str(mud_file)], capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        code, report = verify_report(board, ca, tmp / "report.json", "--destructive",
                                     "--accepted-failures", ",".join(KNOWN_GAPS), port=port)
        after = board.capture_boot("hard").boot_line
        yield SimpleNamespace(board=board, port=port, cert=cert, mud=json.loads(mud_file.read_text()), code=code,
                              report=report, checks={c["id"]: c for c in report["checks"]}, dir=tmp,
                              boot_after=after)
    finally:
        board.remove()


def test_every_check_passes_but_the_known_gap_and_only_hardware_checks_skip(run):
    status = {c: v["status"] for c, v in run.checks.items()}
    skipped = {c for c, s in status.items() if s == "skip"}
    assert skipped <= HARDWARE_ONLY, unexpected(run.report)
    assert {c: s for c, s in status.items() if c not in skipped} == \
        {c: "fail" if c in KNOWN_GAPS else "pass" for c in status if c not in skipped}, unexpected(run.report)
    assert "stored in plaintext in NVS" in run.checks["keys-at-rest-protected"]["message"]
    assert run.code == 0


def test_the_update_checks_ran_first_and_left_the_factory_image_running(run):
    order = [c["id"] for c in run.report["checks"]]
    assert order.index("signed-update-installs-and-commits") < order.index("changed-file-caught-at-boot") \
        < order.index("unsigned-or-foreign-updates-refused") < order.index("firmware-matches-build")
    assert "setup_update_1" not in run.checks["update-rollback-refused"]["evidence"]
    assert run.checks["changed-file-caught-at-boot"]["evidence"]["fw_version_after"] == \
        FirmwareBundle.from_dir().version
    # the CONNECT came from the hostile broker's first connection: no connection of its own
    assert run.checks["mqtt-connect-has-no-password"]["evidence"]["seen_at"].startswith("the hostile broker")
    assert run.checks["telemetry-matches-data-inventory"]["evidence"]["readings_from"] == \
        "the telemetry check of this run"


def test_the_reports_are_written_in_every_format(run):
    assert set(run.report) >= {"board", "firmware", "checks", "summary"}
    for check in run.report["checks"]:
        assert set(check) >= {"id", "title", "status", "provisions", "evidence", "duration_s"}
        assert set(check["provisions"]) == set(CATALOGUE)  # every baseline, EN 18031-1 among them
    cases = list(ET.parse(run.dir / "report.junit.xml").getroot().iter("testcase"))
    assert [p.get("name") for case in cases for p in case.iter("property")].count("provisions") == len(cases)
    assert "| `firmware-matches-build` | PASS |" in (run.dir / "report.md").read_text()
    assert (run.dir / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_the_network_checks_lost_nothing_and_the_device_never_restarted(run):
    assert run.report["tier"] == "default"
    outage = run.checks["outages-lose-nothing"]["evidence"]
    assert outage["missing"] == [] and outage["received"] >= 5
    # the default tier: 1 broker outage, 1 network cut, 1 power cut; the backoff judged from what the
    # device reported on serial, each claim held against the interval the host measured
    assert [p["phase"] for p in outage["phases"]] == ["broker outage 1", "network cut 1",
                                                      "power-cut with queued telemetry 1"]
    assert outage["backoff_problems"] == [] and len(outage["backoff_reported"]) >= 3
    assert all(b["measured_at_least_s"] >= b["claimed_s"] - 0.2 for b in outage["backoff_against_host"])
    fuzz = run.checks["hostile-broker-fuzzing-survived"]["evidence"]
    assert fuzz["run"] == fuzz["cases"] >= 8 and fuzz["restarts_seen_on_serial"] == 0


def _errors(check: dict) -> dict[str, str]:
    return {case: seen.get("error") for case, seen in check["evidence"]["cases"].items() if "error" in seen}


def test_each_bad_update_was_refused_for_its_own_reason(run):
    refused = run.checks["unsigned-or-foreign-updates-refused"]
    errors = _errors(refused)
    assert {k: v for k, v in errors.items() if k != "file-changed"} == {
        "unknown-key": "unknown release key", "no-signature": "unknown release key",
        "forged-signature": "bad signature"}
    assert errors["file-changed"].startswith("hash mismatch lib/")
    rollback = run.checks["update-rollback-refused"]
    assert set(_errors(rollback).values()) == {"rollback: security counter not higher"}


@pytest.mark.skipif(not netlab.namespaces_available(), reason="the surface checks need a network namespace (root)")
def test_the_surface_checks_saw_the_declared_flows_and_the_mud_url_everywhere(run):
    ntp_host, ntp_port = ntp.endpoint()
    assert certificate_mud_url(run.cert) == REFERENCE_URL
    assert not run.cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.25")).critical
    assert run.mud["ietf-mud:mud"]["mud-url"] == REFERENCE_URL
    assert mud.allows_from_device(run.mud, "tcp", lab_address(), run.port)
    assert mud.allows_from_device(run.mud, "udp", ntp_host, ntp_port)
    scan = run.checks["no-listening-ports"]["evidence"]
    # nothing over TCP; over UDP the official build's mDNS responder (answers) and DHCP client (silent)
    assert scan["tcp"]["closed"] == 65535 and scan["udp"]["closed"] == 65533
    assert scan["udp"]["open"] == [5353] and scan["udp"]["unanswered"] == [68]
    seen = run.checks["connections-match-mud"]["evidence"]
    assert seen["birth_mud_url"] == seen["certificate_mud_url"] == REFERENCE_URL
    # after its reset: the clock from the lab's NTP server, the broker, the port's mDNS announcements
    assert sorted((f["protocol"], f["address"], f["port"]) for f in seen["flows_started_by_board"]) == \
        sorted([("tcp", lab_address(), run.port), ("udp", ntp_host, ntp_port), ("udp", "224.0.0.251", 5353)])
    assert run.checks["serial-discloses-nothing-after-lock"]["evidence"]["problems"] == []


def test_the_published_documents_are_the_ones_the_device_points_to(run):
    support = run.checks["support-period-declared"]["evidence"]
    assert support["support_until"] == support["declared_support_until"]
    policy = run.checks["vulnerability-disclosure-policy-published"]["evidence"]
    assert policy["security_policy"] == docs_url(VERSION_PY) + "SECURITY.md"
    assert policy["policy_file"] == str(ROOT / "docs" / "SECURITY.md")
    if ".invalid/" in policy["security_policy"]:  # the reference publishes nowhere yet: the report says so
        assert "placeholder" in policy["note"]


def test_the_factory_reset_ran_last_and_left_an_unprovisioned_device(run):
    assert run.report["checks"][-1]["id"] == "factory-reset-erases-identity"
    assert run.boot_after["security"]["provisioned"] is False and run.boot_after["security"]["console"] == "open"
    assert run.boot_after["fw_version"] == FirmwareBundle.from_dir().version
