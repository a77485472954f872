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
    from sbd_harness.lab.broker import lab_address
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


# The catalogue's check IDs, grouped as the tests select them (`sbd verify --check ID ...`).
BROKER_CHECKS = ("broker-requires-client-certificate", "broker-refuses-revoked-certificates",
                 "broker-confines-each-identity", "broker-tls-configuration")
DEVICE_NETWORK_CHECKS = ("telemetry-over-mutual-tls", "rogue-brokers-refused", "outages-lose-nothing",
                         "hostile-broker-fuzzing-survived", "invalid-commands-refused-over-mqtt")
UPDATE_CHECKS = ("unsigned-or-foreign-updates-refused", "update-rollback-refused")
DOCS_CHECKS = ("vulnerability-disclosure-policy-published", "support-period-declared")
SURFACE_CHECKS = ("no-listening-ports", "connections-match-mud", "serial-discloses-nothing-after-lock")
# Checks that need no broker: what the board shows on its serial port, its flash and the lab CA's records.
OFFLINE_CHECKS = ("boot-line-identifies-firmware", "device-id-from-hardware", "firmware-matches-build",
                  "identity-certified-by-lab-ca", "device-keys-unique", "no-default-or-shared-secrets",
                  "no-private-key-on-serial", "console-locked", "commands-need-a-valid-signature",
                  "factory-reset-erases-identity", "chip-security-fuses")


def only(*check_ids: str) -> list[str]:
    """`sbd verify` arguments that select these checks by ID."""
    return [arg for check_id in check_ids for arg in ("--check", check_id)]
