"""Small helpers the tests share: mpremote as a user runs it, serial reads."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def verify_report(board: Any, ca: Any, report: Path, *extra: str, port: int | None = None,
                  timeout: float = 900) -> tuple[int, dict[str, Any]]:
    """Runs `sbd verify` on `board` as a user would, with the test's CA (and the lab
    broker on `port`); returns its exit code and the JSON report it wrote."""
    from sbd_harness.broker import lab_address
    broker = ["--broker", f"{lab_address()}:{port}"] if port is not None else []
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "verify", "--board", board.name,
                           "--pki", str(ca.dir), *broker, "--report", str(report), *extra],
                          capture_output=True, text=True, timeout=timeout)
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, json.loads(report.read_text())


def unexpected(report: dict[str, Any], expected: str = "pass", size: int = 6000) -> str:
    """The checks of a report whose status is not `expected`, message first, for an
    assertion's text: the whole report is too long to show, and its tail rarely names them."""
    odd = [{"id": c["id"], "status": c["status"], "message": c.get("message", ""),
            "evidence": c.get("evidence", {})}
           for c in report.get("checks", []) if c.get("status") != expected]
    return json.dumps(odd, indent=1)[:size]
