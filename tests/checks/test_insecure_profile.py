"""The insecure lab profile (`sbd flash --profile insecure`).

Every mistake still applies to the reference firmware, the build is labelled
on its boot line and serial port, the debug shell it ships can be exploited
as docs/labs/ say, and `sbd verify` on one board flashed with all mistakes
fails the catalogue check of each of them."""
from __future__ import annotations

import filecmp
import json
import socket
import subprocess
import sys
from helpers import only, verify_report
from pathlib import Path

import pytest

from sbd_harness.checks import CHECKS_DIR
from sbd_harness.device.bootline import last_boot_line
from sbd_harness.identity.provisioning import lab_settings, provision
from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.paths import firmware_dir
from sbd_harness.release import mistakes, profiles
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.reports.provisions import unknown_ids

FIRMWARE = firmware_dir()

ROOT = Path(__file__).resolve().parents[2]
INSECURE = profiles.PROFILES["insecure"]


def sbd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True,
                          timeout=timeout)


def _with_requirements(name: str) -> list[str]:
    return [m for m in INSECURE.mistakes if m == name or m in INSECURE.mistakes[name].requires]


# Building ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mistake", list(INSECURE.mistakes))
def test_each_mistake_applies_to_the_reference_on_its_own(tmp_path, mistake):
    fw = profiles.build("insecure", tmp_path / "fw", _with_requirements(mistake))
    m = INSECURE.mistakes[mistake]
    for rel, _old, new in m.patches:
        assert new in (fw / rel).read_text(), f"{mistake}: {rel} not patched"
    for rel in m.files:
        assert (fw / rel).is_file() and not (FIRMWARE / rel).exists()
    assert json.loads((fw / "profile.json").read_text())["mistakes"] == _with_requirements(mistake)
    FirmwareBundle.from_dir(fw)  # every module still compiles


def test_the_whole_profile_builds_and_is_labelled(tmp_path):
    fw = profiles.build("insecure", tmp_path / "fw")
    bundle = FirmwareBundle.from_dir(fw)
    assert "/lib/sbd/debug_shell.mpy" in bundle.files
    assert 'PROFILE = "insecure"' in bundle.sources["/lib/sbd/version.py"].decode()
    assert profiles.WARNING in bundle.sources["/lib/sbd/boot.py"].decode()
    assert profiles.read_marker(fw) == {"profile": "insecure", "mistakes": list(INSECURE.mistakes),
                                        "source": str(FIRMWARE)}
    # Built again over itself: replaced, not refused.
    profiles.build("insecure", fw, ["open-console"])
    assert not (fw / "lib/sbd/debug_shell.py").exists()


def test_the_reference_profile_is_the_firmware_as_it_is(tmp_path):
    assert profiles.DEFAULT_PROFILE == "reference"
    fw = profiles.build("reference", tmp_path / "fw")
    cmp = filecmp.dircmp(FIRMWARE, fw, ignore=["__pycache__", profiles.MARKER])
    pending = [cmp]
    while pending:
        c = pending.pop()
        assert not (c.left_only or c.right_only or c.diff_files), (c.left_only, c.right_only, c.diff_files)
        pending += c.subdirs.values()
    assert 'PROFILE = "reference"' in (FIRMWARE / "lib/sbd/version.py").read_text()


def test_the_lab_profile_and_the_tests_share_one_catalogue_of_mistakes():
    for name, mistake in INSECURE.mistakes.items():
        assert mistakes.CATALOGUE[name] is mistake
    assert set(mistakes.CATALOGUE) - set(INSECURE.mistakes), "the tests' own mistakes are in the catalogue too"


def test_every_mistake_is_documented_with_real_provisions_and_checks():
    readme = (ROOT / "docs/labs/README.md").read_text()
    for m in INSECURE.mistakes.values():
        assert not unknown_ids(m.provisions), m.name
        assert m.checks and all(m.provisions.values())
        page = ROOT / m.lab
        assert page.is_file(), f"no lab page {m.lab}"
        assert f"({m.name}.md)" in readme, f"docs/labs/README.md does not link {m.name}.md"
        text = page.read_text()
        for check in m.checks:
            assert check in text, f"{m.lab} does not name the check {check}"


