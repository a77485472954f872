"""Signed updates that must work (docs/ota.md): a valid update installs,
commits and runs, and a file of it changed on the flash afterwards is caught
at the next boot and reported.

Both change the board for good: the first raises the device's security
counter (its anti-rollback floor), the second leaves it on its factory image
after the fallback (or, where the factory image is not the build under
test, on the build pushed once more as an update). They run only with
--destructive (like the factory reset), and in this order, before the
refusal checks of check_signed_updates.py, which then find a device that has
committed an update (no setup update of their own) and runs the build under
test.

The update is the build under test (`sbd_bundle`) stamped with a new
version, signed with the lab release key; the change on the flash is made
as someone at the serial port would: the console unlocked by a signed
command, one byte of the running update slot rewritten through the REPL,
the console locked again, a reset.
"""
from __future__ import annotations

import json
import time
from typing import Any

import pytest

from sbd_harness.boards.base import BoardError, BoardRaised
from sbd_harness.checks.check_signed_updates import _Device, _label, _lab_key, _online_device, _stream
from sbd_harness.checks.online import locked_device_id, serial_tail, signed_command, wait_online
from sbd_harness.device.contract import COMMIT_TIMEOUT_S, ONLINE_TIMEOUT_S, is_birth, is_ota_event
from sbd_harness.lab.watch import Watcher
from sbd_harness.release import ota

VERSION_FILE = "lib/sbd/version.mpy"  # the stamped version's module in an update slot
INCIDENT_TIMEOUT_S = ONLINE_TIMEOUT_S + 15


def _needs(pytestconfig: pytest.Config, key: tuple[ota.ReleaseKey | None, str]) -> None:
    """Skips, saying why, without --destructive or without the lab release key."""
    if not pytestconfig.getoption("--sbd-destructive"):
        pytest.skip("installing an update raises the device's security counter for good: run with --destructive")
    if key[0] is None:
        pytest.skip(f"the harness cannot sign an update: {key[1]}")


def _install(device: _Device, bundle, key: ota.ReleaseKey, status: dict[str, Any], evidence: dict[str, Any],
             version: str | None = None) -> str:
    """Pushes the build as a new version (or as `version`) with the next counter; waits until it commits
    and the device, restarted into it, announces it. Returns the version."""
    if key.key_id.hex() not in status["keys"]:
        pytest.skip(f"the device does not trust the lab release key {key.key_id.hex()} (it trusts "
                    f"{', '.join(status['keys'])}): the harness cannot sign an update it would take")
    counter = int(status.get("counter") or 0) + 1
    version = version or _label("v")
    model = device.birth.get("model") or ota.MODEL
    since = time.monotonic()
    result = device.push(_stream(bundle, version, counter, model, key))
    evidence["push"] = {k: v for k, v in result.items() if k != "sbd"}
    assert result.get("event") == "installed", f"a valid signed update (counter {counter}) was not installed: {result}"
    committed = device._ota_result(("committed", "reverted"), since, COMMIT_TIMEOUT_S)
    evidence["committed"] = committed
    assert committed and committed.get("event") == "committed", (
        f"the update {version} (counter {counter}) installed but did not commit within {COMMIT_TIMEOUT_S} s: "
        f"{committed}{serial_tail(device.board)}")
    assert committed.get("counter") == counter, f"committed with counter {committed.get('counter')}, not {counter}"
    births = [m.json() for m in device.w.seen(is_birth(device.topic, since))]
    evidence["birth_versions"] = [b.get("fw_version") for b in births]
    assert births and births[-1].get("fw_version") == version, (
        f"after committing, the device announces version {births[-1].get('fw_version') if births else None}, "
        f"not the update's {version}")
    device.birth = births[-1]
    return version


@pytest.mark.sbd_check(
    id="signed-update-installs-and-commits",
    title="A valid update signed with the trusted release key installs over the device's MQTT connection, its "
          "trial commits, and the device then announces the new version with the new security counter")
