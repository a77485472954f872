"""Attestation on emulated boards, end to end: a locked board passes
device-id-from-hardware and firmware-matches-build by attestation (not a
skip); firmware-matches-build fails on a board that holds a package that
would shadow /lib/sbd (locked or not), on one with a /lib file that is not the
build's, and on one that keeps an update left in /ota by an earlier image; attest is
refused over MQTT, where its reply does not fit, and the device keeps serving;
a board running an update attests to its slot, compared with the update's build."""
from __future__ import annotations

import json
import queue
import shutil
import time
from pathlib import Path

from sbd_harness.identity import attest
from sbd_harness.release import ota
from sbd_harness.boards.serial_board import read_boot
from sbd_harness.device.bootline import last_boot_line
from sbd_harness.lab.broker import Broker
from sbd_harness.release.bundle import FirmwareBundle, compile_mpy
from sbd_harness.release.mistakes import build_variant
from sbd_harness.boards.flashing import flash_firmware
from sbd_harness.identity.provisioning import lab_settings, provision
from sbd_harness.lab.watch import Watcher
from sbd_harness.device.contract import topics
from helpers import only, unexpected, verify_report
from sbd_harness.paths import firmware_dir

FIRMWARE = firmware_dir()

CHECKS = ("device-id-from-hardware", "firmware-matches-build")
# A package that would shadow /lib/sbd where the filesystem's root is on sys.path (MicroPython's default
# "", ".frozen", "/lib"): its own code first, then every import of sbd.* handed on to /lib/sbd, so the
# board works as before. The firmware takes "" off sys.path before it imports any of its own code.
SHADOW = b'print("shadow package ran")\n__path__ = "/lib/sbd"\n'


def _provisioned_open(make_board, ca, bundle: FirmwareBundle):
    """A flashed, provisioned board whose console is still open (locked later by _lock)."""
    board = make_board("att")
    flash_firmware(board, bundle)
    return board, provision(board, ca, lock=False)


def _lock(board) -> dict:
    """provisioning.lock() through the raw REPL; the locked boot line."""
    with board.session() as t:
        t.exec_raw_no_follow("from sbd import provisioning\nprovisioning.lock()")
        boot = last_boot_line(read_boot(t.serial, 30))
        t.in_raw_repl = False  # the board rebooted into its locked firmware
    assert boot and boot["security"]["console"] == "locked", boot
    return boot


def _verify(board, ca, tmp_path: Path, *extra: str) -> dict[str, dict]:
    _, report = verify_report(board, ca, tmp_path / f"report-{board.name}.json", *only(*CHECKS), *extra,
                              timeout=300)
    checks = {c["id"]: c for c in report["checks"]}
    assert set(checks) == set(CHECKS), unexpected(report)
    return checks


def test_a_locked_board_passes_both_checks_by_attestation(make_board, ca, bundle, tmp_path):
    board = make_board("att")
    flash_firmware(board, bundle)
    result = provision(board, ca)
    assert result.boot_line["security"]["console"] == "locked"
    checks = _verify(board, ca, tmp_path)
    assert {c: checks[c]["status"] for c in CHECKS} == {c: "pass" for c in CHECKS}, json.dumps(checks, indent=1)
    for c in CHECKS:
        seen = checks[c]["evidence"]["attestation"]
        assert seen["device_id"] == result.device_id and seen["slot"] == "factory"
        assert seen["fw_version"] == bundle.version and seen["files"] == len(bundle.files)
    assert checks["device-id-from-hardware"]["evidence"]["machine_unique_id"] == board.conf["unique_id"]
    files = checks["firmware-matches-build"]["evidence"]
    assert (files["missing"], files["changed"], files["extra"]) == ([], [], [])


def test_a_package_shadowing_lib_sbd_fails_firmware_matches_build(make_board, ca, bundle, tmp_path):
    board, result = _provisioned_open(make_board, ca, bundle)
    board.put_files({"/sbd/__init__.py": SHADOW})
    since = board.log_size()
    _lock(board)
    assert "shadow package ran" not in board.serial_log()[since:]  # never imported
    checks = _verify(board, ca, tmp_path)
    assert checks["device-id-from-hardware"]["status"] == "pass", checks["device-id-from-hardware"]
    matches = checks["firmware-matches-build"]
    assert matches["status"] == "fail", matches
    assert (matches["evidence"]["missing"], matches["evidence"]["changed"], matches["evidence"]["extra"]) \
        == ([], [], ["/sbd/__init__.py"])
    assert "extra ['/sbd/__init__.py']" in matches["message"]


def test_a_package_beside_the_firmware_fails_firmware_matches_build_over_the_repl(make_board, ca, bundle, tmp_path):
    board, _ = _provisioned_open(make_board, ca, bundle)
    board.put_files({"/sbd/__init__.py": SHADOW, "/notes.txt": b"no module, yet not the build's"})
    matches = _verify(board, ca, tmp_path)["firmware-matches-build"]
    assert matches["status"] == "fail", matches
    assert (matches["evidence"]["missing"], matches["evidence"]["changed"], matches["evidence"]["extra"]) \
        == ([], [], ["/notes.txt", "/sbd/__init__.py"])


