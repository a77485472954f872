"""The whole-firmware update checks of `sbd verify` (checks/check_signed_updates.py) pass on the
reference firmware, and each fails against a firmware variant broken for it."""
from __future__ import annotations

import json

import pytest
from helpers import only, unexpected, verify_report

from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release.mistakes import build_variant

REFUSALS = "bad-app-images-refused"
UPDATES = "app-image-updates-commit-or-roll-back"


def _verify(board, ca, tmp_path, port: int, *extra: str, select: tuple[str, ...]) -> tuple[int, dict, dict]:
    code, data = verify_report(board, ca, tmp_path / f"report-{board.name}.json", *only(*select), *extra, port=port)
    return code, {c["id"]: c for c in data["checks"]}, data


def test_the_reference_refuses_bad_images_commits_a_good_one_and_rolls_back_an_untested_one(
        locked_board, ca, release_key, tmp_path):
    port = free_port(lab_address())
    board = locked_board(None, port, [release_key.public_point])
    code, checks, report = _verify(board, ca, tmp_path, port, "--destructive", select=(UPDATES, REFUSALS))
    assert {k: c["status"] for k, c in checks.items()} == {UPDATES: "pass", REFUSALS: "pass"}, unexpected(report)
    refused = checks[REFUSALS]["evidence"]
    # the refusals run first (destructive checks run last): MicroPython's image has secure version 0
    assert {case: seen.get("error") or seen.get("skipped") for case, seen in refused["cases"].items()} == {
        "not-the-signed-image": "image hash mismatch",
        "foreign-project": "foreign image: project hello_world, not micropython",
        "truncated": "size does not match the manifest",
        "lower-secure-version": "the running app has secure version 0: none lower",
    }, refused
    assert refused["running_slot_unchanged"] is True
    updates = checks[UPDATES]["evidence"]["cases"]
    assert updates["commit"]["event"] == "committed" and updates["after_reset"]["slot"] == "ota_1"
    assert updates["lower-secure-version"]["error"] == "rollback: secure version below the running app's"
    assert updates["trial_ended_by"] == "power cut after the trial's first failed connection"
    assert updates["after_trial"]["slot"] == "ota_1"
    assert "now ABORTED" in board.serial_log()
    assert code == 0


@pytest.mark.parametrize("variant, failing, destructive, reason", [
    ("unchecked-app-images", REFUSALS, False,
     "installed an app image that is not the one signed (not-the-signed-image"),
    ("app-image-valid-before-health-check", UPDATES, True,
     "it was marked valid before its health check, or the bootloader did not roll it back"),
])
def test_an_image_check_fails_on_the_variant_broken_for_it(locked_board, ca, release_key, tmp_path, variant,
                                                           failing, destructive, reason):
    port = free_port(lab_address())
    fw = build_variant(variant, tmp_path / "fw")
    board = locked_board(fw, port, [release_key.public_point])
    extra = ["--firmware", str(fw)] + (["--destructive"] if destructive else [])
    code, checks, report = _verify(board, ca, tmp_path, port, *extra, select=(failing,))
    assert checks[failing]["status"] == "fail", json.dumps(checks[failing], indent=1)[-3000:]
    assert reason in checks[failing]["message"], checks[failing]["message"]
    assert code == 1
