"""Shared fixtures for the project's own tests.

Every test run keeps its emulated boards in its own state folder, so runs
never see each other's boards, and removes every board it started.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "harness"))  # also when the package is not installed

_STATE = tempfile.mkdtemp(prefix="sbd-test-")
os.environ["SBD_STATE_DIR"] = _STATE
os.environ.setdefault("SBD_LAB_LEASES", "/run/sbd-lab/leases")

from sbd_harness.boards.emulated import EmulatedBoard  # noqa: E402
from sbd_harness.lab.broker import free_port, lab_address  # noqa: E402

# The lab broker of `sbd verify` runs in tests on a port of their own, not on
# 8883, where a demo or a user's broker may be running.
os.environ["SBD_BROKER"] = f"{lab_address()}:{free_port(lab_address())}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    for board in EmulatedBoard.all():
        board.remove()
    shutil.rmtree(_STATE, ignore_errors=True)


@pytest.fixture
def make_board() -> Iterator[Callable[..., EmulatedBoard]]:
    """Starts emulated boards with fresh names; removes them afterwards."""
    made: list[EmulatedBoard] = []

    def make(prefix: str = "t") -> EmulatedBoard:
        board = EmulatedBoard(f"{prefix}-{uuid.uuid4().hex[:8]}")
        board.start()
        made.append(board)
        return board

    yield make
    for board in made:
        board.remove()


@pytest.fixture(scope="module")
def module_board() -> Iterator[EmulatedBoard]:
    """One started board for a module's read-mostly tests."""
    board = EmulatedBoard(f"m-{uuid.uuid4().hex[:8]}")
    board.start()
    yield board
    board.remove()


@pytest.fixture
def locked_board(make_board, ca) -> Callable[..., EmulatedBoard]:
    """Boards taken through the one lifecycle: started, flashed (the reference, or `firmware`),
    provisioned by the module's CA for the lab broker at `port` (8883 unless given), trusting
    `release_keys` (default: the lab release key), and locked unless lock=False."""
    from sbd_harness.boards import lifecycle
    from sbd_harness.release.bundle import FirmwareBundle

    def make(firmware: Path | None = None, port: int | None = None, release_keys: list[bytes] | None = None,
             lock: bool = True, prefix: str = "b") -> EmulatedBoard:
        board = make_board(prefix)
        lifecycle.flashed(board, FirmwareBundle.from_dir(firmware))
        lifecycle.provisioned(board, ca, lock=lock, broker_port=port if port is not None else 8883,
                              release_keys=release_keys)
        return board

    return make


@pytest.fixture(scope="session")
def bundle():
    from sbd_harness.release.bundle import FirmwareBundle
    return FirmwareBundle.from_dir(ROOT / "firmware")


@pytest.fixture(scope="module")
def flashed_board(module_board, bundle) -> EmulatedBoard:
    from sbd_harness.boards.flashing import flash_firmware
    flash_firmware(module_board, bundle)
    return module_board


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> "LabCA":
    """A lab CA of the module's own."""
    from sbd_harness.identity.pki import LabCA
    ca = LabCA(tmp_path_factory.mktemp("pki"))
    ca.init()
    return ca


@pytest.fixture(scope="module")
def release_key():
    """The lab release key where `sbd verify` looks for it (<state>/release/release-key.pem);
    removed afterwards when this module made it."""
    from sbd_harness.release import ota
    path = ota.default_release_key_path()
    made = not path.exists()
    key = ota.ReleaseKey.generate(path) if made else ota.ReleaseKey.load(path)
    yield key
    if made:
        path.unlink(missing_ok=True)
