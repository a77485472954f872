"""Putting the firmware files on a board, and checking they arrived intact."""
from __future__ import annotations

from typing import Callable

from sbd_harness.boards.base import Board, BoardError
from sbd_harness.release.bundle import FirmwareBundle

Progress = Callable[[int, int], None]


def flash_firmware(board: Board, bundle: FirmwareBundle, progress: Progress | None = None,
                   reset: bool = True) -> dict[str, str]:
    """Replaces the application on the board's filesystem with `bundle`.

    The old application (boot.py, main.py, /lib) is removed first so no stale
    module survives; user data elsewhere on the filesystem is kept. Every file
    is read back by hash on the device before the board is reset.
    """
    for path in ("/lib", "/boot.py", "/main.py"):
        board.remove_tree(path)
    board.put_files(bundle.files, progress)
    expected = bundle.file_hashes()
    actual = board.file_sha256(list(expected))
    bad = [p for p, h in expected.items() if actual.get(p) != h]
    if bad:
        raise BoardError(f"files did not arrive intact: {', '.join(bad)}")
    if reset:
        board.reset("hard")
    return expected
