"""The names the lab CA certifies, and how a device's differs from the lab's own.

A device ID is what the firmware makes of the chip's unique ID
(`sbd.device.device_id()`: `machine.unique_id()` in lower-case hex, six bytes
on the ESP32, the ESP32-S3 and the ESP32-C3), so exactly 12 lower-case hex
digits. It is what a board *says*, over a serial port the harness does not
control, so the harness checks its form before it builds a path, a
certificate or a topic from it.

Lab identities (the broker's server certificate, the harness's monitor, the
probe clients of the broker checks) are made on the host. Their certificates
carry `O=sbd lab, OU=sbd lab identities` beside the CN, and their names are
never of the device-ID form, so no device certificate (subject `CN=<ID>`
alone) can be taken for one of them, and none of them for a device.
"""
from __future__ import annotations

import re

from sbd_harness.errors import SbdError

DEVICE_ID_DIGITS = 12
_DEVICE_ID = re.compile(r"[0-9a-f]{12}")
_LAB_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")

LAB_ORGANIZATION = "sbd lab"
LAB_UNIT = "sbd lab identities"
MONITOR_NAME = "sbd-monitor"
BROKER_HOSTNAME = "broker.sbd.lab"
# Names only the lab's own identities carry; the CA never certifies a device under them.
RESERVED_NAMES = frozenset({MONITOR_NAME, BROKER_HOSTNAME, "sbd lab CA"})


class DeviceIdError(SbdError, ValueError):
    """A device ID (as a board reported it) that is not one the firmware makes."""


def device_id_problem(value: object) -> str | None:
    """Why `value` is not a device ID the firmware makes, or None when it is one."""
    if not isinstance(value, str):
        return f"the device ID is a {type(value).__name__}, not a string"
    if value in RESERVED_NAMES:
        return f"{value!r} is reserved for the lab's own identities, never a device's"
    if not _DEVICE_ID.fullmatch(value):
        return (f"{value[:40]!r} is not a device ID the firmware makes: expected exactly {DEVICE_ID_DIGITS} "
                "lower-case hex digits (machine.unique_id() in hex)")
    return None


def check_device_id(value: object, source: str = "the device ID the board reported") -> str:
    """`value` if it is a device ID of the firmware's form; DeviceIdError naming `source` otherwise."""
    problem = device_id_problem(value)
    if problem:
        raise DeviceIdError(f"{source}: {problem}. The harness uses no device ID of another form: check that "
                            "the board is an ESP32 running the reference firmware (sbd flash, sbd bootline).")
    return value  # type: ignore[return-value]


def lab_name_problem(name: object) -> str | None:
    """Why `name` cannot name a lab identity, or None when it can."""
    if not isinstance(name, str) or not _LAB_NAME.fullmatch(name):
        return (f"{str(name)[:40]!r} cannot name a lab identity: use 1 to 64 of a-z 0-9 . - "
                "(starting with a letter or digit)")
    if _DEVICE_ID.fullmatch(name):
        return f"{name!r} has the form of a device ID: a lab identity must not be taken for a device"
    return None
