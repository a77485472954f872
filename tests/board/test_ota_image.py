"""Whole-firmware updates end to end on a locked emulated board, over its MQTT/TLS
connection: a signed app image is streamed into the next app slot, boots on trial
through the emulated ESP-IDF bootloader, commits after its health check and is
reported with its app descriptor; a tampered or downgraded image is refused with the
running slot untouched; an image reset before its health check passed is rolled back
by the bootloader, and the old image reports the version that failed."""
from __future__ import annotations

import time

import pytest

from ota_lab import Lab, flip, image, image_power_cut_series, image_stream


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("ota-image"))
    lab.board.reset("hard")
    lab.birth = lab.online()
    yield lab
    lab.close()


def test_an_image_update_boots_on_trial_commits_and_is_reported(lab):
    assert lab.birth["app"] == {"project": "micropython", "version": "v1.29.0-preview", "secure_version": 0,
                                "slot": "ota_0"}
    ota_0 = lab.board.flash_image().read_partition("ota_0")
    t0 = time.monotonic()
    result = lab.push(image_stream(lab, image("v1.29.0-sbd.2", 1), 2))
    assert result["event"] == "installed" and result["kind"] == "image" and result["slot"] == "ota_1", result
    assert lab.board.flash_image().read_partition("ota_0") == ota_0, "the running slot was not written"
    birth = lab.online(since=t0)
    assert birth["app"] == {"project": "micropython", "version": "v1.29.0-sbd.2", "secure_version": 1,
                            "slot": "ota_1"}
    committed = lab.ota_event("committed")
    assert committed and committed["kind"] == "image" and committed["version"] == "v1.29.0-sbd.2", committed
    log = lab.board.serial_log()
    assert "boot: Loaded app from partition at offset 0x190000" in log
    t1 = time.monotonic()
    lab.board.reset("hard")
    assert lab.online(since=t1)["app"]["version"] == "v1.29.0-sbd.2", "a committed image stays"
    assert "Secure version (from eFuse) = 1" in lab.board.serial_log()


@pytest.mark.parametrize("case, error", [
    ("tampered", "image hash mismatch"),
    ("downgraded", "rollback: secure version below the running app's"),
])
def test_a_bad_image_is_refused_and_the_running_slot_is_untouched(lab, case, error):
    if case == "tampered":
        good = image("v1.29.0-sbd.3", 1)
        stream = image_stream(lab, good, 3)
        stream = flip(stream, len(stream) - 100000)
    else:
        stream = image_stream(lab, image("v1.28.0", 0), 3)
    running = lab.board.flash_image().read_partition("ota_1")
    result = lab.push(stream)
    assert result["event"] == "rejected" and result["error"] == error, result
    assert lab.board.flash_image().read_partition("ota_1") == running


def test_an_image_reset_before_its_health_check_is_rolled_back_and_reported(lab):
    since = lab.board.log_size()
    result = lab.push(image_stream(lab, image("v1.29.0-sbd.4", 1), 4))
    assert result["event"] == "installed", result
    # the trial boots; the power goes before it could reach the broker and commit
    lab.board.wait_for_output("App version:      v1.29.0-sbd.4", since, timeout=30)
    t0 = time.monotonic()
    lab.board.reset("power-cut")
    birth = lab.online(since=t0)
    assert birth["app"]["version"] == "v1.29.0-sbd.2", "the bootloader rolled back to the committed image"
    reverted = lab.ota_event("reverted")
    assert reverted and reverted["slot"] == "ota_0", reverted
    assert "v1.29.0-sbd.4 rolled back by the bootloader" in reverted["error"]
    assert "now ABORTED" in lab.board.serial_log()


def test_three_power_cuts_during_an_image_update_always_boot_a_verified_image(tmp_path):
    """One cut in each phase (download, verify-and-switch, trial boot); tests/soak cuts more."""
    assert image_power_cut_series(tmp_path, 3)["cuts"] == 3