def check_signed_update_installs(sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_evidence, pytestconfig):
    key = _lab_key()
    _needs(pytestconfig, key)
    with Watcher(sbd_broker, f"devices/{locked_device_id(sbd_boot)}/#", persistent=True) as w:
        device, before = _online_device(sbd_board, sbd_boot, w)
        sbd_evidence.update({"fw_version_before": device.birth.get("fw_version"), "status_before": before})
        version = _install(device, sbd_bundle, key[0], before, sbd_evidence)
        after = device.status()
        sbd_evidence.update({"fw_version_after": version, "status_after": after})
        assert after.get("counter") == int(before.get("counter") or 0) + 1 and after.get("active"), \
            f"after the commit the device's OTA state is {after}"


# Run on the device's REPL once the console is unlocked: the first byte of the version string in the
# running slot's version module changed in place (its case flipped: same size, only the hash tells),
# then the console locked again.
CHANGE = ("from sbd import slots, store\n"
          "p = slots.slot_dir(slots.running()) + '/{path}'\n"
          "b = bytearray(open(p, 'rb').read())\n"
          "i = bytes(b).find({old!r})\n"
          "if i < 0: raise ValueError('version not found')\n"
          "b[i] ^= 0x20\n"
          "f = open(p, 'wb'); f.write(b); f.close()\n"
          "store.put_int('locked', 1)\n"
          "print(i, slots.running())")


@pytest.mark.sbd_check(
    id="changed-file-caught-at-boot",
    title="A byte of the running update changed on the flash is caught at the next boot: the device does not run "
          "it, falls back to a verified image and reports the incident to its broker")
def check_changed_file_caught(sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_ca, sbd_evidence, pytestconfig):
    key = _lab_key()
    _needs(pytestconfig, key)
    device_id = locked_device_id(sbd_boot)
    with Watcher(sbd_broker, f"devices/{device_id}/#", persistent=True) as w:
        device, status = _online_device(sbd_board, sbd_boot, w)
        version = device.birth.get("fw_version")
        if not status.get("active"):  # the factory image runs: only an update slot is verified at boot
            version = _install(device, sbd_bundle, key[0], status, sbd_evidence)
        sbd_evidence["running_before"] = {"fw_version": version, "slot": device.status().get("active")}
        reply = signed_command(w, sbd_ca, device_id, "unlock_console")
        assert reply and reply.get("ok"), f"the device refused a signed unlock_console: {reply}"
        time.sleep(1)  # the reply goes out before the console opens
        try:
            out = sbd_board.exec(CHANGE.format(path=VERSION_FILE, old=version.encode()), timeout=30)
        except BoardRaised as exc:
            raise AssertionError(f"the running update's {VERSION_FILE} could not be changed: {exc}") from None
        except BoardError as exc:
            sbd_board.reset("hard")  # the console locks again at boot (nothing was changed)
            pytest.skip(f"the console was unlocked, but its REPL did not answer: {exc}")
        sbd_evidence["changed"] = {"file": VERSION_FILE, "repl": out.strip()[-120:]}
        since = time.monotonic()
        sbd_board.reset("hard")
        incident = w.wait_for(is_ota_event(device.topic, ("integrity",), since), INCIDENT_TIMEOUT_S)
        births = [m.json() for m in w.seen(is_birth(device.topic, since))]
        if not births:
            births = [wait_online(sbd_board, w, device.topic, reset=False, ready=False).json()]
        sbd_evidence.update({"incident": incident.json() if incident else None,
                             "fw_version_after": births[-1].get("fw_version")})
        now = births[-1].get("fw_version")
        changed = chr(ord(version[0]) ^ 0x20) + version[1:]  # as CHANGE flips it
        assert now not in (version, changed), (
            f"after the change the device announces version {now}: it booted the changed update"
            + (" (its version string is the changed byte)" if now == changed else "")
            + ": the boot-time check of the update slot is missing")
        assert incident is not None, (f"the device did not report an integrity incident to its broker within "
                                      f"{INCIDENT_TIMEOUT_S} s of the boot{serial_tail(sbd_board)}")
        body = incident.json()
        assert VERSION_FILE.rsplit("/", 1)[-1] in json.dumps(body), f"the incident does not name the file: {body}"
        if now != sbd_bundle.version:  # it fell back to an image that is not the build: the build, once more
            device.birth = births[-1]
            sbd_evidence["restored"] = _install(device, sbd_bundle, key[0], device.status(), {},
                                                version=sbd_bundle.version)
