"""Signed updates (docs/ota.md): over the device's own MQTT connection, the
harness offers updates the device must refuse, and shows it still runs what
it ran before.

The updates carry the build under test (`sbd_bundle`) stamped with a new
version, so a device that wrongly installs one is visibly changed: it says
`installed`, restarts, and its birth message names the new version. The
device's OTA state (security counter, running slot, the key IDs of the
release keys it trusts) comes from its `status` answer on its result topic.

Signing with a trusted key needs the lab release key
(`<state>/release/release-key.pem`, made by `sbd ota keygen`); the cases
that need it are skipped, or the check is, with the reason, when the harness
does not hold the key the device trusts.
"""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sbd_harness.boards.base import FlashReadback, PowerControl, SerialLog, SyntheticAppImages, has
from sbd_harness.checks.online import locked_device_id, log_offset, ota_status, serial_tail, wait_online
from sbd_harness.device.contract import COMMIT_TIMEOUT_S, PUSH_TIMEOUT_S, TRIAL_TIMEOUT_S, is_ota_event, topics
from sbd_harness.lab.watch import Watcher
from sbd_harness.release import ota
from sbd_harness.release.bundle import FirmwareBundle

STATUS_TIMEOUT_S = 20
# Refusals that say nothing about the update itself: the device did not get as far as checking it.
NOT_CHECKED = ("busy", "no release keys", "too large for flash", "out of memory", "bad begin", "superseded")


class _Device:
    """The device under test on the lab broker, as the OTA checks see it."""

    def __init__(self, board, watcher: Watcher, device_id: str):
        self.board, self.w, self.id = board, watcher, device_id
        self.topic = topics(device_id)
        self.birth: dict[str, Any] = {}

    def online(self, reset: bool = True, reuse: bool = False) -> dict[str, Any]:
        self.birth = wait_online(self.board, self.w, self.topic, reset=reset, reuse=reuse).json()
        return self.birth

    def _ota_result(self, events: str | tuple[str, ...], since: float, timeout: float) -> dict[str, Any] | None:
        wanted = (events,) if isinstance(events, str) else events
        m = self.w.wait_for(is_ota_event(self.topic, wanted, since), timeout)
        return m.json() if m else None

    def status(self) -> dict[str, Any]:
        """The device's `status` answer (counter, running slot, trusted key IDs), asked again at
        growing intervals (a busy device may refuse a request); says what it answered if it never
        gives its status."""
        reply = ota_status(self.w, self.topic, STATUS_TIMEOUT_S)
        if reply is not None and reply.get("event") == "status":
            return reply
        raise AssertionError(f"the device did not answer an OTA status request on {self.topic.ota_ctl} "
                             f"(it cannot be updated over its MQTT connection); it answered {reply}"
                             f"{serial_tail(self.board)}")

    def push(self, stream: bytes) -> dict[str, Any]:
        try:
            return ota.push(self.w, self.id, stream, timeout=PUSH_TIMEOUT_S)
        except ota.OTAError as exc:
            raise AssertionError(f"the device did not answer an update: {exc}") from exc

    def running_version(self) -> str | None:
        return self.online(reset=True).get("fw_version")


def _label(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(2)}"[:16]


def _stream(bundle: FirmwareBundle, version: str, counter: int, model: str, key: ota.ReleaseKey) -> bytes:
    """The build under test as release `version`, signed by `key`."""
    stamped = bundle.with_version(version)
    manifest = ota.build_manifest(stamped, version, counter, model=model)
    files = {f["path"]: stamped.files["/" + f["path"]] for f in manifest["files"]}
    return ota.build_stream(ota.encode_manifest(manifest), key, files)


def _resigned(stream: bytes, key_id: bytes, signature: bytes) -> bytes:
    """The same stream with another key ID and signature in its header."""
    manifest_bytes, _kid, _sig, payload = ota.parse_stream(stream)
    return (ota.MAGIC + len(manifest_bytes).to_bytes(4, "big") + manifest_bytes + key_id + signature + payload)


