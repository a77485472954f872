"""Issue 5: signed updates over the device's MQTT connection, on a locked
emulated board: a valid update is applied and committed; every tampered,
downgraded, foreign or malformed one is refused and the old version keeps
running; a version that fails its health check is reverted; a file changed
on the flash is caught at boot; power cuts at random moments never leave
the board without a verified version."""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest

from sbd_harness.boards import lifecycle
from sbd_harness.device.contract import is_birth, is_ota_event, topics
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.boards.serial_board import SerialBoard
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.broker import Broker, free_port, lab_address
from sbd_harness.lab.watch import Watcher
from sbd_harness.paths import firmware_dir
from sbd_harness.release import ota
from sbd_harness.release.bundle import FirmwareBundle

FIRMWARE = firmware_dir()

MODEL = "sbd-reference-esp32"


def release(tmp: Path, version: str, patch: tuple[str, str, str] | None = None) -> FirmwareBundle:
    """The reference firmware as release `version`, optionally with one more patch."""
    target = tmp / f"fw-{version}-{uuid.uuid4().hex[:4]}"
    shutil.copytree(FIRMWARE, target, ignore=shutil.ignore_patterns("__pycache__"))
    vpath = target / "lib/sbd/version.py"
    vpath.write_text(vpath.read_text().replace('VERSION = "0.1.0"', f'VERSION = "{version}"'))
    if patch:
        path = target / patch[0]
        assert patch[1] in path.read_text()
        path.write_text(path.read_text().replace(patch[1], patch[2], 1))
    return FirmwareBundle.from_dir(target)


def stream_for(bundle: FirmwareBundle, key: ota.ReleaseKey, counter: int, **manifest_fields) -> bytes:
    manifest = ota.build_manifest(bundle, bundle.version, counter, model=MODEL)
    manifest.update(manifest_fields)
    files = {f["path"]: bundle.files["/" + f["path"]] for f in manifest["files"]}
    return ota.build_stream(ota.encode_manifest(manifest), key, files)


class Lab:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.ca = LabCA(tmp / "pki")
        self.ca.init()
        self.key = ota.ReleaseKey.generate(tmp / "release-key.pem")
        self.broker = Broker(self.ca, port=free_port(lab_address())).start()
        self.board = EmulatedBoard(f"ota-{uuid.uuid4().hex[:8]}")
        self.board.start()
        result = lifecycle.locked(self.board, self.ca, broker_port=self.broker.port,
                                  release_keys=[self.key.public_point])
        self.device_id = result.device_id
        self.topic = topics(self.device_id)
        self.watcher = Watcher(self.broker, self.topic.all, persistent=True)

    def online(self, timeout: float = 75, since: float = 0) -> dict:
        birth = self.watcher.wait_for(is_birth(self.topic, since), timeout)
        assert birth is not None, self.board.serial_log()[-2000:]
        return birth.json()

    def push(self, stream: bytes, timeout: float = 120) -> dict:
        return ota.push(self.watcher, self.device_id, stream, timeout=timeout)

    def runs_committed(self, version: str) -> None:
        """The update just installed boots, passes its health check and commits."""
        birth = self.online()
        committed = self.ota_event("committed")
        assert birth["fw_version"] == version and committed, self.board.serial_log()[-3000:]

    def ota_event(self, event: str, timeout: float = 60) -> dict | None:
        m = self.watcher.wait_for(is_ota_event(self.topic, (event,)), timeout)
        return m.json() if m else None

    def close(self) -> None:
        self.watcher.close()
        self.board.remove()
        self.broker.stop(remove=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("ota"))
    lab.board.reset("hard")
    lab.online()
    yield lab
    lab.close()


def _running_version(lab: Lab) -> str:
    t0 = time.monotonic()
    lab.board.reset("hard")
    return lab.online(since=t0)["fw_version"]


