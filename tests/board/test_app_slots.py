"""The emulated board's app slots and its ESP-IDF bootloader, seen from the device.

Real ESP32 app images (esptool's classes) are written through `esp32.Partition`
as firmware would, and the board is reset: the bootloader picks the slot from
otadata, boots a new image in trial, rolls it back unless it is marked valid, and
refuses an image below the eFuse secure version. The CPU stays the unix port: what
changes is the app the board reports (boot log, `Partition.RUNNING`).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from helpers import mpremote

from sbd_harness.release.app_image import AppDescriptor, build_app_image

WRITE_NEXT = """
import esp32, hashlib
P = esp32.Partition
part = P(P.RUNNING).get_next_update()
buf = bytearray(4096)
h = hashlib.sha256()
with open('/img.bin', 'rb') as f:
    block = 0
    while True:
        n = f.readinto(buf)
        if not n:
            break
        mv = memoryview(buf)[:n]
        h.update(mv)
        part.writeblocks(block, mv if n == 4096 else bytes(mv) + b'\\xff' * (4096 - n))
        block += 1
try:
    part.set_boot()
    print('SET', part.info()[4])
except OSError as e:
    print('ERR', e.args[0], e.args[1] if len(e.args) > 1 else '')
"""

STATE = """
import esp32, json
P = esp32.Partition
run = P(P.RUNNING)
desc = bytearray(256)
run.readblocks(0, desc, 0x20)
print(json.dumps({'running': run.info()[4], 'boot': P(P.BOOT).info()[4],
                  'version': bytes(desc[16:48]).split(b'\\0')[0].decode()}))
"""


def image(version: str, secure_version: int = 0) -> bytes:
    return build_app_image(AppDescriptor("sbd-reference-esp32", version, secure_version), 40 * 1024,
                           version.encode())


def push_image(board, tmp_path: Path, data: bytes) -> str:
    local = tmp_path / "img.bin"
    local.write_bytes(data)
    mpremote(board.port, "resume", "fs", "cp", str(local), ":img.bin")
    return mpremote(board.port, "resume", "exec", WRITE_NEXT).strip()


def state(board) -> dict:
    return json.loads(mpremote(board.port, "resume", "exec", STATE).strip())


def efuse_secure_version(board) -> int:
    bits = struct.unpack("<I", (board.state.dir / "efuse").read_bytes())[0]
    return bin(bits).count("1")


def test_a_new_image_boots_in_trial_and_is_rolled_back_at_the_next_reset(make_board, tmp_path) -> None:
    board = make_board()
    assert state(board) == {"running": "ota_0", "boot": "ota_0", "version": "v1.29.0-preview"}
    assert push_image(board, tmp_path, image("2.0.0")) == "SET ota_1"
    assert state(board)["boot"] == "ota_1" and state(board)["running"] == "ota_0"
    log = board.reset_and_wait("hard")
    assert "I (" in log and "boot: Loaded app from partition at offset 0x190000" in log
    assert "app_init: App version:      2.0.0" in log
    assert "app_init: Project name:     sbd-reference-esp32" in log
    assert state(board) == {"running": "ota_1", "boot": "ota_1", "version": "2.0.0"}
    board.reset_and_wait("soft")
    assert state(board)["running"] == "ota_1", "a soft reset does not pass through the bootloader"
    log = board.reset_and_wait("power-cut")  # the trial never confirmed itself
    assert "now ABORTED" in log and "offset 0x10000" in log
    assert state(board) == {"running": "ota_0", "boot": "ota_0", "version": "v1.29.0-preview"}


def test_an_image_marked_valid_stays_and_raises_the_efuse_secure_version(make_board, tmp_path) -> None:
    board = make_board()
    assert push_image(board, tmp_path, image("2.0.0", secure_version=2)) == "SET ota_1"
    board.reset_and_wait("hard")
    assert efuse_secure_version(board) == 0
    mpremote(board.port, "resume", "exec", "import esp32; esp32.Partition.mark_app_valid_cancel_rollback()")
    assert efuse_secure_version(board) == 2
    log = board.reset_and_wait("hard")
    assert "app_init: Secure version:   2" in log and "Secure version (from eFuse) = 2" in log
    assert state(board)["running"] == "ota_1"
    # the next update goes to ota_0, and one below the eFuse is refused and erased
    assert push_image(board, tmp_path, image("1.5.0", secure_version=1)) == "ERR -5380 ESP_ERR_OTA_SMALL_SEC_VER"
    assert board.flash_image().read_partition("ota_0")[:4096] == b"\xff" * 4096
    board.reset_and_wait("hard")
    assert state(board)["running"] == "ota_1"


@pytest.mark.parametrize("damage", ["bit-flip", "truncated"])
def test_set_boot_refuses_an_image_that_does_not_verify(make_board, tmp_path, damage: str) -> None:
    board = make_board()
    data = bytearray(image("2.0.0"))
    if damage == "bit-flip":
        data[20000] ^= 0x10
    else:
        data = data[:len(data) - 8192]
    assert push_image(board, tmp_path, bytes(data)) == "ERR -5379 ESP_ERR_OTA_VALIDATE_FAILED"
    assert state(board)["boot"] == "ota_0"
    board.reset_and_wait("hard")
    assert state(board)["running"] == "ota_0"


def test_partition_errors_follow_the_port(module_board) -> None:
    code = ("import esp32\nP = esp32.Partition\n"
            "for arg in ('nope', 7):\n"
            " try:\n  P(arg)\n except Exception as e:\n  print(type(e).__name__, e.args[0] if e.args else '')\n"
            "print(P.find(P.TYPE_DATA, label='vfs')[0].get_next_update().info()[4])\n"
            "try:\n P.find(P.TYPE_DATA, label='vfs')[0].set_boot()\nexcept OSError as e:\n print(e.args)\n")
    out = mpremote(module_board.port, "resume", "exec", code).split("\n")
    assert out[0].strip() == "OSError 2", "esp32_partition_new: no such partition is ENOENT"
    assert out[1].strip() == "ValueError", "an id other than BOOT or RUNNING"
    assert out[2].strip() == "ota_0", "esp_ota_get_next_update_partition from a non-OTA partition: the first"
    assert out[3].strip() == "(-5379, 'ESP_ERR_OTA_VALIDATE_FAILED')"
