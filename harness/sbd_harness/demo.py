"""`make demo`: the story so far, on an emulated board, from nothing.

Starts a fresh emulated ESP32, flashes the reference firmware, shows its boot
line, and ends with the `sbd verify` table.
"""
from __future__ import annotations

import json
import sys

from rich.console import Console

from . import cli
from .boards.emulated import EmulatedBoard

BOARD = "demo"


def main() -> int:
    console = Console()
    board = EmulatedBoard(BOARD)
    if board.state.exists():
        board.remove()
    console.rule("[bold]1. An emulated ESP32 powers on")
    info = board.start()
    console.print_json(json.dumps(info))
    console.rule("[bold]2. Flash the reference firmware")
    if cli.main(["flash", "--board", BOARD]) != 0:
        return 1
    console.rule("[bold]3. Its boot line, read from the serial port")
    capture = board.capture_boot("hard")
    print(capture.transcript.strip(), flush=True)
    console.rule("[bold]4. sbd verify")
    code = cli.main(["verify", "--board", BOARD, "--report", "reports/demo/report.json",
                     "--junit", "reports/demo/junit.xml"])
    board.stop()
    console.print(f"\nThe board is stopped; its flash is kept. Start it again with: sbd board start {BOARD}")
    return code


if __name__ == "__main__":
    sys.exit(main())
