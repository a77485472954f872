"""The `sbd` command line: JSON where promised, clear errors, honest exit codes,
and `sbd verify` failing each check against a firmware variant broken for it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from helpers import mpremote
from pathlib import Path

import pytest

from sbd_harness.release.mistakes import CATALOGUE, build_variant

ROOT = Path(__file__).resolve().parents[2]


def sbd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def board_name():
    name = f"cli-{uuid.uuid4().hex[:8]}"
    yield name
    sbd("board", "rm", name)


def firmware_variant(tmp_path: Path, variant: str) -> Path:
    return build_variant(variant, tmp_path / f"fw-{variant}")


@pytest.mark.parametrize("variant", sorted(CATALOGUE))
def test_every_variant_still_applies_to_the_reference(tmp_path, variant):
    fw = firmware_variant(tmp_path, variant)
    assert fw.joinpath("main.py").exists()


def test_board_lifecycle_speaks_json(board_name):
    started = sbd("board", "start", board_name)
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    for key in ("name", "serial", "address", "flash"):
        assert info[key], key
    assert Path(info["flash"]).stat().st_size == 4 * 1024 * 1024
    listed = {b["name"]: b for b in json.loads(sbd("board", "list", "--json").stdout)}
    assert listed[board_name]["running"] is True
    for flag in ("--hard", "--soft", "--power-cut"):
        assert sbd("board", "reset", board_name, flag).returncode == 0
    assert sbd("board", "stop", board_name).returncode == 0
    listed = {b["name"]: b for b in json.loads(sbd("board", "list", "--json").stdout)}
    assert listed[board_name]["running"] is False
    again = json.loads(sbd("board", "start", board_name).stdout)
    assert again["unique_id"] == info["unique_id"], "a board keeps its identity across power-off"


@pytest.mark.parametrize("args, message", [
    (("board", "start", "Bad Name!"), "invalid board name"),
    (("board", "stop", "no-such-board"), "no emulated board"),
    (("flash",), "which board"),
    (("flash", "--board", "no-such-board"), "not running"),
    (("verify", "--board", "no-such-board", "--port", "/dev/null"), "no emulated board"),
    (("flash", "--port", "/dev/ttyNOPE0"), "cannot open"),
])
def test_bad_input_gets_a_clear_error_and_exit_2(args, message):
    proc = sbd(*args)
    assert proc.returncode == 2, proc
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_flashing_a_folder_that_is_not_firmware_is_refused(board_name, tmp_path):
    assert sbd("board", "start", board_name).returncode == 0
    proc = sbd("flash", "--board", board_name, "--firmware", str(tmp_path))
    assert proc.returncode == 2 and "not a firmware folder" in proc.stderr


# The checks a flashed, unprovisioned board can fail: what the variants below break, and a few
# they must leave passing.
INTEGRITY_CHECKS = ("boot-line-identifies-firmware", "device-id-from-hardware", "firmware-matches-build",
                    "no-default-or-shared-secrets", "no-private-key-on-serial")


def _verify(board: str, tmp_path: Path, firmware: Path | None = None,
            checks: tuple[str, ...] = ()) -> tuple[int, dict, Path]:
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    args = ["verify", "--board", board, "--report", str(report), "--junit", str(junit)]
    if firmware:
        args += ["--firmware", str(firmware)]
    for check in checks:
        args += ["--check", check]
    proc = sbd(*args)
    assert report.exists(), proc.stdout + proc.stderr
    return proc.returncode, json.loads(report.read_text()), junit


def _status(report: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


def test_verify_passes_the_reference_firmware_and_writes_all_reports(board_name, tmp_path):
    assert sbd("board", "start", board_name).returncode == 0
    assert sbd("flash", "--board", board_name).returncode == 0
    code, report, junit = _verify(board_name, tmp_path)
    assert code == 0, report
    assert set(report) >= {"board", "firmware", "checks", "summary"}
    assert set(report["firmware"]) >= {"version", "sha256"}
    assert report["summary"]["fail"] == report["summary"]["error"] == 0
    status = _status(report)
    for check in ("boot-line-identifies-firmware", "device-id-from-hardware", "firmware-matches-build",
                  "no-default-or-shared-secrets", "no-private-key-on-serial"):
        assert status[check] == "pass", check
    # an unprovisioned board: the identity checks say why they cannot run yet
    for check in report["checks"]:
        if check["status"] == "skip":
            assert "not provisioned" in check["message"] or "locked" in check["message"] \
                or "destructive" in check["message"] or "no lab CA" in check["message"] \
                or "no eFuses on the emulated board" in check["message"], check
    for check in report["checks"]:
        assert set(check) >= {"id", "title", "status", "provisions", "evidence", "duration_s"}
        assert set(check["provisions"]) == {"etsi_en_303_645", "nist_ir_8259a", "eu_cra", "uk_psti", "owasp_isvs",
                                              "en_18031_1"}
    cases = ET.parse(junit).getroot().iter("testcase")
    props = [p.get("name") for case in cases for p in case.iter("property")]
    assert props.count("provisions") == len(report["checks"])
    markdown = (tmp_path / "report.md").read_text()
    assert "| `firmware-matches-build` | PASS |" in markdown


@pytest.mark.parametrize("variant, failing", [
    ("no-boot-line", {"boot-line-identifies-firmware", "device-id-from-hardware"}),
    ("fixed-device-id", {"device-id-from-hardware"}),
])
def test_verify_fails_a_variant_broken_for_a_check(board_name, tmp_path, variant, failing):
    fw = firmware_variant(tmp_path, variant)
    assert sbd("board", "start", board_name).returncode == 0
    assert sbd("flash", "--board", board_name, "--firmware", str(fw)).returncode == 0
    code, report, _ = _verify(board_name, tmp_path, firmware=fw, checks=INTEGRITY_CHECKS)
    assert code == 1
    assert {k for k, v in _status(report).items() if v == "fail"} == failing


def test_verify_fails_an_older_build_than_the_one_verified(board_name, tmp_path):
    fw = firmware_variant(tmp_path, "old-version")
    assert sbd("board", "start", board_name).returncode == 0
    assert sbd("flash", "--board", board_name, "--firmware", str(fw)).returncode == 0
    code, report, _ = _verify(board_name, tmp_path, checks=INTEGRITY_CHECKS)
    assert code == 1
    status = _status(report)
    assert status["boot-line-identifies-firmware"] == "fail"
    assert status["firmware-matches-build"] == "fail"


def test_verify_fails_when_a_file_is_changed_on_the_board(board_name, tmp_path):
    info = json.loads(sbd("board", "start", board_name).stdout)
    assert sbd("flash", "--board", board_name).returncode == 0
    mpremote(info["serial"], "resume", "exec", "f = open('/main.py', 'a'); f.write('# changed\\n'); f.close()")
    code, report, _ = _verify(board_name, tmp_path, checks=INTEGRITY_CHECKS)
    assert code == 1
    check = next(c for c in report["checks"] if c["id"] == "firmware-matches-build")
    assert check["status"] == "fail" and check["evidence"]["changed"] == ["/main.py"]


def test_a_check_citing_an_invented_provision_is_refused(tmp_path):
    (tmp_path / "check_bad.py").write_text(
        "import pytest\n"
        "@pytest.mark.sbd_check(id='x', title='x', etsi_en_303_645=['5.99-1'])\n"
        "def check_x():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\npython_files = check_*.py\npython_functions = check_*\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                           "-p", "no:cacheprovider"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unknown provisions" in proc.stdout + proc.stderr and "5.99-1" in proc.stdout + proc.stderr


def test_every_catalogue_check_cites_known_provisions():
    from sbd_harness.checks import CHECKS_DIR
    proc = subprocess.run([sys.executable, "-m", "pytest", str(CHECKS_DIR), "-c", str(CHECKS_DIR / "pytest.ini"),
                           "--collect-only", "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("::check_") >= 3


def test_a_newcomer_needs_no_keygen_provision_makes_the_release_key_the_device_then_trusts(tmp_path):
    """From an empty state folder: `sbd pki init` twice keeps the CA; the first `sbd provision`
    makes the lab release key, says so, and installs it (read back from the device's NVS
    through the still-open console); `sbd ota keygen` afterwards keeps that key."""
    import os
    from sbd_harness.release.ota import ReleaseKey
    import tempfile
    # a short folder: the board's control socket path must fit AF_UNIX's 108 bytes
    state = Path(tempfile.mkdtemp(prefix="sbd-new-"))
    env = {**os.environ, "SBD_STATE_DIR": str(state)}
    env.pop("SBD_PKI_DIR", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True,
                              timeout=120, env=env)

    name = f"cli-{uuid.uuid4().hex[:8]}"
    key_path = state / "release" / "release-key.pem"
    try:
        made = run("pki", "init")
        assert made.returncode == 0 and json.loads(made.stdout)["made"] is True, made.stderr
        ca_key = (state / "pki" / "ca.key.pem").read_bytes()
        again = run("pki", "init")
        assert again.returncode == 0, again.stderr
        assert "already exists" in again.stderr and "kept" in again.stderr
        assert json.loads(again.stdout)["made"] is False
        assert json.loads(again.stdout)["ca_sha256"] == json.loads(made.stdout)["ca_sha256"]
        assert (state / "pki" / "ca.key.pem").read_bytes() == ca_key

        started = run("board", "start", name)
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        assert run("flash", "--board", name).returncode == 0
        assert not key_path.exists()
        provisioned = run("provision", "--board", name, "--no-lock")
        assert provisioned.returncode == 0, provisioned.stderr
        said = [line for line in provisioned.stderr.splitlines() if "release key" in line]
        assert len(said) == 1 and str(key_path) in said[0] and "made" in said[0], provisioned.stderr
        key = ReleaseKey.load(key_path)
        trusted = mpremote(info["serial"], "resume", "exec",
                           "import binascii\nfrom sbd import manifest, slots\n"
                           "print(','.join(binascii.hexlify(manifest.key_id(k)).decode() for k in slots.trusted_keys()))")
        assert trusted.strip() == key.key_id.hex()

        pem = key_path.read_bytes()
        for _ in range(2):
            kept = run("ota", "keygen")
            assert kept.returncode == 0, kept.stderr
            assert "already exists" in kept.stderr and "kept" in kept.stderr
            shown = json.loads(kept.stdout)
            assert shown["made"] is False and shown["key_id"] == key.key_id.hex()
            assert key_path.read_bytes() == pem
    finally:
        run("board", "rm", name)
        shutil.rmtree(state, ignore_errors=True)


def test_a_selection_that_is_not_tested_fails_and_keeps_the_full_report(board_name, tmp_path):
    """`sbd verify --check ID` / `-k`: a selected check that skips is 'not tested' (exit 1, with its
    reason), a selection of nothing is a usage error, and neither touches the full run's report."""
    assert sbd("board", "start", board_name).returncode == 0
    assert sbd("flash", "--board", board_name).returncode == 0
    full = tmp_path / "reports" / board_name / "report.json"
    full.parent.mkdir(parents=True)
    full.write_text('{"the": "full run"}')

    def verify(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sbd_harness", "verify", "--board", board_name, *args],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    skipped = verify("--check", "chip-security-fuses", "--check", "boot-line-identifies-firmware")
    assert skipped.returncode == 1, skipped.stdout + skipped.stderr
    assert "not tested: chip-security-fuses (skip):" in skipped.stdout, skipped.stdout
    assert "boot-line-identifies-firmware (" not in skipped.stdout.split("not tested", 1)[1]
    selected = json.loads((full.parent / "report.selected.json").read_text())
    assert {c["id"] for c in selected["checks"]} == {"chip-security-fuses", "boot-line-identifies-firmware"}
    nothing = verify("-k", "console-locked")  # an ID where -k wants a function name
    assert nothing.returncode == 2 and "the selection ran no check" in nothing.stderr, nothing.stderr
    assert full.read_text() == '{"the": "full run"}'


def test_the_check_catalogue_lists_ids_and_function_names():
    proc = sbd("checks", "--json")
    assert proc.returncode == 0, proc.stderr
    checks = {c["id"]: c for c in json.loads(proc.stdout)}
    assert checks["console-locked"]["function"] == "check_console_locked"
    assert len(checks) >= 25 and all(c["title"] and c["provisions"] for c in checks.values())
