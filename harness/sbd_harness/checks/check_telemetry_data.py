"""What the device sends is what its data inventory declares: every field of
its telemetry is listed, with its purpose, in the firmware's feature
declaration (`data.telemetry` in firmware/features.json, read as data).

The readings are those the telemetry check received earlier in this run, or,
run alone, two readings asked for at once (a signed set_interval). A field
that is not declared fails the check: data a product collects without saying
so cannot be judged necessary (minimisation) by anyone.
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from sbd_harness.checks.online import FastTelemetry, locked_device_id, telemetry_since
from sbd_harness.device.contract import topics
from sbd_harness.lab.watch import Watcher
from sbd_harness.reports import features as feature_decl

READINGS_S = 20


def fields(body: Any, prefix: str = "") -> list[str]:
    """The dotted paths of a JSON object's leaves ("data.uptime_s")."""
    if not isinstance(body, dict):
        return [prefix.rstrip(".")] if prefix else []
    out: list[str] = []
    for key, value in body.items():
        out += fields(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


def _inventory(sbd_bundle) -> dict[str, str]:
    try:
        decl = feature_decl.load(sbd_bundle.source) if sbd_bundle.source else None
    except feature_decl.FeaturesError as exc:
        raise AssertionError(str(exc)) from None
    assert decl is not None, "the firmware has no feature declaration (features.json) with a data inventory"
    declared = (decl.get("data") or {}).get("telemetry")
    assert isinstance(declared, dict) and declared, (
        f"{decl['path']} declares no telemetry fields (\"data\": {{\"telemetry\": {{\"field\": \"purpose\"}}}})")
    undocumented = sorted(k for k, v in declared.items() if not str(v).strip())
    assert not undocumented, f"{decl['path']}: telemetry fields without a purpose: {undocumented}"
    return declared


@pytest.mark.sbd_check(
    id="telemetry-matches-data-inventory",
    title="Every field of the device's telemetry is one its declared data inventory lists, with its purpose")
def check_telemetry_inventory(sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_ca, sbd_evidence):
    declared = _inventory(sbd_bundle)
    device_id = locked_device_id(sbd_boot)
    bodies = getattr(sbd_broker, "telemetry_seen", {}).get(device_id)
    if bodies:
        sbd_evidence["readings_from"] = "the telemetry check of this run"
    else:
        topic = topics(device_id)
        with Watcher(sbd_broker, topic.all) as w:
            since = time.monotonic()  # the device is online: no reset, no new birth message needed
            with FastTelemetry(w, sbd_ca, device_id, required=False):
                bodies = [m.json() for m in telemetry_since(w, topic, since, 2, READINGS_S)]
        sbd_evidence["readings_from"] = "readings asked for by this check"
    assert bodies, f"no telemetry arrived within {READINGS_S} s to compare with the inventory"
    sent = sorted({f for b in bodies for f in fields(b)})
    undeclared = [f for f in sent if f not in declared]
    sbd_evidence.update({"declared": sorted(declared), "sent": sent, "readings": bodies[:3]})
    assert not undeclared, (f"the device sends telemetry fields its data inventory does not declare: {undeclared} "
                            f"(declared: {sorted(declared)})")