@pytest.mark.parametrize("mistakes, message", [
    (["open-port", "no-such-mistake"], "unknown mistakes ['no-such-mistake']"),
    (["default-password"], "builds on open-port"),
])
def test_a_bad_selection_is_a_clear_error(tmp_path, mistakes, message):
    with pytest.raises(profiles.ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        profiles.build("insecure", tmp_path / "fw", mistakes)
    assert not (tmp_path / "fw").exists()


def test_a_patch_whose_text_is_gone_fails_the_build(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/x.py").write_text("a = 1\n")
    with pytest.raises(mistakes.MistakeError, match="mistake m: lib/x.py no longer contains 'b = 2'"):
        mistakes.apply_patches(tmp_path, [("lib/x.py", "b = 2", "b = 3")], "mistake m")
    assert (tmp_path / "lib/x.py").read_text() == "a = 1\n"


def test_a_firmware_without_a_mistake_s_text_gives_an_error_and_no_half_build(tmp_path):
    import shutil
    source = tmp_path / "changed"
    shutil.copytree(FIRMWARE, source, ignore=shutil.ignore_patterns("__pycache__"))
    tls = source / "lib/sbd/tls.py"
    tls.write_text(tls.read_text().replace("ssl.CERT_REQUIRED", "ssl.CERT_REQUIRED  # changed"))
    with pytest.raises(mistakes.MistakeError, match="mistake no-cert-verification: lib/sbd/tls.py no longer"):
        profiles.build("insecure", tmp_path / "fw", source=source)
    assert not (tmp_path / "fw").exists()


def test_a_folder_that_is_not_a_build_is_never_overwritten(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("keep me")
    with pytest.raises(profiles.ProfileError, match="not an earlier profile build"):
        profiles.build("insecure", keep)
    assert (keep / "notes.txt").read_text() == "keep me"


def test_the_cli_refuses_bad_profile_arguments_before_touching_a_board(tmp_path):
    for args, message in ((["--mistakes", "open-port"], "the reference profile makes no mistakes"),
                          (["--profile", "insecure", "--mistakes", "default-password"], "builds on open-port"),
                          (["--build-dir", str(tmp_path / "b")], "--build-dir is for a profile that is built")):
        proc = sbd("flash", "--board", "no-such-board", *args, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = sbd("flash", "--board", "x", "--profile", "hardened", timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'hardened'" in proc.stderr


# One board with every mistake -------------------------------------------------------------------
def _catalogue_checks() -> dict[str, str]:
    """check ID -> function name, from the catalogue as it is now."""
    import re
    found = {}
    for path in CHECKS_DIR.glob("check_*.py"):
        text = path.read_text()
        for m in re.finditer(r'id="([^"]+)".*?\ndef (check_\w+)', text, re.S):
            found[m.group(1)] = m.group(2)
    return found


def _shell(address: str, *lines: str) -> list[str]:
    """Logs in to the debug shell and runs `lines`; what came back after each (banner first)."""
    out = []
    with socket.create_connection((address, 2323), timeout=10) as s:
        s.settimeout(10)

        def until(marker: bytes) -> str:
            data = b""
            while marker not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.decode(errors="replace")

        out.append(until(b"password: "))
        for line in lines:
            s.sendall(line.encode() + b"\n")
            out.append(until(b">>> "))
    return out


def test_a_board_flashed_with_the_insecure_profile_says_so_and_fails_each_check(make_board, ca, release_key,
                                                                                 tmp_path):
    board = make_board("insecure")
    fw = tmp_path / "fw"
    flashed = sbd("flash", "--board", board.name, "--profile", "insecure", "--build-dir", str(fw))
    assert flashed.returncode == 0, flashed.stderr
    assert profiles.WARNING in flashed.stdout
    assert f"sbd verify --board {board.name} --firmware {fw}" in flashed.stdout
    port = free_port(lab_address())
    provision(board, ca, settings=lab_settings(board, port), release_keys=[release_key.public_point])

    # Labelled: the boot line's security state, and a line of its own on the serial port.
    since = board.log_size()
    capture = board.capture_boot("hard")
    assert capture.boot_line["security"]["profile"] == "insecure"
    assert capture.boot_line["security"]["console"] == "locked"  # what the firmware believes
    log = board.wait_for_output('"debug_shell"', since, timeout=30)
    assert profiles.WARNING in log and last_boot_line(log)["security"]["profile"] == "insecure"

    # The lab's exploit of open-port and default-password: the device's private key over plain TCP.
    from sbd_harness.emulator.nvs_reader import read_store
    banner, login, imported, key = _shell(board.address, "admin", "from sbd import store",
                                          "store.get('sk', 32).hex()")
    assert "INSECURE TRAINING BUILD" in banner and "logged in" in login
    secret = read_store(board.flash_image().read_partition("nvs"))[("sbd", "sk")]
    assert secret.hex() in key

    # `sbd verify` fails the check of every mistake, on this one board. commands-need-a-valid-signature
    # is left out: it talks to the console, which console-locked has just broken into (the REPL).
    catalogue = _catalogue_checks()
    expected = sorted({c for m in INSECURE.mistakes.values() for c in m.checks if c in catalogue}
                      - {"commands-need-a-valid-signature"})
    for must in ("console-locked", "no-default-or-shared-secrets", "rogue-brokers-refused",
                 "invalid-commands-refused-over-mqtt", "unsigned-or-foreign-updates-refused",
                 "update-rollback-refused"):
        assert must in expected
    # Anti-rollback in a run of its own, with --destructive: a device whose security counter is still 0
    # (the unverified update above may not have committed) first gets the build as update 1.
    first = [c for c in expected if c != "update-rollback-refused"]
    checks, code = _verify(board, ca, fw, port, tmp_path / "report.json", first)
    more, code2 = _verify(board, ca, fw, port, tmp_path / "rollback.json", ["update-rollback-refused"],
                          "--destructive")
    checks.update(more)
    status = {c: checks[c]["status"] if c in checks else "not run" for c in expected}
    assert status == {c: "fail" for c in expected}, \
        json.dumps({c: {k: checks[c].get(k) for k in ("status", "message")} for c in expected if c in checks},
                   indent=1)
    assert code == code2 == 1
    assert "PASSWORD" in checks["no-default-or-shared-secrets"]["message"]
    assert "self-signed" in checks["rogue-brokers-refused"]["message"]
    assert "installed an unverified update (unknown-key" in checks["unsigned-or-foreign-updates-refused"]["message"]
    if "no-listening-ports" in checks:
        assert "[2323]" in checks["no-listening-ports"]["message"]
    assert "anti-rollback is missing" in checks["update-rollback-refused"]["message"]


def _verify(board, ca, fw: Path, port: int, report: Path, check_ids: list[str],
            *extra: str) -> tuple[dict[str, dict], int]:
    code, data = verify_report(board, ca, report, "--firmware", str(fw), *only(*check_ids), *extra,
                               port=port, timeout=1800)
    return {c["id"]: c for c in data["checks"]}, code
