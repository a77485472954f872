"""The labs of docs/labs/ in their long form (`make test-soak`).

- The labs whose steps take longest run as written here, as the others do in
  tests/checks/test_lab_pages.py (tests/labsteps.py).
- Each mistake of the insecure build alone (with those it builds on), on a board of its own, under a
  full `sbd verify --destructive`: it fails exactly the checks its lab page names (and those of the
  mistakes it builds on), and no other check fails or errs. A mistake that spills into another lab's
  check, or a check no page explains, fails here.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import verify_report
from labsteps import IN_SOAK, LABS, run_lab
from sbd_harness.identity.provisioning import lab_settings, provision
from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release import profiles

INSECURE = profiles.PROFILES["insecure"]


@pytest.mark.parametrize("lab", IN_SOAK)
def test_lab_runs_as_written(lab, tmp_path):
    run_lab(lab, tmp_path / "ws")


# Skips a full run on an emulated board gives whatever the firmware: no eFuses; and the factory reset is
# the last check, after which nothing else runs.
EMULATED_SKIPS = {"chip-security-fuses"}


@pytest.mark.parametrize("mistake", list(INSECURE.mistakes))
def test_each_mistake_fails_exactly_the_checks_its_page_names(mistake, make_board, ca, release_key, tmp_path):
    chosen = [m for m in INSECURE.mistakes if m == mistake or m in INSECURE.mistakes[mistake].requires]
    expected = {c for m in chosen for c in INSECURE.mistakes[m].checks}
    for m in chosen:
        page = (LABS / f"{m}.md").read_text()
        assert all(f"`{c}`" in page for c in INSECURE.mistakes[m].checks), m
    board = make_board("lab")
    fw = tmp_path / "fw"
    flashed = subprocess.run([sys.executable, "-m", "sbd_harness", "flash", "--board", board.name, "--profile",
                              "insecure", "--mistakes", ",".join(chosen), "--build-dir", str(fw)],
                             capture_output=True, text=True, timeout=300)
    assert flashed.returncode == 0, flashed.stderr
    port = free_port(lab_address())
    provision(board, ca, settings=lab_settings(board, port), release_keys=[release_key.public_point])
    code, report = verify_report(board, ca, tmp_path / "report.json", "--firmware", str(fw), "--destructive",
                                 port=port, timeout=1800)
    status = {c["id"]: c for c in report["checks"]}
    failed = {c for c, v in status.items() if v["status"] not in ("pass", "skip")}
    skipped = {c for c, v in status.items() if v["status"] == "skip"}
    summary = json.dumps({c: {"status": v["status"], "message": v.get("message", "")[:300]}
                          for c, v in status.items() if v["status"] != "pass"}, indent=1)
    assert failed == expected and code == 1, summary
    assert all(status[c]["status"] == "fail" for c in expected), summary
    assert skipped <= EMULATED_SKIPS, summary
