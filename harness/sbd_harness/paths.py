"""Where the project's folders and the harness's run-time state live."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def boards_dir() -> Path:
    """Board descriptions (`boards/<name>/board.json`) and the emulated board's ROM."""
    return Path(os.environ.get("SBD_BOARDS_DIR", REPO_ROOT / "boards"))


def firmware_dir() -> Path:
    """The firmware files that go on the device filesystem."""
    return Path(os.environ.get("SBD_FIRMWARE_DIR", REPO_ROOT / "firmware"))


def state_dir() -> Path:
    """Per-user state: running emulated boards, their flash images and logs.

    `SBD_STATE_DIR` moves it (the tests give each run its own), so parallel
    runs never see each other's boards.
    """
    default = REPO_ROOT / ".sbd"
    path = Path(os.environ.get("SBD_STATE_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path
