"""Putting the firmware files on a board, and checking they arrived intact."""
from __future__ import annotations

from typing import Callable

from sbd_harness.boards.base import Board, BoardError
from sbd_harness.release.bundle import FirmwareBundle

Progress = Callable[[int, int], None]


# Runs on the device before the new files are written: the filesystem emptied
# but for user data and the anti-rollback floor, and the update state in NVS
# (the slot record, the image the slots belong to) erased. The names are the
# firmware's (firmware/lib/sbd/slots.py, outbox.py, store.py).
_WIPE_CODE = """
import os, esp32
KEEP = ('data', 'rollback_floor')
def _rm(p):
    if os.stat(p)[0] & 0x4000:
        for n in os.listdir(p):
            _rm(p + '/' + n)
        os.rmdir(p)
    else:
        os.remove(p)
for n in os.listdir('/'):
    if n not in KEEP:
        _rm('/' + n)
nvs = esp32.NVS('sbd')
for k in ('ota', 'ota_fac'):
    try:
        nvs.erase_key(k)
    except OSError:
        pass
nvs.commit()
"""


def flash_firmware(board: Board, bundle: FirmwareBundle, progress: Progress | None = None,
                   reset: bool = True) -> dict[str, str]:
    """Replaces the application on the board's filesystem with `bundle`.

    Everything on the filesystem but user data (/data) and the anti-rollback
    floor is removed first, and the update state in NVS with it: no stale
    module, no package planted beside /lib, no update installed over the old
    image survives, so the board runs exactly the files flashed. The device's
    identity in NVS is kept (a factory reset erases it). Every file is read
    back by hash on the device before the board is reset.
    """
    board.exec(_WIPE_CODE, timeout=60)
    board.put_files(bundle.files, progress)
    expected = bundle.file_hashes()
    actual = board.file_sha256(list(expected))
    bad = [p for p, h in expected.items() if actual.get(p) != h]
    if bad:
        raise BoardError(f"files did not arrive intact: {', '.join(bad)}")
    if reset:
        board.reset("hard")
    return expected
