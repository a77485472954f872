"""What only the chip can tell: secure boot, flash encryption in release mode,
the ROM's UART download mode and JTAG, read from a real ESP32's eFuses with
espefuse (sbd_harness/boards/efuse.py, which says which eFuses decide what).

The official MicroPython builds burn none of these: a development board
fails this check, as it should. Turning them on needs a MicroPython build of
your own and burned eFuses (docs/identity.md). The emulated board has no
eFuses, so there the check is skipped and says why.

SBD_EFUSE_VIRTUAL names a file of espefuse's virtual eFuses (its host-test
mode, `espefuse --virt --path-efuse-file FILE`): the check then reads those
instead of the chip's. It is for the harness's own tests and for labs, never
for judging a real board.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sbd_harness.boards.efuse import judge, read_summary


@pytest.mark.sbd_check(
    id="chip-security-fuses",
    title="The chip's eFuses have secure boot on, flash encryption in release mode, UART download mode "
          "closed or secure, and JTAG disabled")
def check_chip_security_fuses(sbd_board, sbd_evidence):
    virtual = os.environ.get("SBD_EFUSE_VIRTUAL")
    if sbd_board.kind == "emulated":  # a board description, not a capability: it has no chip
        pytest.skip("no eFuses on the emulated board: secure boot, flash encryption and JTAG state can only be "
                    "read from a real ESP32 (sbd verify --port ...)")
    chip = getattr(sbd_board, "chip", "esp32")
    summary = read_summary(sbd_board.port, chip, virtual=Path(virtual) if virtual else None)
    verdict = judge(summary)
    sbd_evidence.update({"chip": chip, "source": f"virtual eFuses {virtual}" if virtual else "espefuse summary",
                         **verdict.as_dict()})
    problems = verdict.problems()
    assert not problems, "; ".join(problems)
