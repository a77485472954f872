"""The one interface every board offers the harness, its checks and its CLI."""
from __future__ import annotations

import abc
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import serial

from sbd_harness.errors import SbdError

Progress = Callable[[int, int], None]


# Runs on the device: every file under "/" (folders are walked, not listed) and sys.path.
_LIST_FILES_CODE = """
import json, os, sys
def _walk(p, out):
    for e in os.ilistdir(p or '/'):
        q = p + '/' + e[0]
        if e[1] & 0x4000:
            _walk(q, out)
        else:
            out.append(q)
    return out
print(json.dumps({'files': _walk('', []), 'path': sys.path}))
"""


class BoardError(SbdError, RuntimeError):
    """Something the board did or did not do; the message says what to try."""


class BoardRaised(BoardError):
    """The board ran the code it was given and raised: an answer, not a silence."""



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
    def exec(self, code: str, timeout: float = 10, soft_reset: bool = False) -> str:
        """Runs code in the raw REPL; returns what it printed. Fails on a locked console. With
        `soft_reset`, after a soft reset in the raw REPL (boot.py runs, main.py does not): on the
        heap a boot leaves, not on what earlier code there left."""

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
    def capture_boot(self, kind: str = "hard", timeout: float = 20, settle: float = 0.3,
                     until: str | None = None) -> BootCapture:
        """Resets the board and records the serial output up to its boot line (and on until
        the text `until` appears, when given), plus `settle` seconds."""

    @abc.abstractmethod
    def open_port(self) -> contextlib.AbstractContextManager[serial.Serial]:
        """The board's serial port, opened exclusively, for a check that talks to it byte by byte."""

    @abc.abstractmethod
    def trigger_reset(self, port: serial.Serial, kind: str) -> None:
        """Starts a reset through an open port (or the board's own means) and returns at once."""

    def list_files(self) -> tuple[list[str], list[str]]:
        """(every file on the board's filesystem, sorted; its sys.path) through the REPL:
        what a check needs to see files the build does not have. Fails on a locked console."""
        out = self.exec(_LIST_FILES_CODE, timeout=30)
        found = json.loads(out.strip().splitlines()[-1])
        return sorted(found["files"]), list(found["path"])

    def console_request(self, line: str, reply_key: str = "cmd", timeout: float = 20,
                        follow: str | None = None) -> dict[str, Any]:
        """Writes one line to the running firmware's console; returns its JSON answer."""
        raise BoardError(f"{self.name} has no console to send commands to")


# Capabilities ------------------------------------------------------------------------
# What a board can do beyond its serial port, declared by the classes it derives
# from (as labgrid's protocols are): a check asks for one with `has()` or
# `need()` and skips with the reason when the board lacks it.

class PowerControl(abc.ABC):
    """The board's supply can be cut and restored: `reset("power-cut")` works."""

    @abc.abstractmethod
    def power_cut(self, timeout: float = 15) -> None:
        """Cuts the power, restores it, and returns once the new boot has begun."""


class LinkControl(abc.ABC):
    """The harness holds the board's network link and can cut it."""

    @abc.abstractmethod
    def set_link(self, up: bool) -> None:
        ...

    @abc.abstractmethod
    def own_network(self) -> dict[str, Any] | None:
        """The board's own lab network (`netns`, `host_if`, `address`), or None where it shares the
        host's loopback (then its traffic cannot be told from the host's)."""


class FlashReadback(abc.ABC):
    """The harness can read the board's whole flash chip (for secrets held at rest)."""

    @abc.abstractmethod
    def flash_image(self) -> Any:
        ...


class SerialLog(abc.ABC):
    """Everything the board ever printed on its serial port is kept, readable while it runs."""

    @abc.abstractmethod
    def serial_log(self) -> str:
        ...

    @abc.abstractmethod
    def log_size(self) -> int:
        ...

    @abc.abstractmethod
    def log_since(self, since: int) -> str:
        """The log from offset `since` (a `log_size()` taken earlier) to its end."""

    @abc.abstractmethod
    def wait_for_output(self, marker: str, since: int = 0, timeout: float = 20, after: str | None = None) -> str:
        """Waits until `marker` appears in the log after offset `since` (and after `after`)."""


class RadioObserver(abc.ABC):
    """The lab sees the board's radios from outside (an emulated board's supervisor; on a bench, a
    receiver listening for the access point's beacons and Bluetooth advertising)."""

    @abc.abstractmethod
    def observed_radios(self) -> dict[str, bool]:
        """Radio name (`wifi_sta`, `wifi_ap`, `bluetooth`) -> on, as observed now; a radio never
        turned on since the last boot may be missing (off)."""


class BootButton(abc.ABC):
    """The harness can hold the BOOT button (GPIO0) down."""

    @abc.abstractmethod
    def press_boot_button(self, pressed: bool = True) -> None:
        ...


class SyntheticAppImages(abc.ABC):
    """The board's bootloader checks the app images in its slots (format, digest, rollback, secure
    version) but its CPU does not run their code: an image the harness makes boots as well as a real
    build (the emulated board). On a chip, only an image built for it may be installed."""


def has(board: Any, capability: type) -> bool:
    """Whether the board declares the capability."""
    return isinstance(board, capability)


def describe_capabilities(board: Any) -> list[str]:
    return [c.__name__ for c in (PowerControl, LinkControl, FlashReadback, SerialLog, BootButton, SyntheticAppImages,
                                 RadioObserver) if has(board, c)]
