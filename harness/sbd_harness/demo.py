"""`make demo`: the story so far, on an emulated board, from nothing.

Starts a fresh emulated ESP32, flashes the reference firmware, shows its boot
line, provisions it from the lab CA (its own key, a certificate, a locked
console), and ends with the `sbd verify` table.
"""
from __future__ import annotations

import json
import sys

from rich.console import Console

from . import cli
from .boards.emulated import EmulatedBoard
from .pki import LabCA
from .provisioning import provision

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
    console.rule("[bold]4. Provision: a key born on the device, a certificate from the lab CA")
    ca = LabCA()
    if not ca.exists():
        ca.init()
    result = provision(board, ca)
    cert = result.issued.certificate
    console.print(f"subject      {cert.subject.rfc4514_string()}")
    console.print(f"issuer       {cert.issuer.rfc4514_string()}")
    console.print(f"fingerprint  SHA-256 {result.issued.fingerprint}")
    console.print(f"valid until  {cert.not_valid_after_utc:%Y-%m-%d}")
    console.print(f"boot line    {result.boot_line}")
    console.rule("[bold]5. sbd verify (with the destructive factory-reset check, run last)")
    code = cli.main(["verify", "--board", BOARD, "--report", "reports/demo/report.json",
                     "--junit", "reports/demo/junit.xml", "--destructive"])
    board.stop()
    console.print(f"\nThe board is stopped; its flash is kept. Start it again with: sbd board start {BOARD}")
    return code


if __name__ == "__main__":
    sys.exit(main())
