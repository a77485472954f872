"""The one path from a fresh board to one online at the lab broker.

fresh -> flashed -> provisioned -> locked -> online, as labgrid's strategies
bring a target from off to shell: the tests, the demo, the bench and `sbd
ota push` all call these steps instead of each spelling them out.

- `flashed`: the firmware bundle written and checked, the board reset;
- `provisioned`: the device's own key certified by the lab CA, its settings
  (the lab's Wi-Fi and broker for an emulated board) and the release keys
  stored; `lock=True` (the default) then locks the console: `locked`;
- `online`: a broker where the board looks for it and a subscriber on the
  device's topics; the board is reset so that it connects now, not after the
  backoff its failed attempts built up, and the step returns at its birth.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Iterator

from sbd_harness.boards.base import Board, BoardError
from sbd_harness.device.contract import ONLINE_AFTER_RESET_S, Topics, is_birth, telemetry_body, topics
from sbd_harness.identity.pki import LabCA
from sbd_harness.identity.provisioning import ProvisionResult, lab_settings, provision
from sbd_harness.release.bundle import FirmwareBundle

STAGES = ("fresh", "flashed", "provisioned", "locked", "online")


def flashed(board: Board, bundle: FirmwareBundle | None = None, reset: bool = True) -> Board:
    """The board with `bundle` (default: the project's firmware) on it."""
    from sbd_harness.boards.flashing import flash_firmware
    flash_firmware(board, bundle or FirmwareBundle.from_dir(), reset=reset)
    return board


def provisioned(board: Board, ca: LabCA, *, lock: bool = True, broker_port: int | None = None,
                settings: dict | None = None, release_keys: list[bytes] | None = None,
                reissue: bool = False) -> ProvisionResult:
    """The flashed board certified by `ca`; locked unless lock=False. An emulated board gets the
    lab's Wi-Fi and the lab broker at `broker_port` (default: the board's own) unless `settings` are given.
    reissue=True for a board factory-reset since `ca` last certified it (its old certificate is revoked)."""
    if settings is None and broker_port is not None:
        settings = lab_settings(board, broker_port)
    return provision(board, ca, lock=lock, settings=settings, release_keys=release_keys, reissue=reissue)


def locked(board: Board, ca: LabCA, bundle: FirmwareBundle | None = None, **provision_args: Any) -> ProvisionResult:
    """fresh -> flashed -> provisioned -> locked, in one call."""
    flashed(board, bundle)
    return provisioned(board, ca, lock=True, **provision_args)


@dataclass
class Online:
    """A board at its broker: the subscriber on its topics and its birth message."""

    board: Board
    device_id: str
    topic: Topics
    watcher: Any
    birth: dict[str, Any]

    def telemetry(self, timeout: float = 60) -> dict[str, Any]:
        """The device's next telemetry message (its `seq` and the reading in `data`); BoardError
        when none comes within `timeout` s (the device samples every `telemetry_s`, 10 s by default)."""
        m = self.watcher.wait_for(lambda m: m.topic == self.topic.telemetry and telemetry_body(m) is not None,
                                  timeout)
        if m is None:
            raise BoardError(f"{self.device_id} sent no telemetry within {timeout:.0f} s")
        return m.json()

    def reconnect(self, timeout: float = ONLINE_AFTER_RESET_S) -> dict[str, Any]:
        """Resets the board and waits for its next birth message."""
        self.birth = wait_online(self.board, self.watcher, self.topic, timeout)
        return self.birth


def wait_online(board: Board, watcher: Any, topic: Topics, timeout: float = ONLINE_AFTER_RESET_S,
                reset: bool = True) -> dict[str, Any]:
    """Resets the board (unless reset=False) and returns its next birth message; BoardError when none
    comes within `timeout` s, with what the board said last where it keeps a serial log.
    reset=False takes the first birth the watcher has not yet handed out, also one that arrived
    before this call (a board that connected on its own while the watcher was subscribed)."""
    from sbd_harness.boards.base import SerialLog, has
    since = None
    if reset:
        since = time.monotonic()
        board.reset("hard")
    birth = watcher.wait_for(is_birth(topic, since), timeout)
    if birth is None:
        tail = board.serial_log()[-1500:] if has(board, SerialLog) else ""
        raise BoardError(f"{topic.device_id} did not connect to the broker within {timeout:.0f} s"
                         + (" of its reset" if reset else "")
                         + " (is it provisioned, locked and configured for this broker?)"
                         + (f"; it said last: {tail}" if tail else ""))
    return birth.json()


@contextlib.contextmanager
def online(board: Board, broker: Any, device_id: str, timeout: float = ONLINE_AFTER_RESET_S,
           persistent: bool = True) -> Iterator[Online]:
    """The locked board connected to `broker` (running), with a Watcher on its topics for the block."""
    from sbd_harness.lab.watch import Watcher
    topic = topics(device_id)
    with Watcher(broker, topic.all, persistent=persistent) as watcher:
        birth = wait_online(board, watcher, topic, timeout)
        yield Online(board, device_id, topic, watcher, birth)
