"""The device's private key is not readable from its flash at rest.

The harness reads the NVS partition as anyone holding the board can (the
flash image of an emulated board; `esptool read-flash` of a real one) and
searches it for the private key of the certificate the lab CA issued for the
device (identity/keys_at_rest.py). The official MicroPython build keeps NVS
in plaintext, so on it, and on the emulated board that behaves like it, this
check fails: that is the finding, not a fault of the check. It passes only
where NVS is encrypted (ESP-IDF's NVS encryption, a MicroPython build of the
manufacturer's own with flash encryption; docs/identity.md).
"""
from __future__ import annotations

import pytest

from sbd_harness.boards.base import FlashReadback, has
from sbd_harness.checks.common import NVS_NS, boot_line_or_skip, flash_store, require_provisioned
from sbd_harness.identity.keys_at_rest import KeysAtRestError, find_private_key, nvs_partition, read_flash
from sbd_harness.identity.pki import public_point
from sbd_harness.paths import boards_dir


def _nvs_bytes(board) -> tuple[bytes, list[bytes], str]:
    """The NVS partition's bytes, extra candidates, and how they were read."""
    if has(board, FlashReadback):
        store = flash_store(board)
        extra = [v for v in store.values() if isinstance(v, bytes) and len(v) == 32]
        return board.flash_image().read_partition("nvs"), extra, "the emulated board's flash image"
    chip = getattr(board, "chip", "esp32")
    offset, size = nvs_partition(boards_dir() / chip / "partitions.csv")
    data = read_flash(board.port, chip, offset, size, getattr(board, "esptool_reset", None))
    return data, [], f"esptool read-flash {offset:#x} {size:#x}"


@pytest.mark.sbd_check(
    id="keys-at-rest-protected",
    title="The device's private key cannot be read from its flash: no window of the NVS partition is the "
          "private key of the certificate the lab CA issued")
def check_keys_at_rest(sbd_board, sbd_boot, sbd_ca, sbd_evidence):
    boot = boot_line_or_skip(sbd_boot)
    require_provisioned(boot)  # the key to look for is the one the lab CA certified
    device_id = str(boot.get("device_id"))
    cert = sbd_ca.issued_certificate(device_id) if sbd_ca.exists() else None
    if cert is None:
        pytest.skip(f"the lab CA in {sbd_ca.dir} never certified device {device_id}: no certified key to look for "
                    "(provision the board, or give --pki DIR)")
    try:
        nvs, extra, how = _nvs_bytes(sbd_board)
    except KeysAtRestError as exc:
        pytest.skip(f"the harness could not read the NVS partition: {exc} (with the ROM's download mode closed "
                    "it cannot; read it from the flash chip to judge)")
    found = find_private_key(nvs, public_point(cert.public_key()), extra)
    sbd_evidence.update({"read_from": how, "nvs_bytes": len(nvs), "candidates_tried": found.windows,
                         "certificate_serial": cert.serial_number, "key_found_at": found.offset,
                         "nvs_namespace": NVS_NS})
    assert not found.blank, "the NVS partition is blank: the certified key is not where the firmware keeps it"
    assert not found.plaintext, (
        f"the private key of the device's certificate is stored in plaintext in NVS (offset {found.offset:#x} of "
        f"the partition, read from {how}): anyone holding the board reads it with esptool read-flash. NVS "
        "encryption is off, as on the official MicroPython build; it needs a build of your own with flash and "
        "NVS encryption (docs/identity.md)")
