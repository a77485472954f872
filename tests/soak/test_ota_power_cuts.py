"""Power cuts (the emulated board's CPU killed with SIGKILL) at random moments while an update
downloads, while it is verified and switched to, and during the new version's trial boot: 100 of
them, after each of which the board must boot a version that verified, never a mix and never nothing.
`make test` runs three (tests/board/test_ota.py); the MicroPython unit tests cut at every write
(tests/firmware). SBD_OTA_CUTS and SBD_OTA_SEED change the count and the random moments."""
from __future__ import annotations

import os

from ota_lab import power_cut_series

CUTS = int(os.environ.get("SBD_OTA_CUTS", "100"))


def test_power_cuts_during_updates_never_brick_the_board(tmp_path):
    summary = power_cut_series(tmp_path, CUTS, seed=int(os.environ.get("SBD_OTA_SEED", "5")))
    assert summary["cuts"] == CUTS
