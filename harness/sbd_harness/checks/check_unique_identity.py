"""Unique per-device credentials: a certificate the lab CA issued for the
device's own key and hardware ID, keys and IDs no other device shares, and no
password, key or other secret baked into the firmware image.

They work on a locked board through what it exposes (boot line, attestation,
the lab CA's records); boards whose flash the harness can read back also let
them compare the keys held on the flash. What a board says about itself (its
boot line's ID and certificate hash) is never taken as proof: the board must
sign a fresh nonce with the certified key (common.possession), which a clone
printing the same boot line cannot do."""
from __future__ import annotations

import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sbd_harness.boards.base import BoardError
from sbd_harness.checks.common import (NVS_NS, attested, locked, boot_line_or_skip, flash_store, possession,
                                       reads_flash, require_provisioned)
from sbd_harness.identity.names import device_id_problem
from sbd_harness.identity.pki import fingerprint, public_point
from sbd_harness.release.product import REFERENCE, from_bundle
from sbd_harness.release.secrets_scan import scan_files


# IDs that betray a constant or a placeholder rather than the chip's own ID.
DEGENERATE_IDS = {"000000000000", "ffffffffffff", "001122334455", "aabbccddeeff", "deadbeefcafe",
                  "123456789abc", "010203040506"}


UNIQUE_ID_CODE = "import machine, binascii\nprint(binascii.hexlify(machine.unique_id()).decode())"


@pytest.mark.sbd_check(
    id="identity-certified-by-lab-ca",
    title="The device holds a certificate the lab CA issued for its own key and ID, not revoked")
def check_identity_certified(sbd_board, sbd_boot, sbd_ca, sbd_evidence):
    boot = boot_line_or_skip(sbd_boot)
    require_provisioned(boot)
    device_id = boot["device_id"]
    problem = device_id_problem(device_id)
    assert problem is None, f"the boot line's device ID: {problem}"
    cert = sbd_ca.issued_certificate(device_id)
    assert cert is not None, f"the lab CA never certified device {device_id}"
    fp = fingerprint(cert)
    sbd_evidence.update({"device_id": device_id, "cert_sha256": fp, "boot_cert_sha256": boot["security"].get("cert_sha256")})
    assert boot["security"].get("cert_sha256") == fp, "the device's certificate is not the one the CA issued it"
    try:
        sbd_ca.certificate.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AssertionError("the certificate on record is not signed by the lab CA") from None
    assert cert.subject.rfc4514_string() == f"CN={device_id}"
    assert not sbd_ca.is_revoked(device_id), "the device's certificate is revoked"
    # the boot line's hash is what the board says; the signature over our nonce is what it can do
    possession(sbd_board, sbd_ca, boot, sbd_evidence)
    if reads_flash(sbd_board):  # the device holds the key its certificate names
        held = flash_store(sbd_board).get((NVS_NS, "pk"), b"")
        assert held == public_point(cert.public_key()), "the device's key is not the certified one"


@pytest.mark.sbd_check(
    id="device-keys-unique",
    title="No other device shares this device's key or ID")
def check_device_keys_unique(sbd_board, sbd_boot, sbd_ca, sbd_evidence):
    boot = boot_line_or_skip(sbd_boot)
    require_provisioned(boot)
    device_id = boot["device_id"]
    devices = sbd_ca.index()["devices"]
    if device_id not in devices:
        raise AssertionError(f"the lab CA never certified device {device_id}: no key on record to compare")
    # the key compared is the one the device proves it holds, not only the one on record
    possession(sbd_board, sbd_ca, boot, sbd_evidence)
    mine = devices[device_id]["public_key"]
    clashes = sorted(other for other, e in devices.items() if other != device_id and e["public_key"] == mine)
    sbd_evidence["devices_certified"] = len(devices)
    if reads_flash(sbd_board):
        from sbd_harness.boards.emulated import EmulatedBoard
        for other in EmulatedBoard.all():
            if other.name == sbd_board.name:
                continue
            if flash_store(other).get((NVS_NS, "pk"), b"").hex() == mine:
                clashes.append(f"key of emulated board {other.name}")
            if other.conf["unique_id"] == device_id:
                clashes.append(f"ID of emulated board {other.name}")
        sbd_evidence["emulated_boards_compared"] = len(EmulatedBoard.all()) - 1
    assert not clashes, f"the same key is held by: {clashes}"


@pytest.mark.sbd_check(
    id="no-default-or-shared-secrets",
    title="The firmware image holds no password, key or other shared secret, and no two boards share one")
def check_no_shared_secrets(sbd_board, sbd_boot, sbd_ca, sbd_bundle, sbd_evidence):
    # what runs on the device: the build's .mpy modules and boot.py/main.py (the files), and the
    # sources they were compiled from, where a call or a dict shows more of its context
    # the build's own identity (model, version, addresses) is announced on the boot line: no secret
    public = [from_bundle(sbd_bundle).value(k) for k in REFERENCE] + [from_bundle(sbd_bundle).version]
    found = [str(f) for f in scan_files(sbd_bundle.files, public)] + [str(f) for f in scan_files(
        {p: d for p, d in sbd_bundle.sources.items() if p not in sbd_bundle.files}, public)]
    sbd_evidence.update({"files_scanned": len(set(sbd_bundle.files) | set(sbd_bundle.sources)),
                         "literal_credentials": found})
    assert not found, f"credentials in the firmware image: {found}"
    boot = sbd_boot.boot_line
    if locked(boot):  # the scan speaks for this device only if it runs exactly these files
        from sbd_harness.identity.attest import compare_with_bundle
        try:
            att = attested(sbd_board, sbd_ca, boot, sbd_evidence)
        except pytest.skip.Exception as exc:  # no CA to ask with: the scan stands for the build alone
            att = None
            sbd_evidence["device_files"] = f"not compared: {exc}"
        if att is not None:
            diff = compare_with_bundle(att, sbd_bundle)
            sbd_evidence["device_files"] = {"attested": len(att.files), "changed": diff.changed, "extra": diff.extra}
            assert not (diff.changed or diff.extra), (
                f"the device runs files this scan did not see (changed {diff.changed}, extra {diff.extra}): "
                "scan the build it runs (--firmware)")
    else:
        sbd_evidence["device_files"] = ("not compared: the console is not locked, so the board gives no "
                                        "attestation of its files")
    shared = []
    if reads_flash(sbd_board):
        from sbd_harness.boards.emulated import EmulatedBoard
        mine = flash_store(sbd_board)
        for other in EmulatedBoard.all():
            if other.name == sbd_board.name:
                continue
            theirs = flash_store(other)
            for key, value in mine.items():
                if key[1] in ("sk",) and isinstance(value, bytes) and theirs.get(key) == value:
                    shared.append(f"{key[0]}/{key[1]} also on {other.name}")
    sbd_evidence["shared"] = shared
    assert not shared, f"secrets shared between boards: {shared}"


@pytest.mark.sbd_check(
    id="device-id-from-hardware",
    title="The device ID is the chip's own unique ID, not a constant")
def check_device_id(sbd_board, sbd_boot, sbd_ca, sbd_evidence):
    boot = sbd_boot.boot_line
    assert boot is not None, "no boot line to read a device ID from"
    device_id = str(boot.get("device_id"))
    sbd_evidence["device_id"] = device_id
    assert re.fullmatch(r"[0-9a-f]{12}", device_id), f"device ID {device_id!r} is not 6 bytes of hex"
    assert device_id not in DEGENERATE_IDS, f"device ID {device_id} is a placeholder"
    if locked(boot):
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
