"""The device's MQTT contract, in one place: its topics, its birth message,
the events of an update, and how long the host waits for each.

The firmware's side is sbd/link.py (topics, birth), sbd/commands.py (the
command envelope) and sbd/ota.py (update events); docs/mqtt.md and
docs/ota.md describe both sides. Nothing else in the harness spells a topic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

# How long the host waits. A device backs off up to 60 s between connection
# attempts, so an online wait outlasts that; a reset device connects within seconds.
ONLINE_TIMEOUT_S = 75
ONLINE_AFTER_RESET_S = 20
# After its birth message the device subscribes to its topics; then it is ready for requests.
READY_TIMEOUT_S = 10
# An update's trial: restart, reconnect, health check, commit; or the trial
# times out (90 s on the device), restarts and reverts.
COMMIT_TIMEOUT_S = 180
TRIAL_TIMEOUT_S = 90  # sbd/ota.py TRIAL_S: a trial not committed by then restarts, and is rolled back
PUSH_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 15  # one signed command's result: a P-256 verify on the device, well under a second on a chip

# The device's challenge (sbd/commands.py): this unsigned line, on the console or the command topic,
# gets {"sbd": "cmd", "ok": true, "cmd": "challenge", "device": ID, "cert": SHA256, "nonce": HEX}.
# The commands in FRESH_COMMANDS are accepted only with that nonce as their `challenge`, once, before
# the next challenge, a reset, or CHALLENGE_LIFETIME_S on the device's own tick count.
CHALLENGE_REQUEST = "SBD-CHALLENGE"
FRESH_COMMANDS = ("factory_reset", "unlock_console")
CHALLENGE_LIFETIME_S = 300

# What the firmware prints on serial about its connection (sbd/link.py `log`): one JSON line per
# event, {"sbd": "net", "event": "connected"} once subscribed, {"sbd": "net", "event": "disconnected",
# "reason": ..., "detail": ..., "retry_ms": N} for every failure, N being its backoff before the next try,
# and {"sbd": "net", "event": "sent", "seq": N} when the broker acknowledged telemetry message N.
NET_CONNECTED = '"event": "connected"'
NET_DISCONNECTED = '"event": "disconnected"'
NET_SENT = '"event": "sent"'
# Its backoff (sbd/link.py backoff_ms): after the k-th failure in a row it waits between half and all
# of min(60 s, 1 s * 2**(k-1)) before the next attempt.
BACKOFF_MIN_MS = 1000
BACKOFF_MAX_MS = 60000


def backoff_ceiling_ms(failures: int) -> int:
    """The longest wait the device may choose after its `failures`-th failure in a row (at least half of it)."""
    return min(BACKOFF_MAX_MS, BACKOFF_MIN_MS << min(max(failures, 1) - 1, 16))


# The `event` values of the device's update results ({"sbd": "ota", "event": ...}).
OTA_VERDICTS = ("installed", "rejected")
OTA_OUTCOMES = ("committed", "reverted", "integrity", "foreign")  # foreign: a slot recorded over another factory image


@dataclass(frozen=True)
class Topics:
    """One device's topics; the broker confines the device to `all`."""

    device_id: str

    @property
    def base(self) -> str:
        return f"devices/{self.device_id}"

    @property
    def all(self) -> str:
        return f"{self.base}/#"

    @property
    def state(self) -> str:  # birth (retained online/offline) and its will
        return f"{self.base}/state"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def cmd(self) -> str:  # signed commands in (sbd/commands.py)
        return f"{self.base}/cmd"

    @property
    def result(self) -> str:  # command results and update events out
        return f"{self.base}/result"

    @property
    def ota_ctl(self) -> str:
        return f"{self.base}/ota/ctl"

    @property
    def ota_data(self) -> str:
        return f"{self.base}/ota/data"


def topics(device_id: str) -> Topics:
    """The topics of `device_id`, which must have the firmware's form (DeviceIdError otherwise):
    an ID a board reports as `+` or `a/#` would make the monitor, which may read every device,
    watch other devices' topics in its name."""
    from sbd_harness.identity.names import check_device_id
    return Topics(check_device_id(device_id, "the device ID given"))


Match = Callable[[Any], bool]


def _body(m: Any) -> dict[str, Any] | None:
    body = m.json()
    return body if isinstance(body, dict) else None


def is_birth(t: Topics, since: float | None = None) -> Match:
    """The device's live (not retained) `online: true` state message, optionally after `since`."""
    def match(m: Any) -> bool:
        body = _body(m)
        return (m.topic == t.state and not m.retain and body is not None and body.get("online") is True
                and (since is None or m.at >= since))
    return match


def is_ota_event(t: Topics, events: Iterable[str], since: float | None = None) -> Match:
    """An update result with one of `events`, optionally after `since`."""
    wanted = tuple(events)

    def match(m: Any) -> bool:
        body = _body(m)
        return (m.topic == t.result and body is not None and body.get("sbd") == "ota"
                and body.get("event") in wanted and (since is None or m.at >= since))
    return match


def is_command_result(t: Topics, cmd: str) -> Match:
    """The result of command `cmd` on the result topic."""
    def match(m: Any) -> bool:
        body = _body(m)
        return m.topic == t.result and body is not None and body.get("cmd") == cmd
    return match


def telemetry_body(m: Any) -> dict[str, Any] | None:
    """A telemetry message's body when it has the contract's form (an integer `seq`)."""
    body = _body(m)
    return body if body is not None and isinstance(body.get("seq"), int) else None