def test_an_update_left_from_an_earlier_image_fails_firmware_matches_build(make_board, ca, tmp_path):
    """A firmware that keeps what an earlier image left in /ota (as a flash that
    erased nothing did): the board runs its factory image, the old update lies beside it."""
    fw = build_variant("foreign-updates-kept", tmp_path / "fw")
    variant = FirmwareBundle.from_dir(fw)
    board, _ = _provisioned_open(make_board, ca, variant)
    stale = {"/ota/slot_a/manifest.json": b'{"format": 1}', "/ota/slot_a/manifest.sig": b"\x01" * 72,
             "/ota/slot_a/lib/sbd/version.mpy": variant.files["/lib/sbd/version.mpy"]}
    board.put_files(stale)
    _lock(board)
    matches = _verify(board, ca, tmp_path, "--firmware", str(fw))["firmware-matches-build"]
    assert matches["status"] == "fail", matches
    assert matches["evidence"]["attestation"]["slot"] == "factory"
    assert matches["evidence"]["stale_updates"] == sorted(stale), matches
    assert "stale updates" in matches["message"]


def test_a_lib_file_that_is_not_the_builds_fails_firmware_matches_build(make_board, ca, bundle, tmp_path):
    board, _ = _provisioned_open(make_board, ca, bundle)
    source = tmp_path / "version.py"
    source.write_bytes(bundle.sources["/lib/sbd/version.py"] + b"PATCHED = True  # not in the build\n")
    board.put_files({"/lib/sbd/version.mpy": compile_mpy(source)})
    _lock(board)
    matches = _verify(board, ca, tmp_path)["firmware-matches-build"]
    assert matches["status"] == "fail", matches
    assert (matches["evidence"]["missing"], matches["evidence"]["changed"], matches["evidence"]["extra"]) \
        == ([], ["/lib/sbd/version.mpy"], [])


def test_attest_is_refused_over_mqtt_and_the_device_serves_on(make_board, tmp_path):
    from sbd_harness.identity.pki import LabCA
    ca = LabCA(tmp_path / "pki")
    ca.init()
    with Broker(ca) as broker:
        board = make_board("att")
        flash_firmware(board, FirmwareBundle.from_dir())
        result = provision(board, ca, settings=dict(lab_settings(board, broker.port), telemetry_s=30))
        topic = topics(result.device_id)
        results: queue.Queue = queue.Queue()
        client = broker.monitor()
        client.on_message = lambda c, u, m: results.put(json.loads(m.payload))
        client.subscribe(topic.result, qos=1)
        client.loop_start()
        try:
            board.wait_for_output('"event": "connected"', since=0, timeout=30)
            client.publish(topic.cmd, attest.attest_command(ca, result.device_id, attest.new_nonce()), qos=1)
            client.publish(topic.cmd, ca.sign_command(result.device_id, "status"), qos=1)
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 2 and time.monotonic() < deadline:
                try:
                    got.append(results.get(timeout=0.5))
                except queue.Empty:
                    pass
        finally:
            client.loop_stop()
            client.disconnect()
        assert got[0] == {"sbd": "cmd", "ok": False, "error": "serial console only"}, got
        assert got[1]["ok"] is True and got[1]["cmd"] == "status", got
        # and on the console, the same device attests
        assert attest.attest(board, ca, result.device_id).device_id == result.device_id



def test_a_board_running_an_update_attests_to_its_slot(make_board, tmp_path):
    from sbd_harness.identity.pki import LabCA
    ca = LabCA(tmp_path / "pki")
    ca.init()
    key = ota.ReleaseKey.generate(tmp_path / "release-key.pem")
    release = tmp_path / "fw-0.2.0"  # the manufacturer's next release: the reference, another version
    shutil.copytree(FIRMWARE, release, ignore=shutil.ignore_patterns("__pycache__"))
    version_py = release / "lib/sbd/version.py"
    version_py.write_text(version_py.read_text().replace('VERSION = "0.1.0"', 'VERSION = "0.2.0"'))
    update = FirmwareBundle.from_dir(release)
    manifest = ota.build_manifest(update, "0.2.0", 2)
    stream = ota.build_stream(ota.encode_manifest(manifest), key,
                              {f["path"]: update.files["/" + f["path"]] for f in manifest["files"]})
    with Broker(ca) as broker:
        board = make_board("att")
        flash_firmware(board, FirmwareBundle.from_dir())
        result = provision(board, ca, settings=lab_settings(board, broker.port), release_keys=[key.public_point])
        watcher = Watcher(broker, topics(result.device_id).all, persistent=True)
        try:
            assert ota.push(watcher, result.device_id, stream)["event"] == "installed"
            committed = watcher.wait_for(lambda m: (m.json() or {}).get("event") == "committed", 90)
            assert committed is not None, board.serial_log()[-2000:]
        finally:
            watcher.close()
        att = attest.attest(board, ca, result.device_id)
        assert (att.slot, att.version, att.counter) in {("a", "0.2.0", 2), ("b", "0.2.0", 2)}
        slot_files = [p for p in att.files if p.startswith(f"/ota/slot_{att.slot}/")]
        assert f"/ota/slot_{att.slot}/manifest.sig" in slot_files and len(slot_files) == len(manifest["files"]) + 2
        diff = attest.compare_with_bundle(att, update)
        assert diff.ok and diff.not_compared == sorted(p for p in FirmwareBundle.from_dir().files
                                                       if p.startswith("/lib/")), diff
        # against the factory build, the slot's files are not the build's
        assert attest.compare_with_bundle(att, FirmwareBundle.from_dir()).changed == ["/lib/sbd/version.mpy"]
        checks = _verify(board, ca, tmp_path, "--firmware", str(release))
        assert {c: checks[c]["status"] for c in CHECKS} == {c: "pass" for c in CHECKS}, json.dumps(checks, indent=1)
