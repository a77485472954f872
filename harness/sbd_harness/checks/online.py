"""The device under test on the lab broker, as every network check meets it:
its ID from the boot line, its birth message, a reset to get a prompt
connection, and what it said last on serial when something goes wrong.
(A helper module of the catalogue, not a check file.)"""
from __future__ import annotations

from typing import Any

import pytest

from sbd_harness.boards.base import BoardError, SerialLog, has
from sbd_harness.device.contract import ONLINE_TIMEOUT_S, Topics, is_birth, is_command_result, telemetry_body, topics
from sbd_harness.lab.watch import Message, Watcher, on_topic

NEVER_ONLINE = "the device never connected to the lab broker earlier in this run"


def locked_device_id(sbd_boot) -> str:
    """The device's ID, or a skip when the board does not go online (not provisioned and locked)."""
    boot = sbd_boot.boot_line
    if boot is None:
        pytest.skip("no boot line to learn the device's ID from (see boot-line-identifies-firmware)")
    security = boot.get("security", {})
    if not security.get("provisioned") or security.get("console") != "locked":
        pytest.skip("the board is not provisioned and locked (sbd provision): it does not go online")
    return boot["device_id"]


def board_address(board) -> str | None:
    """The board's own address on the lab network, when it has one of its own
    (not shared loopback): stand-in brokers then count only its connections."""
    address = getattr(board, "address", None)
    return address if address and not address.startswith("127.") else None


def reset_board(board, kind: str = "hard") -> bool:
    """False when the harness cannot reset this board (then the checks wait out its backoff)."""
    try:
        board.reset(kind)
        return True
    except BoardError:
        return False


def wait_online(board, watcher: Watcher, topic: Topics, reset: bool = True) -> Message:
    """Waits for a fresh birth message: the device (re)connected. After one
    device that never came online, the later checks fail at once."""
    assert not getattr(watcher.broker, "never_online", False), NEVER_ONLINE
    if reset:
        reset_board(board)
    birth = watcher.wait_for(is_birth(topic), ONLINE_TIMEOUT_S)
    if birth is not None:
        watcher.broker.seen_online = True
    elif not getattr(watcher.broker, "seen_online", False):
        watcher.broker.never_online = True
    assert birth is not None, (f"the device did not connect to the lab broker within {ONLINE_TIMEOUT_S} s "
                               f"(is it configured for this broker address and port?){serial_tail(board)}")
    return birth


def serial_tail(board, size: int = 1500) -> str:
    """What the board said last, for a failure message (emulated boards keep a serial log)."""
    if not has(board, SerialLog):
        return ""
    try:
        return "; serial: " + board.serial_log()[-size:]
    except Exception:  # noqa: BLE001 - a diagnostic only; the failure itself is already known
        return ""


def signed_command(watcher: Watcher, ca, device_id: str, cmd: str, args: dict | None = None,
             timeout: float = 30) -> dict[str, Any] | None:
    """A command signed by the lab CA, sent on the device's command topic; its result."""
    topic = topics(device_id)
    watcher.publish(topic.cmd, ca.sign_command(device_id, cmd, args))
    reply = watcher.wait_for(is_command_result(topic, cmd), timeout)
    return reply.json() if reply else None


def telemetry_readings(watcher: Watcher, topic: Topics) -> list[dict]:
    """Every telemetry reading seen so far, in the contract's form."""
    bodies = (telemetry_body(m) for m in watcher.seen(on_topic(topic.telemetry)))
    return [b for b in bodies if b is not None]


class FastTelemetry:
    """Telemetry every second for the length of a check, then back as it was."""

    def __init__(self, watcher: Watcher, ca, device_id: str):
        self.args = (watcher, ca, device_id)
        self.previous = None

    def __enter__(self) -> "FastTelemetry":
        reply = signed_command(*self.args, "set_interval", {"seconds": 1})
        assert reply and reply.get("ok"), f"the device refused a signed set_interval command: {reply}"
        self.previous = reply.get("previous_s")
        return self

    def __exit__(self, *exc) -> None:
        if self.previous and self.previous != 1:
            signed_command(*self.args, "set_interval", {"seconds": self.previous})
