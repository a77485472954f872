"""The one interface every board offers the harness, its checks and its CLI."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

Progress = Callable[[int, int], None]


class BoardError(RuntimeError):
    """Something the board did or did not do; the message says what to try."""


@dataclass
class BootCapture:
    """What the serial port showed during one boot."""

    transcript: str
    boot_line: dict[str, Any] | None
    elapsed_s: float
    extra: dict[str, Any] = field(default_factory=dict)


class Board(abc.ABC):
    name: str
    kind: str  # "emulated" or "serial"

    @property
    @abc.abstractmethod
    def port(self) -> str:
        """Serial device path or rfc2217:// URL."""

    @property
    def address(self) -> str | None:
        """The board's IP address, where the harness knows it."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "serial": self.port, "address": self.address}

    @abc.abstractmethod
    def exec(self, code: str, timeout: float = 10) -> str:
        """Runs code in the raw REPL; returns what it printed. Fails on a locked console."""

    @abc.abstractmethod
    def put_files(self, files: Mapping[str, bytes], progress: Progress | None = None) -> None:
        """Writes files (device path -> content), creating directories."""

    @abc.abstractmethod
    def read_file(self, path: str) -> bytes:
        ...

    @abc.abstractmethod
    def remove_tree(self, path: str) -> None:
        ...

    @abc.abstractmethod
    def file_sha256(self, paths: list[str]) -> dict[str, str | None]:
        """SHA-256 of each file as computed on the device (None: no such file)."""

    @abc.abstractmethod
    def reset(self, kind: str = "hard", timeout: float = 15) -> None:
        """"soft" (Ctrl-D), "hard" (EN pin) or "power-cut" where the board can;
        returns once the new boot shows a prompt or a boot line."""

    @abc.abstractmethod
    def capture_boot(self, kind: str = "hard", timeout: float = 20, settle: float = 0.3) -> BootCapture:
        """Resets the board and records the serial output up to its boot line."""
