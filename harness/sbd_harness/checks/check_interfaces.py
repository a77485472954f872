"""Only the radio interfaces the product declares are on: the Wi-Fi station,
not the access point, not Bluetooth.

The device reports which interfaces its port has on (`interfaces` in its
birth message: WLAN(STA_IF).active(), WLAN(AP_IF).active(), BLE().active(),
which ask and start nothing); the check holds that to the `interfaces` of the
reviewed network policy (boards/network-policy.json), never to what the
firmware under test declares. That report is the device's own account, a
claim: where the lab sees the radios from outside (`RadioObserver`: the
emulated board's supervisor sees every radio the CPU turns on), what it saw
must agree, and a radio seen on fails the check whatever the device says.
Elsewhere the claim is all there is, and the evidence says so
(docs/attack-surface.md says what a lab with radios would add).
"""
from __future__ import annotations

from typing import Any

import pytest

from sbd_harness.boards.base import RadioObserver, has
from sbd_harness.checks.online import kept_birth
from sbd_harness.release import mud


def _declared(sbd_bundle) -> dict[str, Any]:
    """The reviewed policy's interfaces; the policy must be the build's product's (release/product.py)."""
    try:
        policy = mud.product_policy(sbd_bundle.source)[1]
    except mud.MudError as exc:
        raise AssertionError(str(exc)) from None
    declared = policy.get("interfaces")
    assert isinstance(declared, dict) and declared, (
        f"the reviewed network policy ({mud.policy_path()}) declares no radio interfaces (\"interfaces\": "
        "{\"wifi_sta\": {\"on\": true, \"why\": ...}, ...}): nothing to hold the device to")
    bad = [name for name, v in declared.items() if not isinstance(v, dict) or not isinstance(v.get("on"), bool)
           or not v.get("why")]
    assert not bad, f"the reviewed network policy's interfaces {bad} need \"on\" (true or false) and \"why\""
    return declared


@pytest.mark.sbd_check(
    id="only-declared-interfaces-on",
    title="The radio interfaces the device has on (Wi-Fi station, access point, Bluetooth) are the ones the "
          "reviewed policy declares on; the access point and Bluetooth are off")
def check_only_declared_interfaces(sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_evidence):
    declared = _declared(sbd_bundle)
    birth = kept_birth(sbd_board, sbd_boot, sbd_broker)
    reported = birth.get("interfaces")
    sbd_evidence.update({"declared": {k: v["on"] for k, v in declared.items()}, "reported": reported,
                         "policy": str(mud.policy_path())})
    assert isinstance(reported, dict) and reported, (
        f"the device does not report which radio interfaces it has on (no interfaces in its birth message): {birth}")
    problems = [f"{name} is on, and the policy declares it off" for name, on in reported.items()
                if on and name in declared and not declared[name]["on"]]
    problems += [f"{name} is on, and the policy does not declare it" for name, on in reported.items()
                 if on and name not in declared]
    problems += [f"{name} is declared on, and the device reports it off" for name, v in declared.items()
                 if v["on"] and reported.get(name) is False]
    problems += [f"the device does not say whether {name} is on" for name in declared if name not in reported]
    if has(sbd_board, RadioObserver):
        observed = sbd_board.observed_radios()
        sbd_evidence["observed_by_the_lab"] = observed
        problems += [f"{name} is on as the lab sees it, and the device reports it off" for name, on in observed.items()
                     if on and reported.get(name) is False]
        problems += [f"{name} is on as the lab sees it, and the policy declares it off" for name, on in observed.items()
                     if on and name in declared and not declared[name]["on"] and not reported.get(name)]
    else:
        sbd_evidence["observed_by_the_lab"] = "nothing: this board's radios are not watched from outside (the device's word)"
    assert not problems, "; ".join(problems)
