"""The console lock of firmware/boot.py and firmware/main.py under MicroPython, with
Ctrl-C delivered as on the ESP32: pending, raised at the VM's next check point
(ports/esp32/uart.c calls mp_sched_keyboard_interrupt(); py/vm.c raises it after
a jump). The interpreter runs under the emulated board's CPU launcher
(sbd_harness.emulator.cpu), where SIGQUIT makes a KeyboardInterrupt pending.

The Ctrl-C is made pending during C work that comes right before the lock
with no check point between: the worst instant, a Ctrl-C a few microseconds
before kbd_intr(-1). No KeyboardInterrupt may leave the lock."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from sbd_harness.emulator.micropython import cpu_command
from sbd_harness.release.mistakes import LOCK_FIRST, LOCK_UNCHECKED

ROOT = Path(__file__).resolve().parents[2]

# exec() of the lock follows the C work directly: STORE_NAME, LOAD_NAME, CALL, no jump.
SCRIPT = """
import sys
LOCK = open(sys.argv[1]).read()
print('GO')
n = str(7 ** 20000)
exec(LOCK, {})
print('SURVIVED')
"""


def _run_lock(tmp_path: Path, lock: str) -> str:
    (tmp_path / "lock.py").write_text(lock)
    (tmp_path / "run.py").write_text(SCRIPT)
    proc = subprocess.Popen(cpu_command() + [str(tmp_path / "run.py"), str(tmp_path / "lock.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"GO"
        os.kill(proc.pid, signal.SIGQUIT)  # Ctrl-C, as the UART handler schedules it
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out.decode(errors="replace")


@pytest.mark.parametrize("name", ["boot.py", "main.py"])
def test_the_firmware_opens_with_the_lock(name):
    text = (ROOT / "firmware" / name).read_text()
    assert LOCK_FIRST in text
    before = text[:text.index(LOCK_FIRST)]
    assert all(line.startswith("#") for line in before.splitlines()), "code before the lock"


def test_a_ctrl_c_pending_at_the_lock_is_caught_inside_it(tmp_path):
    out = _run_lock(tmp_path, LOCK_FIRST)
    assert "SURVIVED" in out and "KeyboardInterrupt" not in out, out


def test_without_the_check_point_the_pending_ctrl_c_escapes_the_lock(tmp_path):
    """The lock without its `if` (variant unchecked-lock): the first check point is the
    jump out of the try, and the KeyboardInterrupt leaves the file."""
    out = _run_lock(tmp_path, LOCK_UNCHECKED)
    assert "KeyboardInterrupt" in out and "SURVIVED" not in out, out
