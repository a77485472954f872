"""Signed updates over the device's MQTT connection, on a locked
emulated board: a valid update is applied and committed; every tampered,
downgraded, foreign or malformed one is refused and the old version keeps
running; a version that fails its health check is reverted; a file changed
on the flash is caught at boot; power cuts at random moments never leave
the board without a verified version."""
from __future__ import annotations

import json
import time

import pytest

from sbd_harness.boards.serial_board import SerialBoard
from sbd_harness.device.contract import is_ota_event
from sbd_harness.identity.commands import mqtt_challenge
from sbd_harness.paths import firmware_dir
from sbd_harness.release import ota
from sbd_harness.release.bundle import FirmwareBundle

from ota_lab import REFUSALS, Lab, power_cut_series, release, running_version, stream_for, tampered

FIRMWARE = firmware_dir()

MODEL = "sbd-reference-esp32"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("ota"))
    lab.board.reset("hard")
    lab.online()
    yield lab
    lab.close()


def test_a_valid_update_is_applied_and_committed(lab, tmp_path):
    stream = stream_for(release(tmp_path, "0.2.0"), lab.key, 2)
    result = lab.push(stream)
    assert result["event"] == "installed", result
    birth = lab.online()
    assert birth["fw_version"] == "0.2.0"
    committed = lab.ota_event("committed")
    assert committed and committed["version"] == "0.2.0" and committed["counter"] == 2
    assert running_version(lab) == "0.2.0"  # still, after another reset


# Two refusals end to end over MQTT; every refusal is unit-tested on the device's receiver under
# MicroPython (tests/firmware), and all of them run end to end in tests/soak.
@pytest.mark.parametrize("case", ["bit-in-file", "downgrade"])
def test_a_bad_update_is_refused_and_the_old_version_keeps_running(lab, tmp_path, case):
    result = lab.push(tampered(lab, tmp_path, case))
    assert result["event"] == "rejected", result
    assert REFUSALS[case] in result["error"], result
    assert running_version(lab) == "0.2.0"


def test_a_version_that_fails_its_health_check_is_reverted(lab, tmp_path):
    broken = release(tmp_path, "0.4.0", ("lib/sbd/app.py", "def run_locked():\n",
                                          "def run_locked():\n    raise RuntimeError('broken release')\n"))
    result = lab.push(stream_for(broken, lab.key, 4))
    assert result["event"] == "installed", result
    reverted = lab.ota_event("reverted", timeout=90)
    assert reverted and reverted["slot"], reverted
    assert running_version(lab) == "0.2.0"


def test_release_keys_rotate_only_by_an_update_signed_with_a_trusted_key(lab, tmp_path):
    new_key = ota.ReleaseKey.generate(tmp_path / "next-release-key.pem")
    unsigned_by_new = stream_for(release(tmp_path, "0.6.0"), new_key, 6)
    assert "unknown release key" in lab.push(unsigned_by_new)["error"]
    # a rotation that would drop the key that signed it is refused (its own slot would fail at boot)
    dropping = stream_for(release(tmp_path, "0.6.0"), lab.key, 6, checked=False,  # the host refuses to build it
                          release_keys=[new_key.public_point.hex()])
    assert "drops its own signing key" in lab.push(dropping)["error"]
    rotation = stream_for(release(tmp_path, "0.6.0"), lab.key, 6,
                          release_keys=[lab.key.public_point.hex(), new_key.public_point.hex()])
    assert lab.push(rotation)["event"] == "installed"
    lab.runs_committed("0.6.0")
    assert lab.push(stream_for(release(tmp_path, "0.7.0"), new_key, 7))["event"] == "installed"
    lab.runs_committed("0.7.0")


def test_a_commit_put_off_for_want_of_heap_is_tried_again_without_more_traffic(lab, tmp_path):
    """A MemoryError while committing (a fragmented heap: seen in CI) must not leave the
    commit waiting for the next acknowledged message: with telemetry once an hour that
    would be after the trial's time limit, and a healthy version would be reverted."""
    lab.watcher.publish(lab.topic.cmd, lab.ca.sign_command(lab.device_id, "set_interval", {"seconds": 3600}))
    short = release(tmp_path, "0.8.0", ("lib/sbd/ota.py", "    m = slots.verify_slot(slot)",
                                        "    if not slots.store.get_int('heap_short', 0):\n"
                                        "        slots.store.put_int('heap_short', 1)\n"
                                        "        raise MemoryError\n"
                                        "    m = slots.verify_slot(slot)"))
    assert lab.push(stream_for(short, lab.key, 8))["event"] == "installed"
    birth = lab.online()
    committed = lab.ota_event("committed", timeout=80)
    log = lab.board.serial_log()
    assert birth["fw_version"] == "0.8.0" and committed, log[-2000:]
    assert '"commit_deferred"' in log
    lab.watcher.publish(lab.topic.cmd, lab.ca.sign_command(lab.device_id, "set_interval", {"seconds": 10}))


def test_a_file_changed_on_the_flash_is_caught_at_boot(lab, tmp_path):
    # An update, then someone with the console edits one of its files.
    assert lab.push(stream_for(release(tmp_path, "0.9.0"), lab.key, 9))["event"] == "installed"
    lab.runs_committed("0.9.0")
    challenge = mqtt_challenge(lab.watcher, lab.ca, lab.device_id)
    lab.watcher.publish(lab.topic.cmd, lab.ca.sign_command(lab.device_id, "unlock_console", challenge=challenge))
    time.sleep(3)
    # ... and locks the console again, so the board goes online after its reset and reports
    code = ("import json\nfrom sbd import slots, store\nd = slots.slot_dir(slots.running())\n"
            "f = open(d + '/lib/sbd/config.mpy', 'ab'); f.write(b'#'); f.close()\n"
            "store.put_int('locked', 1)\nprint(d)")
    SerialBoard(lab.board.port).exec(code)
    since = lab.board.log_size()
    t0 = time.monotonic()
    lab.board.control({"cmd": "reset", "kind": "hard"})
    lab.board.wait_for_output('"sbd": "boot"', since, timeout=30, after="rst:0x")
    log = lab.board.serial_log()[since:]
    assert '"event": "integrity"' in log and "config.mpy" in log, log[-1500:]
    boot = [json.loads(line) for line in log.splitlines() if line.startswith('{"sbd": "boot"')][-1]
    # The other slot holds the release before (below the floor of 9): not a way back. The
    # factory image runs, and the device reports the fallback once it is online.
    assert boot["fw_version"] == FirmwareBundle.from_dir(FIRMWARE).version, boot
    incident = lab.watcher.wait_for(is_ota_event(lab.topic, ("integrity",), t0), 75)
    assert incident is not None, lab.board.serial_log()[-2000:]
    body = incident.json()
    assert body["runs"] == "" and "config.mpy" in body["error"], body
    # the other slot: the release before this one, below the floor (none when this test runs alone)
    assert body["other"].endswith(("below the rollback floor", "no manifest")), body


def test_three_power_cuts_during_an_update_never_brick_the_board(tmp_path):
    """One cut in each phase (download, verify-and-switch, trial boot); tests/soak cuts 100 times."""
    assert power_cut_series(tmp_path, 3)["cuts"] == 3
