"""What most checks need to know about the board under test: its boot line,
whether it is provisioned, and what it holds on its flash where the harness
can read the flash back. (A helper module of the catalogue, not a check file.)"""
from __future__ import annotations

from typing import Any

import pytest

from sbd_harness.boards.base import FlashReadback, has
from sbd_harness.release import mud

NVS_NS = "sbd"


def boot_line_or_skip(sbd_boot):
    boot = sbd_boot.boot_line
    if boot is None:
        pytest.skip("no boot line to learn the device's state from (see boot-line-identifies-firmware)")
    return boot


def require_provisioned(boot):
    if not boot.get("security", {}).get("provisioned"):
        pytest.skip("the board is not provisioned (sbd provision)")


def skip_if_locked(boot, what):
    if boot.get("security", {}).get("console") == "locked":
        pytest.skip(f"the console is locked, so {what}")


def flash_store(board):
    """The NVS store of a board whose flash the harness reads back (FlashReadback)."""
    from sbd_harness.emulator.nvs_reader import read_store
    return read_store(board.flash_image().read_partition("nvs"))


def reads_flash(board) -> bool:
    """Whether the harness can read the board's flash: secrets at rest can then be compared."""
    return has(board, FlashReadback)


def board_settings(board) -> dict[str, Any] | None:
    try:
        return mud.board_settings(board)
    except mud.MudError:
        return None
