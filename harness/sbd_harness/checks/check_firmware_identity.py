"""Checks that a board runs the firmware that was built, and says who it is.

They read only what any board shows (its boot line on the serial console);
while the console is open, what the REPL answers; once it is locked, what the
device attests to in a statement signed with its certified key, at the lab
CA's signed request (sbd_harness.attest).
"""
from __future__ import annotations

import re
from typing import Any

import pytest

from sbd_harness.attest import DEVICE_ID_RE, Attestation, AttestationError, ConsoleBoard, attest, compare_with_bundle
from sbd_harness.boards.base import BoardError
from sbd_harness.bootline import missing_keys
from sbd_harness.pki import LabCA

# IDs that betray a constant or a placeholder rather than the chip's own ID.
DEGENERATE_IDS = {"000000000000", "ffffffffffff", "001122334455", "aabbccddeeff", "deadbeefcafe",
                  "123456789abc", "010203040506"}


def _locked(boot: dict[str, Any] | None) -> bool:
    """True when the boot line says the console is locked."""
    return bool(boot) and boot.get("security", {}).get("console") == "locked"


def attested(board: ConsoleBoard, ca: LabCA, boot: dict[str, Any], evidence: dict[str, Any]) -> Attestation:
    """A locked board's attestation for the boot line's device ID, verified
    (fresh nonce, the key the lab CA certified); an AssertionError says why not.
    Skips when the lab CA cannot ask or check: none there, or not the one that
    certified this device."""
    device_id = str(boot.get("device_id"))
    assert DEVICE_ID_RE.fullmatch(device_id), f"boot line's device ID {device_id!r} is not 12 lower-case hex digits"
    if not ca.exists():
        pytest.skip(f"the console is locked and there is no lab CA in {ca.dir} to ask for an attestation "
                    "(give --pki DIR: the CA that provisioned the board)")
    if ca.issued_certificate(device_id) is None:
        pytest.skip(f"the console is locked and the lab CA in {ca.dir} never certified device {device_id}, "
                    "so it can neither ask for an attestation nor check one (give --pki DIR: the CA that "
                    "provisioned the board)")
    try:
        att = attest(board, ca, device_id)
    except AttestationError as exc:
        evidence["attestation_error"] = str(exc)
        raise AssertionError(f"the locked board did not attest: {exc}") from None
    evidence["attestation"] = {"device_id": att.device_id, "nonce": att.nonce, "slot": att.slot,
                               "fw_version": att.version, "security_counter": att.counter,
                               "cert_sha256": att.cert_sha256, "files": len(att.files)}
    return att


UNIQUE_ID_CODE = "import machine, binascii\nprint(binascii.hexlify(machine.unique_id()).decode())"


@pytest.mark.sbd_check(
    id="boot-line-identifies-firmware",
    title="The boot line names the model, the firmware version built and the security state",
    etsi_en_303_645=["5.3-16"], nist_ir_8259a=["1", "6"])
def check_boot_line(sbd_boot, sbd_bundle, sbd_evidence):
    boot = sbd_boot.boot_line
    sbd_evidence["boot_line"] = boot
    sbd_evidence["boot_s"] = round(sbd_boot.elapsed_s, 3)
    assert boot is not None, "no JSON boot line on the serial console after a reset"
    assert not missing_keys(boot), f"boot line lacks {missing_keys(boot)}"
    assert boot.get("model"), "the boot line names no model"
    assert boot["fw_version"] == sbd_bundle.version, (
        f"board runs version {boot['fw_version']}, the build is {sbd_bundle.version}")
    assert isinstance(boot["security"], dict) and boot["security"].get("profile"), "no security state"


@pytest.mark.sbd_check(
    id="device-id-from-hardware",
    title="The device ID is the chip's own unique ID, not a constant",
    nist_ir_8259a=["1"])
def check_device_id(sbd_board, sbd_boot, sbd_ca, sbd_evidence):
    boot = sbd_boot.boot_line
    assert boot is not None, "no boot line to read a device ID from"
    device_id = str(boot.get("device_id"))
    sbd_evidence["device_id"] = device_id
    assert re.fullmatch(r"[0-9a-f]{12}", device_id), f"device ID {device_id!r} is not 6 bytes of hex"
    assert device_id not in DEGENERATE_IDS, f"device ID {device_id} is a placeholder"
    if _locked(boot):
        # No REPL: the device states machine.unique_id() in a statement signed with
        # the key the lab CA certified for the boot line's ID (verified in attested()).
        att = attested(sbd_board, sbd_ca, boot, sbd_evidence)
        sbd_evidence["machine_unique_id"] = att.device_id
        assert att.device_id == device_id, f"boot line says {device_id}, the chip says {att.device_id}"
        return
    try:
        chip_id = sbd_board.exec(UNIQUE_ID_CODE).strip()
    except BoardError as exc:
        pytest.skip(f"no REPL, machine.unique_id() unreadable: {str(exc).splitlines()[0]}")
    sbd_evidence["machine_unique_id"] = chip_id
    assert device_id == chip_id, f"boot line says {device_id}, the chip says {chip_id}"


@pytest.mark.sbd_check(
    id="firmware-matches-build",
    title="Every firmware file on the board has the SHA-256 of the build",
    eu_cra=["I(2)(f)"])
def check_firmware_matches_build(sbd_board, sbd_boot, sbd_bundle, sbd_ca, sbd_evidence):
    expected = sbd_bundle.file_hashes()
    if _locked(sbd_boot.boot_line):
        # No REPL: the device attests to every file that can run (sbd_harness.attest).
        att = attested(sbd_board, sbd_ca, sbd_boot.boot_line, sbd_evidence)
        diff = compare_with_bundle(att, sbd_bundle)
        sbd_evidence.update({"files": len(expected), "missing": diff.missing, "changed": diff.changed,
                             "extra": diff.extra, "inactive_slot": diff.inactive,
                             "factory_not_compared": diff.not_compared, "bundle_sha256": sbd_bundle.sha256})
        assert diff.ok, f"the attested files differ from the build: {diff.summary()}"
        return
    try:
        actual = sbd_board.file_sha256(list(expected))
    except BoardError as exc:
        pytest.skip(f"no REPL, files unreadable: {str(exc).splitlines()[0]}")
    missing = sorted(p for p, h in actual.items() if h is None)
    changed = sorted(p for p, h in actual.items() if h is not None and h != expected[p])
    sbd_evidence.update({"files": len(expected), "missing": missing, "changed": changed,
                         "bundle_sha256": sbd_bundle.sha256})
    assert not missing and not changed, f"missing {missing}, changed {changed}"
