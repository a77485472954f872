"""The device under test on the lab broker, as every network check meets it:
its ID from the boot line, its birth message, a reset to get a prompt
connection, and what it said last on serial when something goes wrong.
(A helper module of the catalogue, not a check file.)"""
from __future__ import annotations

import pytest

from sbd_harness.boards.base import BoardError
from sbd_harness.watch import Message, Watcher

ONLINE_TIMEOUT_S = 75  # longer than the device's longest backoff (60 s)
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


def is_birth(base: str):
    """Matches the device's live (not retained) `online: true` state message."""
    def match(m: Message) -> bool:
        body = m.json()
        return m.topic == f"{base}/state" and not m.retain and isinstance(body, dict) and body.get("online") is True
    return match


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


def wait_online(board, watcher: Watcher, base: str, reset: bool = True) -> Message:
    """Waits for a fresh birth message: the device (re)connected. After one
    device that never came online, the later checks fail at once."""
    assert not getattr(watcher.broker, "never_online", False), NEVER_ONLINE
    if reset:
        reset_board(board)
    birth = watcher.wait_for(is_birth(base), ONLINE_TIMEOUT_S)
    if birth is not None:
        watcher.broker.seen_online = True
    elif not getattr(watcher.broker, "seen_online", False):
        watcher.broker.never_online = True
    assert birth is not None, (f"the device did not connect to the lab broker within {ONLINE_TIMEOUT_S} s "
                               f"(is it configured for this broker address and port?){serial_tail(board)}")
    return birth


def serial_tail(board, size: int = 1500) -> str:
    """What the board said last, for a failure message (emulated boards keep a serial log)."""
    log = getattr(board, "serial_log", None)
    if not callable(log):
        return ""
    try:
        return "; serial: " + log()[-size:]
    except Exception:  # noqa: BLE001 - a diagnostic only; the failure itself is already known
        return ""
