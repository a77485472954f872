"""Small helpers the tests share: mpremote as a user runs it, serial reads."""
from __future__ import annotations

import subprocess
import sys
import time

import serial


def mpremote(port: str, *args: str, timeout: float = 60) -> str:
    """Runs the mpremote command line, unchanged, against a port; returns stdout."""
    proc = subprocess.run([sys.executable, "-m", "mpremote", "connect", port, *args],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"mpremote {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def read_until(port: serial.Serial, marker: bytes, timeout: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} within {timeout}s; got {data[-500:]!r}")
        data += port.read(4096)
    return data
