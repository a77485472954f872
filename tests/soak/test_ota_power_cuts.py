"""Power cuts (the emulated board's CPU killed with SIGKILL) at random moments while an update
downloads, while it is verified and switched to, and during the new version's trial boot: 100 of
them, after each of which the board must boot a version that verified, never a mix and never nothing;
and 30 such cuts during whole-firmware (app image) updates, after each of which the emulated ESP-IDF
bootloader must load an image that verified, the one before or the new one.
`make test` runs three of each (tests/board/test_ota.py, tests/board/test_ota_image.py); the unit tests
cut at every write (tests/firmware for the file install, tests/unit/test_idf_bootloader.py for the image
install and otadata). SBD_OTA_CUTS, SBD_OTA_IMAGE_CUTS and SBD_OTA_SEED change the counts and the moments."""
from __future__ import annotations

import os

from ota_lab import image_power_cut_series, power_cut_series

CUTS = int(os.environ.get("SBD_OTA_CUTS", "100"))
IMAGE_CUTS = int(os.environ.get("SBD_OTA_IMAGE_CUTS", "30"))


def test_power_cuts_during_updates_never_brick_the_board(tmp_path):
    summary = power_cut_series(tmp_path, CUTS, seed=int(os.environ.get("SBD_OTA_SEED", "5")))
    assert summary["cuts"] == CUTS


def test_power_cuts_during_image_updates_always_boot_a_verified_image(tmp_path):
    summary = image_power_cut_series(tmp_path, IMAGE_CUTS, seed=int(os.environ.get("SBD_OTA_SEED", "7")))
    assert summary["cuts"] == IMAGE_CUTS