def test_a_valid_update_is_applied_and_committed(lab, tmp_path):
    stream = stream_for(release(tmp_path, "0.2.0"), lab.key, 2)
    result = lab.push(stream)
    assert result["event"] == "installed", result
    birth = lab.online()
    assert birth["fw_version"] == "0.2.0"
    committed = lab.ota_event("committed")
    assert committed and committed["version"] == "0.2.0" and committed["counter"] == 2
    assert _running_version(lab) == "0.2.0"  # still, after another reset


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def _tampered(lab: Lab, tmp_path: Path, case: str) -> bytes:
    new = release(tmp_path, "0.3.0")
    good = stream_for(new, lab.key, 3)
    manifest_bytes, key_id, signature, payload = ota.parse_stream(good)
    head = len(good) - len(payload)
    if case == "bit-in-file":
        return _flip(good, head + len(payload) // 2)
    if case == "bit-in-manifest":
        return _flip(good, 12 + len(manifest_bytes) // 2)
    if case == "bit-in-signature":
        return _flip(good, head - 10)
    if case == "unknown-key":
        return stream_for(new, ota.ReleaseKey.generate(tmp_path / "other.pem"), 3)
    if case == "no-signature":
        return good[:12 + len(manifest_bytes)] + payload
    if case == "downgrade":
        return stream_for(release(tmp_path, "0.1.5"), lab.key, 1)
    if case == "replay-of-current":
        return stream_for(release(tmp_path, "0.2.0"), lab.key, 2)
    if case == "wrong-board":
        return stream_for(new, lab.key, 3, model="sbd-other-device")
    if case == "expired":
        return stream_for(new, lab.key, 3, expires="20250101000000Z")
    if case == "truncated":
        return good[:-700]
    if case == "larger-than-declared":
        return good + b"\x00" * 100
    if case == "extra-unlisted-file":
        return good + new.files["/lib/sbd/version.mpy"]
    if case == "mix-and-match":
        other = release(tmp_path, "0.3.1", ("lib/sbd/config.py", '"telemetry_s": 10', '"telemetry_s": 11'))
        other_stream = stream_for(other, lab.key, 3)
        return good[:head] + ota.parse_stream(other_stream)[3]
    raise AssertionError(case)


REFUSALS = {
    "bit-in-file": "hash mismatch", "bit-in-manifest": "bad signature", "bit-in-signature": "bad signature",
    "unknown-key": "unknown release key", "no-signature": "", "downgrade": "rollback",
    "replay-of-current": "rollback", "wrong-board": "wrong model", "expired": "expired",
    "truncated": "", "larger-than-declared": "", "extra-unlisted-file": "", "mix-and-match": "hash mismatch",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_bad_update_is_refused_and_the_old_version_keeps_running(lab, tmp_path, case):
    result = lab.push(_tampered(lab, tmp_path, case))
    assert result["event"] == "rejected", result
    assert REFUSALS[case] in result["error"], result
    assert _running_version(lab) == "0.2.0"


def test_a_version_that_fails_its_health_check_is_reverted(lab, tmp_path):
    broken = release(tmp_path, "0.4.0", ("lib/sbd/app.py", "def run_locked():\n",
                                          "def run_locked():\n    raise RuntimeError('broken release')\n"))
    result = lab.push(stream_for(broken, lab.key, 4))
    assert result["event"] == "installed", result
    reverted = lab.ota_event("reverted", timeout=90)
    assert reverted and reverted["slot"], reverted
    assert _running_version(lab) == "0.2.0"


def test_release_keys_rotate_only_by_an_update_signed_with_a_trusted_key(lab, tmp_path):
    new_key = ota.ReleaseKey.generate(tmp_path / "next-release-key.pem")
    unsigned_by_new = stream_for(release(tmp_path, "0.6.0"), new_key, 6)
    assert "unknown release key" in lab.push(unsigned_by_new)["error"]
    # a rotation that would drop the key that signed it is refused (its own slot would fail at boot)
    dropping = stream_for(release(tmp_path, "0.6.0"), lab.key, 6, release_keys=[new_key.public_point.hex()])
    assert "drops its own signing key" in lab.push(dropping)["error"]
    rotation = stream_for(release(tmp_path, "0.6.0"), lab.key, 6,
                          release_keys=[lab.key.public_point.hex(), new_key.public_point.hex()])
    assert lab.push(rotation)["event"] == "installed"
    lab.runs_committed("0.6.0")
    assert lab.push(stream_for(release(tmp_path, "0.7.0"), new_key, 7))["event"] == "installed"
    lab.runs_committed("0.7.0")


def test_a_file_changed_on_the_flash_is_caught_at_boot(lab, tmp_path):
    before = _running_version(lab)
    # An update, then someone with the console edits one of its files.
    assert lab.push(stream_for(release(tmp_path, "0.9.0"), lab.key, 9))["event"] == "installed"
    lab.runs_committed("0.9.0")
    lab.watcher.publish(lab.topic.cmd, lab.ca.sign_command(lab.device_id, "unlock_console"))
    time.sleep(3)
    code = ("import json\nfrom sbd import slots\nd = slots.slot_dir(slots.running())\n"
            "f = open(d + '/lib/sbd/config.mpy', 'ab'); f.write(b'#'); f.close()\nprint(d)")
    SerialBoard(lab.board.port).exec(code)
    since = lab.board.log_size()
    lab.board.control({"cmd": "reset", "kind": "hard"})
    lab.board.wait_for_output('"sbd": "boot"', since, timeout=30, after="rst:0x")
    log = lab.board.serial_log()[since:]
    assert '"event": "integrity"' in log and "config.mpy" in log, log[-1500:]
    boot = [json.loads(line) for line in log.splitlines() if line.startswith('{"sbd": "boot"')][-1]
    assert boot["fw_version"] == before, boot  # the other slot, which still verifies
