"""The board runs the firmware that was built, and says which firmware it is.

They read only what any board shows (its boot line on the serial console);
while the console is open, what the REPL answers; once it is locked, what the
device attests to in a statement signed with its certified key, at the lab
CA's signed request (identity/attest.py)."""
from __future__ import annotations

import pytest

from sbd_harness.boards.base import BoardError
from sbd_harness.checks.common import attested, locked
from sbd_harness.device.bootline import missing_keys
from sbd_harness.release.product import from_bundle
from sbd_harness.identity.attest import classify, compare_with_bundle, running_slot


@pytest.mark.sbd_check(
    id="boot-line-identifies-firmware",
    title="The boot line names the model, the firmware version built and the security state")
def check_boot_line(sbd_boot, sbd_bundle, sbd_evidence):
    boot = sbd_boot.boot_line
    sbd_evidence["boot_line"] = boot
    sbd_evidence["boot_s"] = round(sbd_boot.elapsed_s, 3)
    assert boot is not None, "no JSON boot line on the serial console after a reset"
    assert not missing_keys(boot), f"boot line lacks {missing_keys(boot)}"
    assert boot.get("model"), "the boot line names no model"
    built = from_bundle(sbd_bundle).model  # the product's MODEL (lib/sbd/version.py), read as text
    assert built is None or boot["model"] == built, f"board says model {boot['model']}, the build is {built}"
    assert boot["fw_version"] == sbd_bundle.version, (
        f"board runs version {boot['fw_version']}, the build is {sbd_bundle.version}")
    assert isinstance(boot["security"], dict) and boot["security"].get("profile"), "no security state"


@pytest.mark.sbd_check(
    id="firmware-matches-build",
    title="The board holds the build's files, each with the build's SHA-256, and no other code or leftover update")
def check_firmware_matches_build(sbd_board, sbd_boot, sbd_bundle, sbd_ca, sbd_evidence):
    expected = sbd_bundle.file_hashes()
    if locked(sbd_boot.boot_line):
        # No REPL: the device attests to every file that can run (identity/attest.py).
        att = attested(sbd_board, sbd_ca, sbd_boot.boot_line, sbd_evidence)
        diff = compare_with_bundle(att, sbd_bundle)
        sbd_evidence.update({"files": len(expected), "missing": diff.missing, "changed": diff.changed,
                             "extra": diff.extra, "stale_updates": diff.stale, "inactive_slot": diff.inactive,
                             "factory_not_compared": diff.not_compared, "bundle_sha256": sbd_bundle.sha256})
        assert diff.ok, f"the attested files differ from the build: {diff.summary()}"
        return
    try:
        actual = sbd_board.file_sha256(list(expected))
        present, sys_path = sbd_board.list_files()
    except BoardError as exc:
        pytest.skip(f"no REPL, files unreadable: {str(exc).splitlines()[0]}")
    # Every file on the board, not only the build's: what else is there is sorted as the
    # attestation's files are (extra, stale updates, the other slot, the device's data).
    slot = running_slot(sys_path)
    image, diff = classify(present, slot)
    missing = sorted(p for p, h in actual.items() if h is None)
    changed = sorted(p for p, h in actual.items() if h is not None and h != expected[p])
    extra = sorted(diff.extra + [p for p in image if p not in expected])
    sbd_evidence.update({"files": len(expected), "slot": slot, "missing": missing, "changed": changed,
                         "extra": extra, "stale_updates": diff.stale, "inactive_slot": diff.inactive,
                         "bundle_sha256": sbd_bundle.sha256})
    assert not (missing or changed or extra or diff.stale), \
        f"missing {missing}, changed {changed}, extra {extra}, stale updates {diff.stale}"