def _flip_file_byte(stream: bytes) -> tuple[bytes, str]:
    """One byte flipped in the middle of the first non-empty file; the file's path."""
    manifest_bytes, _kid, _sig, payload = ota.parse_stream(stream)
    manifest = json.loads(manifest_bytes)
    at = len(stream) - len(payload)
    for entry in manifest["files"]:
        if entry["size"]:
            out = bytearray(stream)
            out[at + entry["size"] // 2] ^= 0x01
            return bytes(out), entry["path"]
        at += entry["size"]
    raise AssertionError("the build has only empty files")


def _lab_key() -> tuple[ota.ReleaseKey | None, str]:
    path = ota.default_release_key_path()
    if not path.exists():
        return None, f"no lab release key at {path} (sbd ota keygen, before provisioning)"
    try:
        return ota.ReleaseKey.load(path), ""
    except ota.OTAError as exc:
        return None, str(exc)


def _online_device(sbd_board, sbd_boot, w: Watcher) -> tuple[_Device, dict[str, Any]]:
    device = _Device(sbd_board, w, locked_device_id(sbd_boot))
    device.online(reuse=True)  # met as it is when connected: the refusals need it online, not a fresh boot
    status = device.status()
    if not isinstance(status.get("keys"), list):
        pytest.skip("the device's OTA status does not list the release keys it trusts (firmware older than "
                    f"this check): {status}")
    if not status["keys"]:
        pytest.skip("the device trusts no release key (provisioned before sbd ota keygen?): it refuses "
                    "every update, so refusals here would show nothing")
    return device, status


def _refused(device: _Device, case: str, stream: bytes, why: str, outcomes: dict[str, Any],
             what: str = "an unverified update", reset_after: bool = False) -> None:
    """Pushes a stream the device must refuse; fails at once, naming `what` and `why`, when it says it
    installed it. With `reset_after` (the soak tier) the device is then reset (which also gives the
    next case a fresh heap) and must run the same version; by default one check of the running
    version after the last case stands for all (`_unchanged`): a device that installed any of them
    would restart into it."""
    version = device.birth.get("fw_version")
    result = device.push(stream)
    outcomes[case] = seen = {k: v for k, v in result.items() if k != "sbd"}
    if result.get("event") == "installed":
        raise AssertionError(f"the device installed {what} ({case}: {why}): it answered {seen}")
    assert result.get("event") == "rejected", f"{case}: unexpected answer {result}"
    error = str(result.get("error", ""))
    if error.startswith(NOT_CHECKED):
        pytest.skip(f"the device refused the {case} update before checking it ({error}): inconclusive")
    if reset_after:
        seen["runs_after_reset"] = now = device.running_version()
        assert now == version, f"after refusing the {case} update the device runs version {now}, not {version}"


def _unchanged(device: _Device, before: dict[str, Any], evidence: dict[str, Any]) -> None:
    """After the refused updates: a fresh boot (a reset; a device that installed one would boot into it)
    still runs the version it ran before, and its update state (counter, running slot) is as it was."""
    version = device.birth.get("fw_version")
    evidence["runs_after_reset"] = now = device.running_version()
    assert now == version, f"after refusing the updates the device runs version {now}, not {version}"
    evidence["status_after"] = after = device.status()
    assert (after.get("counter"), after.get("active")) == (before.get("counter"), before.get("active")), \
        f"the refused updates changed the device's OTA state: {before} -> {after}"


@pytest.mark.sbd_check(
    id="unsigned-or-foreign-updates-refused",
    title="Over its MQTT connection the device refuses an update signed by an unknown key, an unsigned one, "
          "one with a forged signature and a signed one with a file changed, and keeps its version")
def check_unsigned_or_foreign_updates(sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_evidence, sbd_soak):
    outcomes: dict[str, Any] = {}
    sbd_evidence["cases"] = outcomes
    with Watcher(sbd_broker, f"devices/{locked_device_id(sbd_boot)}/#", persistent=True) as w:
        device, before = _online_device(sbd_board, sbd_boot, w)
        version, model = device.birth.get("fw_version"), device.birth.get("model") or ota.MODEL
        counter = int(before.get("counter") or 0) + 1  # above the device's: only the signature is wrong
        trusted = [bytes.fromhex(k) for k in before["keys"]]
        sbd_evidence.update({"fw_version_before": version, "status_before": before, "counter_offered": counter})
        foreign = ota.ReleaseKey(ec.generate_private_key(ec.SECP256R1()))
        label = _label("unverified")
        by_foreign = _stream(sbd_bundle, label, counter, model, foreign)
        manifest_bytes = ota.parse_stream(by_foreign)[0]
        _refused(device, "unknown-key", by_foreign, "signed by a key it does not trust", outcomes,
                 reset_after=sbd_soak)
        _refused(device, "no-signature", _resigned(by_foreign, bytes(8), bytes(64)),
                 "no signature at all", outcomes, reset_after=sbd_soak)
        # A trusted key's ID (public: the device reports it) on another key's signature.
        _refused(device, "forged-signature", _resigned(by_foreign, trusted[0][:8], foreign.sign(manifest_bytes)),
                 f"trusted key ID {trusted[0].hex()}, but a signature that does not verify under that key",
                 outcomes, reset_after=sbd_soak)
        key, why_not = _lab_key()
        if key is not None and key.key_id in trusted:
            tampered, path = _flip_file_byte(_stream(sbd_bundle, label, counter, model, key))
            _refused(device, "file-changed", tampered,
                     f"validly signed, but {path} differs by one byte from the file the manifest lists", outcomes,
                     reset_after=sbd_soak)
        else:
            outcomes["file-changed"] = {"skipped": why_not or f"the device does not trust the lab release key "
                                        f"{key.key_id.hex()}: nothing validly signed can be tampered with"}
        _unchanged(device, before, sbd_evidence)


@pytest.mark.sbd_check(
    id="update-rollback-refused",
    title="A validly signed update whose security counter is not above the device's (a replay of the current "
          "release, a downgrade) is refused, and the device keeps its version")
def check_update_rollback(sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_evidence, sbd_soak, pytestconfig):
    key, why_not = _lab_key()
    if key is None:
        pytest.skip(f"the harness cannot sign an update, so anti-rollback cannot be shown: {why_not}")
    outcomes: dict[str, Any] = {}
    sbd_evidence["cases"] = outcomes
    with Watcher(sbd_broker, f"devices/{locked_device_id(sbd_boot)}/#", persistent=True) as w:
        device, before = _online_device(sbd_board, sbd_boot, w)
        if key.key_id.hex() not in before["keys"]:
            pytest.skip(f"the device does not trust the lab release key {key.key_id.hex()} (it trusts "
                        f"{', '.join(before['keys'])}): the harness cannot sign an update it would take")
        version, model = device.birth.get("fw_version"), device.birth.get("model") or ota.MODEL
        counter = int(before.get("counter") or 0)
        sbd_evidence.update({"fw_version_before": version, "status_before": before})
        if counter == 0:
            if not pytestconfig.getoption("--sbd-destructive"):
                pytest.skip("the device has never committed an update (security counter 0), so no equal or "
                            "lower counter can be offered; push a release first (sbd ota push), or run with "
                            "--destructive to let this check install the build as update 1")
            # Setup, not the check: the build as it runs, as update 1; it must install and commit.
            since = time.monotonic()
            result = device.push(_stream(sbd_bundle, version, 1, model, key))
            assert result.get("event") == "installed", f"a valid signed update (counter 1) was not installed: {result}"
            committed = device._ota_result("committed", since, COMMIT_TIMEOUT_S)
            sbd_evidence["setup_update_1"] = committed
            assert committed and committed.get("counter") == 1, \
                f"a valid signed update (counter 1) did not commit within {COMMIT_TIMEOUT_S} s"
            device.online()  # a fresh boot of the committed update, as a device in the field would run
            before = device.status()
            counter = int(before.get("counter") or 0)
            sbd_evidence["status_before"] = before
        # First the running release itself, version and files (a device without anti-rollback that installs
        # it runs what it ran, so the checks after this one still see the build); then the same counter on
        # a release of another version (a device that only refuses the version it runs installs that);
        # then, above 1, a lower counter.
        offers = [("replay-of-current", counter, version), ("same-counter-other-release", counter,
                                                             _label("rollback"))]
        offers += [("downgrade", counter - 1, _label("rollback"))] if counter > 1 else []
        for case, offered, stamped in offers:
            _refused(device, case, _stream(sbd_bundle, stamped, offered, model, key),
                     f"security counter {offered} is not above the device's {counter}: anti-rollback is missing",
                     outcomes, what="a rolled-back update", reset_after=sbd_soak)
        _unchanged(device, before, sbd_evidence)


# Whole-firmware updates: an app image into the next app slot ------------------------------------
def _image_stream(key: ota.ReleaseKey, image: bytes, counter: int, model: str, signed_for: bytes | None = None,
                  ) -> bytes:
    """An update carrying `image`, signed by `key`; with `signed_for`, the manifest is that other
    image's (a valid app image, but not the one signed)."""
    manifest = ota.build_image_manifest(signed_for or image, _label("image"), counter, model=model)
    body = ota.encode_manifest(manifest)
    return ota.MAGIC + len(body).to_bytes(4, "big") + body + key.key_id + key.sign(body) + image


def _app_image(project: str, version: str, secure_version: int, seed: bytes = b"") -> bytes:
    from sbd_harness.release.app_image import AppDescriptor, build_app_image
    return build_app_image(AppDescriptor(project, version[:31], secure_version), 192 * 1024, version.encode() + seed)


def _running_slot_bytes(board, app: dict[str, Any]) -> bytes | None:
    """The running app slot as read from the flash chip, where the harness can read it."""
    if not has(board, FlashReadback) or not app.get("slot"):
        return None
    return board.flash_image().read_partition(app["slot"])


def _image_device(sbd_board, sbd_boot, w: Watcher) -> tuple[_Device, dict[str, Any], dict[str, Any], ota.ReleaseKey]:
    key, why_not = _lab_key()
    if key is None:
        pytest.skip(f"the harness cannot sign an update: {why_not}")
    device, status = _online_device(sbd_board, sbd_boot, w)
    if key.key_id.hex() not in status["keys"]:
        pytest.skip(f"the device does not trust the lab release key {key.key_id.hex()}: nothing it would "
                    "accept can be signed here")
    app = device.birth.get("app")
    if not isinstance(app, dict) or not app.get("project"):
        pytest.skip("the device does not report the app image it runs (no `app` in its birth message): "
                    f"a firmware without whole-image updates, or a build without OTA app slots ({app})")
    return device, status, app, key


@pytest.mark.sbd_check(
    id="bad-app-images-refused",
    title="Over its MQTT connection the device refuses a whole-firmware update whose app image is not the one "
          "signed, is for another project, is truncated or (when it can be offered) has a lower secure version, "
          "and its running app slot is untouched")
def check_bad_app_images(sbd_board, sbd_boot, sbd_broker, sbd_evidence, sbd_soak):
    outcomes: dict[str, Any] = {}
    sbd_evidence["cases"] = outcomes
    with Watcher(sbd_broker, f"devices/{locked_device_id(sbd_boot)}/#", persistent=True) as w:
        device, before, app, key = _image_device(sbd_board, sbd_boot, w)
        model = device.birth.get("model") or ota.MODEL
        counter = int(before.get("image_counter") or 0) + 1  # app images have a counter of their own
        sbd_evidence.update({"app_before": app, "status_before": before, "counter_offered": counter})
        running = _running_slot_bytes(sbd_board, app)
        project, secure = app["project"], int(app.get("secure_version") or 0)
        label = _label("signed")
        signed = _app_image(project, label, secure)
        other = _app_image(project, label, secure, seed=b"other")  # a valid image, its descriptor the same
        _refused(device, "not-the-signed-image", _image_stream(key, other, counter, model, signed_for=signed),
                 "a valid app image under the manifest of another (the manifest's SHA-256 is not checked)",
                 outcomes, what="an app image that is not the one signed", reset_after=sbd_soak)
        _refused(device, "foreign-project", _image_stream(key, _app_image("hello_world", "v1.0", secure), counter,
                                                          model),
                 f"an image of project hello_world, not {project}", outcomes, what="a foreign app image",
                 reset_after=sbd_soak)
        whole = _image_stream(key, signed, counter, model)
        _refused(device, "truncated", whole[:len(whole) - 8192], "the image's last 8 KiB missing", outcomes,
                 what="a truncated app image", reset_after=sbd_soak)
        if secure > 0:
            _refused(device, "lower-secure-version", _image_stream(key, _app_image(project, _label("old"), secure - 1),
                                                                   counter, model),
                     f"secure version {secure - 1}, below the running app's {secure}", outcomes,
                     what="an app image with a lower secure version", reset_after=sbd_soak)
        else:
            outcomes["lower-secure-version"] = {"skipped": "the running app has secure version 0: none lower"}
        now = device.online(reset=True).get("app")
        sbd_evidence["app_after"] = now
        assert now == app, f"after refusing the images the device runs {now}, not {app}"
        if running is not None:
            sbd_evidence["running_slot_unchanged"] = unchanged = _running_slot_bytes(sbd_board, app) == running
            assert unchanged, f"the running app slot {app['slot']} changed while the device refused the images"


def _end_trial(board, since: int, version: str) -> str:
    """The trial of `version` cannot reach the broker (stopped): it must not commit, and the next
    reset rolls it back. Where the harness can cut the power and read the serial port, it does so
    once the firmware has tried and failed to connect (so it has started, and whatever it does at
    boot has been done); otherwise it waits for the trial's own time limit, after which the device
    restarts by itself. Returns how the trial ended."""
    if has(board, PowerControl) and has(board, SerialLog):
        board.wait_for_output('"disconnected"', since, timeout=60, after=f"App version:      {version}")
        board.power_cut()
        return "power cut after the trial's first failed connection"
    if has(board, SerialLog):
        board.wait_for_output("rst:0x", since, timeout=TRIAL_TIMEOUT_S + 60, after=f"App version:      {version}")
        return "the trial's time limit"
    time.sleep(TRIAL_TIMEOUT_S + 30)
    return "the trial's time limit (waited without a serial log)"


@pytest.mark.sbd_check(
    id="app-image-updates-commit-or-roll-back",
    title="A whole-firmware update (an app image) boots on trial and commits after the health check, reported "
          "with its app descriptor; a lower secure version is refused after it; and an image that cannot pass "
          "its health check is rolled back by the bootloader, the old image reporting it")
def check_app_image_updates(sbd_board, sbd_boot, sbd_broker, sbd_evidence, sbd_destructive):
    # Destructive (it installs app images and raises the eFuse secure version for good): it runs after
    # every other check, before the factory reset (pytest_plugin.py).
    if not has(sbd_board, SyntheticAppImages):
        pytest.skip("installing an app image needs one built for this board; the harness makes synthetic images, "
                    "which only a board that does not run their code (the emulated one) can boot")
    cases: dict[str, Any] = {}
    sbd_evidence["cases"] = cases
    with Watcher(sbd_broker, f"devices/{locked_device_id(sbd_boot)}/#", persistent=True) as w:
        device, before, app, key = _image_device(sbd_board, sbd_boot, w)
        model = device.birth.get("model") or ota.MODEL
        counter = int(before.get("image_counter") or 0) + 1
        secure = min(int(app.get("secure_version") or 0) + 1, 32)
        label = _label("img")
        sbd_evidence["app_before"] = app
        since = time.monotonic()
        result = device.push(_image_stream(key, _app_image(app["project"], label, secure), counter, model))
        cases["install"] = result
        assert result.get("event") == "installed", f"a valid signed app image was not installed: {result}"
        committed = device._ota_result("committed", since, COMMIT_TIMEOUT_S)
        cases["commit"] = committed
        assert committed and committed.get("version") == label, \
            f"the app image {label} did not commit within {COMMIT_TIMEOUT_S} s{serial_tail(sbd_board)}"
        new = device.online(reset=True).get("app") or {}
        cases["after_reset"] = new
        assert new.get("version") == label and new.get("secure_version") == secure, \
            f"after a reset the device runs {new}, not the committed app image {label}: the bootloader rolled it back"
        result = device.push(_image_stream(key, _app_image(app["project"], _label("old"), secure - 1), counter + 1,
                                           model))
        cases["lower-secure-version"] = result
        assert result.get("event") == "rejected", \
            f"the device installed an app image with secure version {secure - 1} over {secure}: {result}"
        # an image on trial that cannot reach the broker: no health check, so no commit
        since, log_from = time.monotonic(), log_offset(sbd_board)
        failing = _label("trial")
        result = device.push(_image_stream(key, _app_image(app["project"], failing, secure), counter + 2, model))
        cases["install-untested"] = result
        assert result.get("event") == "installed", f"a valid signed app image was not installed: {result}"
        w.pause()
        sbd_broker.stop()
        try:
            cases["trial_ended_by"] = _end_trial(sbd_board, log_from, failing)
        finally:
            sbd_broker.start()
            w.resume()
        back = device.online(reset=False).get("app") or {}
        cases["after_trial"] = back
        assert back.get("version") == label, \
            (f"the app image {failing} never passed its health check, yet the device runs {back}, not {label}: "
             f"it was marked valid before its health check, or the bootloader did not roll it back")
        reverted = device._ota_result("reverted", since, 30)
        cases["reverted"] = reverted
        assert reverted and failing in str(reverted.get("error")), \
            f"the device did not report the app image {failing} that was rolled back: {reverted}"
        # and a fresh boot, for the checks that follow: the committed image again, nothing on trial
        cases["after_last_reset"] = last = device.online(reset=True).get("app") or {}
        assert last.get("version") == label, f"after one more reset the device runs {last}, not {label}"
