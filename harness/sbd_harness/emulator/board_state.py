"""The files one emulated board keeps in its folder, and safe access to them."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class BoardState:
    """`<state>/boards/<name>/`: board.json, flash.bin, serial.log, tty, control.sock ..."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config_path(self) -> Path:
        return self.dir / "board.json"

    @property
    def flash_path(self) -> Path:
        return self.dir / "flash.bin"

    @property
    def pins_path(self) -> Path:
        return self.dir / "pins"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def serial_link(self) -> Path:
        return self.dir / "tty"

    @property
    def control_socket(self) -> Path:
        return self.dir / "control.sock"

    @property
    def status_path(self) -> Path:
        return self.dir / "status.json"

    @property
    def events_path(self) -> Path:
        return self.dir / "events.json"

    @property
    def supervisor_log(self) -> Path:
        return self.dir / "supervisor.log"

    def exists(self) -> bool:
        return self.config_path.exists()

    def load(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    def save(self, conf: dict[str, Any]) -> None:
        self._atomic_write(self.config_path, json.dumps(conf, indent=2) + "\n")

    def write_status(self, status: dict[str, Any]) -> None:
        status = dict(status, supervisor_pid=os.getpid(), updated=time.time())
        self._atomic_write(self.status_path, json.dumps(status) + "\n")

    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}

    def write_events(self, events: dict[str, Any]) -> None:
        self._atomic_write(self.events_path, json.dumps(events) + "\n")

    def read_events(self) -> dict[str, Any]:
        """The supervisor's record of the firmware's last boot line and net events: {kind: {"time", "line"},
        "latest": kind}; {} before the firmware said any."""
        try:
            return json.loads(self.events_path.read_text())
        except (OSError, ValueError):
            return {}

    def mark_ready(self) -> None:
        (self.dir / "ready").write_text(str(os.getpid()))

    def mark_stopped(self) -> None:
        for name in ("ready", "control.sock", "status.json"):
            try:
                (self.dir / name).unlink()
            except FileNotFoundError:
                pass

    def write_failure(self, text: str) -> None:
        (self.dir / "failure.txt").write_text(text + "\n")

    def set_pin(self, pin: int, level: int) -> None:
        levels = self.pin_levels()
        levels[pin] = 1 if level else 0
        self.write_pins(levels)

    def write_pins(self, levels: dict[int, int]) -> None:
        # Rewritten in place with one pwrite: the CPU keeps this file open
        # across the mount of the device filesystem and re-reads it.
        text = "".join(f"{k}={v}\n" for k, v in sorted(levels.items())).encode()
        fd = os.open(self.pins_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, text.ljust(512, b"\n"), 0)
        finally:
            os.close(fd)

    def pin_levels(self) -> dict[int, int]:
        levels: dict[int, int] = {}
        try:
            for line in self.pins_path.read_text().splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    levels[int(k)] = int(v)
        except FileNotFoundError:
            pass
        return levels

    def append_serial_log(self, data: bytes, limit: int) -> None:
        with open(self.serial_log, "ab") as f:
            f.write(data)
            size = f.tell()
        if size > limit:
            keep = self.serial_log.read_bytes()[-limit // 2:]
            self._atomic_write(self.serial_log, keep)

    @staticmethod
    def _atomic_write(path: Path, content: str | bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(tmp, mode) as f:
            f.write(content)
        os.replace(tmp, path)
