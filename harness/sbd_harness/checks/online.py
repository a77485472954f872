"""The device under test on the lab broker, as every network check meets it:
its ID from the boot line, its birth message, a reset to get a prompt
connection, the moment it is ready for requests, what it reports of its
connection on serial, and what it said last when something goes wrong.
(A helper module of the catalogue, not a check file.)"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import pytest

from sbd_harness.boards.base import BoardError, SerialLog, has
from sbd_harness.device.contract import (COMMAND_TIMEOUT_S, FRESH_COMMANDS, NET_CONNECTED, ONLINE_TIMEOUT_S, READY_TIMEOUT_S, Topics, is_birth,
                                         is_command_result, is_ota_event, telemetry_body, topics)
from sbd_harness.identity.commands import mqtt_challenge
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


# A check that stands in for the broker as it goes away meets the device's own retry, after its
# shortest backoff (0.5 to 1 s; 1 to 2 s after one refused attempt), sooner than a reset brings
# it back (about 2.5 s); if none came within this, the device is reset.
FIRST_ATTEMPT_S = 2.5


def retry_or_reset(board, attempted: Callable[[], bool], wait_s: float = FIRST_ATTEMPT_S) -> bool:
    """Waits up to `wait_s` for `attempted()` (the device tried the stand-in by itself); resets
    the board when it did not. True when the board was reset."""
    deadline = time.monotonic() + wait_s
    while not attempted() and time.monotonic() < deadline:
        time.sleep(0.02)
    if attempted():
        return False
    reset_board(board)
    return True


def log_offset(board) -> int:
    """Where the board's serial log ends now (0 where the harness keeps none)."""
    return board.log_size() if has(board, SerialLog) else 0


RETAINED_WAIT_S = 3  # a retained message arrives as soon as the subscription does
STILL_ONLINE_S = 3   # for the answer that shows a device connected now (update status)


def still_online(watcher: Watcher, topic: Topics) -> Message | None:
    """The device's birth message the broker kept, when the device is connected now: the kept
    `online: true` state (its last will replaces it when the connection drops) and an answer to
    an update-status request, which the device gives only over a live session with its topics
    subscribed. None otherwise. Meeting a device this way costs no reset (one reset, a boot to
    the broker, is about 2.5 s on the emulated board)."""
    state = watcher.wait_for(lambda m: m.topic == topic.state and m.retain, RETAINED_WAIT_S)
    body = state.json() if state is not None else None
    if not isinstance(body, dict) or body.get("online") is not True:
        return None  # its last will (or nothing) kept: not connected
    if ota_status(watcher, topic, STILL_ONLINE_S) is None:
        return None
    return state


def wait_online(board, watcher: Watcher, topic: Topics, reset: bool = True, ready: bool = True,
                reuse: bool = False) -> Message:
    """Waits for a fresh birth message: the device (re)connected; with `ready`, also until it is
    subscribed to its topics (`wait_ready`), so that a request sent next is not lost. With `reuse`,
    a device connected already is met as it is (`still_online`: the birth message the broker kept)
    and reset only if it is not; for checks that need the device online, not a fresh boot. After
    one device that never came online, the later checks fail at once."""
    assert not getattr(watcher.broker, "never_online", False), NEVER_ONLINE
    if reuse:
        birth = still_online(watcher, topic)
        if birth is not None:
            watcher.broker.seen_online = True
            return birth
    since = log_offset(board)
    if reset:
        reset_board(board)
    birth = watcher.wait_for(is_birth(topic), ONLINE_TIMEOUT_S)
    if birth is not None:
        watcher.broker.seen_online = True
    elif not getattr(watcher.broker, "seen_online", False):
        watcher.broker.never_online = True
    assert birth is not None, (f"the device did not connect to the lab broker within {ONLINE_TIMEOUT_S} s "
                               f"(is it configured for this broker address and port?){serial_tail(board)}")
    if ready:
        wait_ready(board, watcher, topic, since)
    return birth


def wait_ready(board, watcher: Watcher, topic: Topics, since: int = 0) -> bool:
    """After its birth message the device subscribes to its command and update topics; a request
    published before the broker has those subscriptions is lost (clean session). Waits for the
    device's own word that it is subscribed: its `connected` line on serial (printed once the broker
    acknowledged the subscriptions), else its answer to an update-status request (harmless, and
    answered only on the update topics, subscribed last). False if neither came."""
    if has(board, SerialLog):
        try:
            board.wait_for_output(NET_CONNECTED, since, timeout=READY_TIMEOUT_S)
            return True
        except BoardError:
            pass
    return ota_status(watcher, topic, READY_TIMEOUT_S) is not None


def ota_status(watcher: Watcher, topic: Topics, timeout: float) -> dict[str, Any] | None:
    """The device's answer to an update-status request ({"op": "status"} on its ota/ctl topic),
    asked again at growing intervals (a request may reach the broker before the device's
    subscription): the `status` event, or the last other answer (a busy device refuses), or None."""
    deadline = time.monotonic() + timeout
    wait, last = 0.25, None
    while time.monotonic() < deadline:
        since = time.monotonic()
        watcher.publish(topic.ota_ctl, json.dumps({"op": "status"}))
        reply = watcher.wait_for(is_ota_event(topic, ("status", "rejected"), since),
                                 min(wait, max(deadline - time.monotonic(), 0.01)))
        if reply is not None:
            body = reply.json()
            if body.get("event") == "status":
                return body
            last = body
        wait = min(wait * 2, 4.0)
    return last


