"""`only-declared-interfaces-on` does not take the device's word for its radios where the lab sees them:
on the emulated board the supervisor sees every radio the CPU turns on (rom/network.py, rom/bluetooth.py).
A firmware that leaves the access point on and reports it off fails; the reference, whose report and
radios agree, passes."""
from __future__ import annotations

import json

from helpers import only, verify_report

from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release.mistakes import build_variant

CHECK = "only-declared-interfaces-on"


def _check(report: dict) -> dict:
    return next(c for c in report["checks"] if c["id"] == CHECK)


def test_a_firmware_that_hides_its_access_point_fails_on_what_the_lab_sees(locked_board, ca, tmp_path):
    port = free_port(lab_address())
    fw = build_variant("access-point-hidden", tmp_path / "fw")
    board = locked_board(fw, port)
    code, report = verify_report(board, ca, tmp_path / "report.json", "--firmware", str(fw), *only(CHECK),
                                 port=port)
    check = _check(report)
    assert check["status"] == "fail", json.dumps(check, indent=1)
    assert check["evidence"]["reported"]["wifi_ap"] is False  # the claim
    assert check["evidence"]["observed_by_the_lab"]["wifi_ap"] is True  # the radio
    assert "wifi_ap is on as the lab sees it, and the device reports it off" in check["message"]
    assert code == 1


def test_on_the_reference_what_the_lab_sees_agrees_with_the_report(locked_board, ca, tmp_path):
    port = free_port(lab_address())
    board = locked_board(None, port)
    code, report = verify_report(board, ca, tmp_path / "report.json", *only(CHECK), port=port)
    check = _check(report)
    assert check["status"] == "pass", json.dumps(check, indent=1)
    assert check["evidence"]["observed_by_the_lab"] == {"wifi_sta": True}
    assert check["evidence"]["reported"] == {"wifi_sta": True, "wifi_ap": False, "bluetooth": False}
    assert code == 0
