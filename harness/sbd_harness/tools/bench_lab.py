"""What the `make bench` device figures share: a fresh board flashed and a
throw-away lab CA, heap-size boots and the bisection over them, locking and
unlocking the console, and the statistic they report (docs/benchmarks.md)."""
from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sbd_harness.device.contract import topics
from sbd_harness.boards.base import BoardError
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.boards.serial_board import read_boot
from sbd_harness.device.bootline import last_boot_line
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.boards.flashing import flash_firmware
from sbd_harness.identity.commands import mqtt_challenge
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.watch import Watcher

# What a fresh boot holds once collected: the lower bound of a heap bisection.
IDLE_HEAP = "import gc\ngc.collect()\nprint(gc.mem_alloc())"


def median(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


@contextmanager
def fresh_lab(board_name: str, bundle: FirmwareBundle) -> Iterator[tuple[Path, LabCA, EmulatedBoard]]:
    """A scratch folder, a lab CA in it and a new board of that name with
    `bundle` flashed; the board and the folder are removed afterwards, so a
    benchmark never touches the user's own CA or boards."""
    with tempfile.TemporaryDirectory() as tmp:
        ca = LabCA(Path(tmp) / "pki")
        ca.init()
        board = EmulatedBoard(board_name)
        board.remove()
        board.start()
        try:
            flash_firmware(board, bundle)
            yield Path(tmp), ca, board
        finally:
            board.remove()


def boot_with_heap(board: EmulatedBoard, heap_bytes: int, timeout: float = 10) -> None:
    """Powers the board off and on with another `-X heapsize` (the supervisor
    reads it at start) and waits for this boot's REPL prompt. A heap too small
    to boot makes the CPU crash and reboot over and over: BoardError at once."""
    board.stop()
    conf = board.state.load()
    conf["heap_bytes"] = heap_bytes
    board.state.save(conf)
    since = board.log_size()
    board.start(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        text = board._log_since(since)
        if "CPU stopped" in text:
            raise BoardError(f"does not boot with a {heap_bytes}-byte heap")
        at = text.rfind("rst:0x")
        if at >= 0 and ">>> " in text[at:]:
            return
        if time.monotonic() > deadline:
            raise BoardError(f"no REPL prompt within {timeout}s with a {heap_bytes}-byte heap")
        time.sleep(0.02)


def smallest_heap(idle: int, full: int, resolution: int, attempt: Callable[[int], tuple[bool, str]],
                  out_of_heap: Callable[[str], bool], what: str) -> tuple[int, int, str | None]:
    """Bisection between `idle` bytes (fails) and `full` (succeeds) for the
    smallest heap, a multiple of `resolution`, in which `attempt(heap)` succeeds.
    A failure that does not read as out-of-heap is tried again once; the result
    is tried once more, and raised a step at a time if that fails (a boot's heap
    layout varies with timing and the handshake's random values).
    Returns (bytes, trials, the last failure's text)."""
    lo, hi = idle // resolution, -(-full // resolution)  # in units of `resolution`
    trials = 0
    failure = None

    def trial(units: int) -> bool:
        nonlocal trials, failure
        for _ in range(2):
            trials += 1
            ok, said = attempt(units * resolution)
            if ok or out_of_heap(said):
                break
        if not ok:
            failure = said
        return ok

    while hi - lo > 1:
        mid = (lo + hi) // 2
        if trial(mid):
            hi = mid
        else:
            lo = mid
    for _ in range(8):
        if trial(hi):
            break
        hi += 1
    else:
        raise BoardError(f"{what} does not succeed again at {hi * resolution} bytes: {failure}")
    return hi * resolution, trials, failure


def lock_console(board: EmulatedBoard, timeout: float = 30) -> None:
    """provisioning.lock(): the board reboots into its locked firmware."""
    with board.session() as t:
        t.exec_raw_no_follow("from sbd import provisioning\nprovisioning.lock()")
        boot = last_boot_line(read_boot(t.serial, timeout))
        t.in_raw_repl = False  # the board rebooted into its locked firmware
    if (boot or {}).get("security", {}).get("console") != "locked":
        raise BoardError(f"{board.name} did not come back locked: boot line {boot}")


def unlock_console(board: EmulatedBoard, watcher: Watcher, ca: LabCA, device_id: str,
                   timeout: float = 30) -> None:
    """The signed unlock_console command over MQTT, with the challenge the device hands out just
    before; the device answers, then reboots unlocked."""
    topic = topics(device_id)
    since = board.log_size()
    challenge = mqtt_challenge(watcher, ca, device_id)
    watcher.publish(topic.cmd, ca.sign_command(device_id, "unlock_console", challenge=challenge))
    reply = watcher.wait_for(lambda m: m.topic == topic.result
                             and (m.json() or {}).get("cmd") == "unlock_console", timeout)
    if reply is None or not reply.json().get("ok"):
        raise BoardError(f"{board.name} did not accept unlock_console: {reply.json() if reply else None}")
    board.wait_for_output(">>> ", since=since, timeout=timeout, after="rst:0x")