def net_events(board, since: int = 0) -> list[dict[str, Any]]:
    """What the firmware reported of its connection on serial since log offset `since`, oldest
    first: its {"sbd": "net", "event": ...} lines (`connected`, `disconnected` with `retry_ms`),
    with each boot as {"sbd": "boot"} (a boot starts the failure count again). Empty on a board
    whose serial output the harness does not keep."""
    if not has(board, SerialLog):
        return []
    events = []
    for line in board.log_since(since).splitlines():
        start = line.find("{")
        if start < 0 or '"sbd"' not in line:
            continue
        try:
            obj = json.loads(line[start:].strip().strip("\x00"))
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("sbd") in ("net", "boot"):
            events.append(obj)
    return events


def wait_net_event(board, event: str, since: int, timeout: float) -> bool:
    """Waits until the firmware reports `event` (e.g. "disconnected") on serial after offset `since`."""
    if not has(board, SerialLog):
        return False
    try:
        board.wait_for_output(f'"event": "{event}"', since, timeout=timeout)
        return True
    except BoardError:
        return False


def serial_tail(board, size: int = 1500) -> str:
    """What the board said last, for a failure message (emulated boards keep a serial log)."""
    if not has(board, SerialLog):
        return ""
    try:
        return "; serial: " + board.serial_log()[-size:]
    except Exception:  # noqa: BLE001 - a diagnostic only; the failure itself is already known
        return ""


def signed_command(watcher: Watcher, ca, device_id: str, cmd: str, args: dict | None = None,
             timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any] | None:
    """A command signed by the lab CA, sent on the device's command topic; its result. Those that
    need the device's challenge (FRESH_COMMANDS) carry the one it hands out just before."""
    topic = topics(device_id)
    challenge = mqtt_challenge(watcher, ca, device_id, timeout) if cmd in FRESH_COMMANDS else None
    watcher.publish(topic.cmd, ca.sign_command(device_id, cmd, args, challenge=challenge))
    reply = watcher.wait_for(is_command_result(topic, cmd), timeout)
    return reply.json() if reply else None


def kept_birth(board, sbd_boot, broker) -> dict[str, Any]:
    """The device's birth message in this run: the one the broker kept (retained), or a fresh one
    after a reset. Kept on the broker object for the next check that reads it."""
    device_id = locked_device_id(sbd_boot)  # skips on a board that is not provisioned and locked
    cached = getattr(broker, "docs_birth", {}).get(device_id)
    if cached is not None:
        return cached
    topic = topics(device_id)
    with Watcher(broker, topic.state) as w:
        def kept(m) -> bool:
            body = m.json()
            return m.retain and isinstance(body, dict) and body.get("online") is True
        message = w.wait_for(kept, RETAINED_WAIT_S) or wait_online(board, w, topic)
    birth = message.json()
    broker.docs_birth = {**getattr(broker, "docs_birth", {}), device_id: birth}
    return birth


def telemetry_since(watcher: Watcher, topic: Topics, since: float, count: int, timeout: float) -> list[Message]:
    """The first `count` telemetry messages that arrived from host time `since` on, waiting up to
    `timeout` for them: those already in (a reading taken at connection, say) count too."""
    deadline = time.monotonic() + timeout
    while True:
        got = watcher.seen(lambda m: m.topic == topic.telemetry and m.at >= since)
        left = deadline - time.monotonic()
        if len(got) >= count or left <= 0:
            return got[:count]
        watcher.wait_for(on_topic(topic.telemetry), min(left, 0.5))  # until the next one comes in


def telemetry_readings(watcher: Watcher, topic: Topics) -> list[dict]:
    """Every telemetry reading seen so far, in the contract's form."""
    bodies = (telemetry_body(m) for m in watcher.seen(on_topic(topic.telemetry)))
    return [b for b in bodies if b is not None]


RESTORE_WAITS_S = (5, 15, 15)  # FastTelemetry's attempts at giving the device its interval back


class FastTelemetry:
    """Telemetry every second for the length of a check, then back as it was (a signed
    `set_interval`). With required=False a device that refuses it keeps its own pace
    (`active` says which), for checks about something else than commands."""

    def __init__(self, watcher: Watcher, ca, device_id: str, required: bool = True):
        self.args = (watcher, ca, device_id)
        self.required = required
        self.previous = None
        self.active = False

    def __enter__(self) -> "FastTelemetry":
        reply = signed_command(*self.args, "set_interval", {"seconds": 1})
        if self.required:
            assert reply and reply.get("ok"), f"the device refused a signed set_interval command: {reply}"
        self.active = bool(reply and reply.get("ok"))
        self.previous = reply.get("previous_s") if self.active else None
        return self

    def __exit__(self, *exc) -> None:
        if self.previous and self.previous != 1:  # the device keeps it on flash: ask again if unanswered
            # An online device answers within seconds. One still reconnecting (the check cut it off,
            # or it restarted) never gets a command sent meanwhile (its session is clean): a short
            # first wait, then longer ones, instead of sitting out the longest for a lost command.
            for timeout in RESTORE_WAITS_S:
                if signed_command(*self.args, "set_interval", {"seconds": self.previous}, timeout=timeout):
                    break
