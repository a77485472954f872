"""The firmware's boot line: one JSON object per boot on the serial console.

It is how the harness learns a board's firmware version, device ID and
security state from what any board shows, a locked one included.
"""
from __future__ import annotations

import json
from typing import Any

REQUIRED_KEYS = ("sbd", "fw_version", "device_id", "security")


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    """Every {"sbd": ...} JSON line the firmware printed, oldest first."""
    found = []
    for raw in text.splitlines():
        line = raw.strip().strip("\x00")
        start = line.find('{"sbd"')
        if start < 0:
            continue
        try:
            obj = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def parse_boot_lines(text: str) -> list[dict[str, Any]]:
    """Every boot line in a serial transcript, oldest first."""
    return [obj for obj in parse_json_lines(text) if obj.get("sbd") == "boot"]


def last_boot_line(text: str) -> dict[str, Any] | None:
    lines = parse_boot_lines(text)
    return lines[-1] if lines else None


def missing_keys(boot: dict[str, Any]) -> list[str]:
    return [k for k in REQUIRED_KEYS if k not in boot]
