"""A locked emulated board online at its own lab broker, with a release key it trusts:
what the update tests, end to end and under power cuts, share (tests/board/test_ota.py,
tests/soak/)."""
from __future__ import annotations

import json
import random
import shutil
import threading
import time
import uuid
from pathlib import Path

from sbd_harness.boards import lifecycle
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.device.contract import is_birth, is_ota_event, topics
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.broker import Broker, free_port, lab_address
from sbd_harness.lab.watch import Watcher, on_topic
from sbd_harness.paths import firmware_dir
from sbd_harness.release import ota
from sbd_harness.release.app_image import AppDescriptor, build_app_image
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


def stream_for(bundle: FirmwareBundle, key: ota.ReleaseKey, counter: int, checked: bool = True,
               **manifest_fields) -> bytes:
    """The release's stream; `checked=False` frames and signs it by hand, without the host's
    refusals (ota.build_stream), for a stream only the device is meant to refuse."""
    manifest = ota.build_manifest(bundle, bundle.version, counter, model=MODEL)
    manifest.update(manifest_fields)
    files = {f["path"]: bundle.files["/" + f["path"]] for f in manifest["files"]}
    if checked:
        return ota.build_stream(ota.encode_manifest(manifest), key, files)
    body = ota.encode_manifest(manifest)
    return (ota.MAGIC + len(body).to_bytes(4, "big") + body + key.key_id + key.sign(body)
            + b"".join(files[f["path"]] for f in manifest["files"]))


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


def running_version(lab: Lab) -> str:
    t0 = time.monotonic()
    lab.board.reset("hard")
    return lab.online(since=t0)["fw_version"]


def image(version: str, secure_version: int, kib: int = 256) -> bytes:
    """A real ESP32 app image (esptool's format) of MicroPython's project with this app descriptor."""
    return build_app_image(AppDescriptor("micropython", version, secure_version), kib * 1024, version.encode())


