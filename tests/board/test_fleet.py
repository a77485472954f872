"""`sbd verify` over several boards: side by side, one combined report naming which check failed on
which board, JUnit XML with a suite per board; bad fleet descriptions get a clear error."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET

import pytest

CHECKS = ("--check", "boot-line-identifies-firmware", "--check", "device-id-from-hardware")


def sbd(*args: str, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_a_fleet_is_verified_side_by_side_with_one_combined_report(make_board, tmp_path):
    tag = uuid.uuid4().hex[:6]
    good = [make_board(f"flt{tag}") for _ in range(2)]
    blank = make_board(f"flt{tag}")  # never flashed: nothing boots, its boot line check fails
    for board in good:
        assert sbd("flash", "--board", board.name).returncode == 0
    proc = sbd("verify", "--board", f"flt{tag}-*", *CHECKS, "--report", str(tmp_path / "out" / "x.json"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fleet = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert {b["name"] for b in fleet["boards"]} == {b.name for b in good + [blank]}
    per_board = fleet["checks"]["boot-line-identifies-firmware"]
    assert all(per_board[b.name] == "pass" for b in good), per_board
    assert fleet["failing"]["boot-line-identifies-firmware"] == [blank.name], fleet["failing"]
    suites = ET.parse(tmp_path / "out" / "fleet.junit.xml").getroot().findall("testsuite")
    assert sorted(s.get("name") for s in suites) == sorted(b.name for b in good + [blank])
    for board in good + [blank]:  # each board's own reports, beside the fleet's
        assert (tmp_path / "out" / board.name / "report.json").exists()
    assert f"boot-line-identifies-firmware | " in (tmp_path / "out" / "fleet.md").read_text()


@pytest.mark.parametrize("lines, message", [
    ("", "no boards in it"),
    ("lab1 lab2\n", "an emulated board is one name"),
    ("/dev/ttyUSB0 esp32 1.2.3.4:8883 extra\n", "expected PORT [CHIP] [BROKER]"),
    ("lab1\nlab1\n", "a board is named twice: lab1"),
])
def test_a_bad_boards_file_is_refused_with_its_line(tmp_path, lines, message):
    path = tmp_path / "boards.txt"
    path.write_text(lines)
    proc = sbd("verify", "--boards", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_pattern_that_matches_no_board_is_refused(tmp_path):
    proc = sbd("verify", "--board", "nothing-like-this-*", cwd=tmp_path)
    assert proc.returncode == 2 and "matches no running emulated board" in proc.stderr, proc.stderr