def image_stream(lab: Lab, data: bytes, counter: int) -> bytes:
    """The app image as a signed whole-firmware update, security counter `counter`."""
    manifest = ota.build_image_manifest(data, f"0.{counter}.0", counter)
    return ota.build_stream(ota.encode_manifest(manifest), lab.key, {"image": data})


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def tampered(lab: Lab, tmp_path: Path, case: str) -> bytes:
    new = release(tmp_path, "0.3.0")
    good = stream_for(new, lab.key, 3)
    manifest_bytes, key_id, signature, payload = ota.parse_stream(good)
    head = len(good) - len(payload)
    if case == "bit-in-file":
        return flip(good, head + len(payload) // 2)
    if case == "bit-in-manifest":
        return flip(good, 12 + len(manifest_bytes) // 2)
    if case == "bit-in-signature":
        return flip(good, head - 10)
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


PHASES = ("download", "verify-and-switch", "trial-boot")


def _boot_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith('{"sbd": "boot"'):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _in_background(push) -> threading.Event:
    """Runs `push` (a transfer the series will cut short: OTAError is expected) in a thread;
    the event is set when it has ended."""
    done = threading.Event()

    def run() -> None:
        try:
            push()
        except ota.OTAError:
            pass
        finally:
            done.set()
    threading.Thread(target=run, daemon=True).start()
    return done


def power_cut_series(tmp_path: Path, cuts: int, seed: int = 5) -> dict:
    """`cuts` power cuts across download, verify-and-switch and trial boot, phase after phase; after each
    the board boots a version that verified, and a last update still goes through. Returns the outcomes."""
    lab = Lab(tmp_path)
    try:
        bundles = {"0.2.0": release(tmp_path, "0.2.0"), "0.3.0": release(tmp_path, "0.3.0")}
        rng = random.Random(seed)
        lab.board.reset("hard")
        current = lab.online()["fw_version"]
        counter = 1
        # How long one transfer takes here: the cut times scale with it.
        counter += 1
        time.sleep(1.5)  # its subscriptions are in place after the birth message
        t0 = time.monotonic()
        assert lab.push(stream_for(bundles["0.2.0"], lab.key, counter))["event"] == "installed"
        transfer_s = time.monotonic() - t0
        current = lab.online()["fw_version"]
        assert lab.ota_event("committed")
        outcomes: dict[str, dict[str, int]] = {p: {} for p in PHASES}
        # The push reads the lab's watcher; this test watches through its own.
        obs = Watcher(lab.broker, lab.topic.all)
        for cut in range(cuts):
            phase = PHASES[cut % len(PHASES)]
            target = "0.3.0" if current == "0.2.0" else "0.2.0"
            counter += 1
            stream = stream_for(bundles[target], lab.key, counter)
            started = time.monotonic()
            done = _in_background(lambda s=stream: lab.push(s, timeout=2 + 2 * transfer_s))
            if phase == "download":
                time.sleep(rng.uniform(0.05, max(0.1, transfer_s * 0.8)))
            elif phase == "verify-and-switch":
                time.sleep(rng.uniform(transfer_s * 0.7, transfer_s * 1.3 + 0.2))
            else:
                obs.wait_for(is_ota_event(lab.topic, ("installed",)), 20)
                time.sleep(rng.uniform(0.0, 2.5))
            since = lab.board.log_size()
            lab.board.reset("power-cut")
            boots = _boot_lines(lab.board.serial_log()[since:])
            assert boots, f"cut {cut} ({phase}): no boot line after the cut"
            booted = boots[-1]["fw_version"]
            assert booted in (current, target), f"cut {cut} ({phase}): booted {booted}, expected {current} or {target}"
            assert '"slot_error"' not in lab.board.serial_log()[since:]
            done.wait(30 + transfer_s)
            # Settle: online again, and its first reading acknowledged (a trial commits on that).
            birth = obs.wait_for(is_birth(lab.topic, started), 75)
            assert birth is not None, f"cut {cut} ({phase}): the board did not come back online"
            obs.wait_for(on_topic(lab.topic.telemetry), 15)
            time.sleep(0.3)
            current = birth.json()["fw_version"]
            key = f"{booted}->{current}"
            outcomes[phase][key] = outcomes[phase].get(key, 0) + 1
        summary = {"cuts": cuts, "transfer_s": round(transfer_s, 2), "outcomes": outcomes}
        print(json.dumps(summary))
        # A last, uninterrupted update still goes through: nothing was left broken.
        counter += 1
        target = "0.3.0" if current == "0.2.0" else "0.2.0"
        assert lab.push(stream_for(bundles[target], lab.key, counter))["event"] == "installed"
        assert lab.online()["fw_version"] == target
        obs.close()
        return summary
    finally:
        lab.close()


APP_VERSION = "App version:      "  # the emulated ESP-IDF bootloader's line for the app it started


def _booted_apps(log: str) -> list[str]:
    return [line.split(APP_VERSION, 1)[1].strip() for line in log.splitlines() if APP_VERSION in line]


def _is_end(lab: Lab, m) -> bool:
    """The host's `end` of a transfer, on the device's update control topic."""
    return m.topic == lab.topic.ota_ctl and b'"end"' in m.payload


def image_power_cut_series(tmp_path: Path, cuts: int, seed: int = 7) -> dict:
    """`cuts` power cuts across whole-firmware (app image) updates: while the image streams into
    the next app slot, around its verification and `set_boot()`, and during its trial boot before
    the health check, phase after phase. After each cut the emulated ESP-IDF bootloader loads an
    image that verified, the app that ran before or the new one (a trial it cut short rolled back),
    and the board comes back online reporting it; a last image update still commits. Returns the
    outcomes. Both images carry secure version 1: the cuts, not the eFuse, decide what boots."""
    lab = Lab(tmp_path)
    try:
        rng = random.Random(seed)
        apps = {"a": image("v1.29.0-cut.a", 1), "b": image("v1.29.0-cut.b", 1)}
        names = {"v1.29.0-cut.a": "a", "v1.29.0-cut.b": "b"}
        lab.board.reset("hard")
        lab.online()
        time.sleep(1.5)  # its subscriptions are in place after the birth message
        counter = 2
        t0 = time.monotonic()
        assert lab.push(image_stream(lab, apps["a"], counter))["event"] == "installed"
        transfer_s = time.monotonic() - t0
        assert lab.online(since=t0)["app"]["version"] == "v1.29.0-cut.a"
        assert lab.ota_event("committed")
        current = "v1.29.0-cut.a"
        outcomes: dict[str, dict[str, int]] = {p: {} for p in PHASES}
        obs = Watcher(lab.broker, lab.topic.all)
        for cut in range(cuts):
            phase = PHASES[cut % len(PHASES)]
            target = "v1.29.0-cut.b" if current == "v1.29.0-cut.a" else "v1.29.0-cut.a"
            counter += 1
            stream = image_stream(lab, apps[names[target]], counter)
            # The transfer's own connection, closed at the cut: a push that resumed once the board is
            # back would install the image after all, behind the series' back.
            pusher = Watcher(lab.broker, lab.topic.all)
            try:
                assert pusher.wait_subscribed(10), "the transfer's connection was not subscribed"
                started, from_log = time.monotonic(), lab.board.log_size()
                done = _in_background(
                    lambda s=stream, w=pusher: ota.push(w, lab.device_id, s, timeout=2 + 2 * transfer_s))
                if phase == "download":
                    time.sleep(rng.uniform(0.05, max(0.1, transfer_s * 0.8)))
                elif phase == "verify-and-switch":  # from the host's `end`: the check from flash, set_boot()
                    ended = obs.wait_for(lambda m: _is_end(lab, m), 10 + transfer_s)
                    assert ended is not None, (f"cut {cut} ({phase}): the transfer never ended: "
                                               f"{[(m.topic, m.payload[:80]) for m in obs.all[-8:]]}")
                    time.sleep(rng.uniform(0.0, 1.2))
                else:  # the new image runs on trial: cut before it could report to the broker
                    obs.wait_for(is_ota_event(lab.topic, ("installed",)), 20 + transfer_s)
                    lab.board.wait_for_output(APP_VERSION + target, from_log, timeout=30)
                    time.sleep(rng.uniform(0.0, 0.3))
            finally:
                pusher.close()
            # A transfer faster than the first may have ended before a "download" cut: then it was one
            # around set_boot() after all.
            ended = any(m.at >= started for m in obs.seen(lambda m: _is_end(lab, m)))
            since = lab.board.log_size()
            lab.board.reset("power-cut")
            log = lab.board.serial_log()[since:]
            booted = _booted_apps(log)
            assert booted and "Loaded app from partition" in log, f"cut {cut} ({phase}): nothing booted\n{log[-1500:]}"
            assert "No bootable app" not in log, f"cut {cut} ({phase}): {log[-1500:]}"
            # mid-stream the new slot is not selected yet, and a trial cut short is rolled back: only
            # around set_boot() may either boot
            either = phase == "verify-and-switch" or (phase == "download" and ended)
            allowed = (current, target) if either else (current,)
            assert booted[-1] in allowed, f"cut {cut} ({phase}): booted {booted[-1]}, expected one of {allowed}"
            done.wait(30 + transfer_s)
            birth = obs.wait_for(is_birth(lab.topic, started), 75)
            assert birth is not None, f"cut {cut} ({phase}): the board did not come back online"
            reported = birth.json()["app"]["version"]
            assert reported in (current, target), f"cut {cut} ({phase}): reports {reported}"
            obs.wait_for(on_topic(lab.topic.telemetry), 15)  # a trial commits once a reading is acknowledged
            time.sleep(0.3)
            key = "switched to the new image" if booted[-1] == target else "kept the running image"
            outcomes[phase][key] = outcomes[phase].get(key, 0) + 1
            if reported == target:  # the new image booted on trial: it commits, or the next boot rolls it back
                commit = obs.wait_for(is_ota_event(lab.topic, ("committed", "reverted"), started), 30)
                assert commit is not None and commit.json()["event"] == "committed", \
                    f"cut {cut} ({phase}): {commit.json() if commit else 'no commit'}"
            current = reported
        summary = {"cuts": cuts, "transfer_s": round(transfer_s, 2), "outcomes": outcomes}
        print(json.dumps(summary))
        # A last, uninterrupted image update still goes through: nothing was left broken.
        target = "v1.29.0-cut.b" if current == "v1.29.0-cut.a" else "v1.29.0-cut.a"
        counter += 1
        t1 = time.monotonic()
        assert lab.push(image_stream(lab, apps[names[target]], counter))["event"] == "installed"
        assert lab.online(since=t1)["app"]["version"] == target
        obs.close()
        return summary
    finally:
        lab.close()
