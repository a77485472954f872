"""The device points to its vulnerability disclosure policy and its
support period, and the documents say what they must.

`sbd verify` passes both documentation checks on the reference firmware and
docs/; `vulnerability-disclosure-policy-published` fails against a copy of
SECURITY.md without its timelines (`--docs`), `support-period-declared`
against the `no-support-period` variant; both skip on a board that never
goes online. The reading of the documents is tested on its own first.
"""
from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
import uuid
from helpers import DOCS_CHECKS, only, verify_report
from pathlib import Path

import pytest

from sbd_harness.boards import lifecycle
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.docs_policy import DocsError, docs_url, glance, read_policy, read_support, resolve, support_document
from sbd_harness.release.mistakes import build_variant

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
VERSION_PY = (ROOT / "firmware/lib/sbd/version.py").read_text()
DOC_CHECKS = ("vulnerability-disclosure-policy-published", "support-period-declared")
TODAY = dt.date(2026, 11, 28)


def _support_until() -> str:
    return re.search(r'^SUPPORT_UNTIL = "([^"]+)"', VERSION_PY, re.M).group(1)


def _without_timelines(folder: Path) -> Path:
    """A copy of docs/ whose SECURITY.md has lost its acknowledgement and status-update rows."""
    shutil.copytree(DOCS, folder)
    policy = folder / "SECURITY.md"
    lines = policy.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("| Acknowledgement |", "| Status updates |"))]
    assert len(kept) == len(lines) - 2
    policy.write_text("".join(kept))
    return folder


# the documents ----------------------------------------------------------------------
def test_the_projects_policy_has_a_contact_and_both_timelines():
    found, problems = read_policy((DOCS / "SECURITY.md").read_text())
    assert problems == []
    assert found["acknowledgement_days"] == 5 and found["status_updates_days"] == 30
    assert "private vulnerability reporting" in found["contact"]
    assert support_document(DOCS / "SECURITY.md", found) == DOCS / "support.md"


def test_the_projects_support_period_matches_the_firmware_and_is_at_least_five_years():
    found, problems = read_support((DOCS / "support.md").read_text(), _support_until(), TODAY)
    assert problems == []
    declared = dt.date.fromisoformat(found["declared_support_until"])
    on = dt.date.fromisoformat(glance((DOCS / "support.md").read_text())["declared on"])
    assert declared >= on.replace(year=on.year + 5)  # EU CRA Art 13(8)
    assert f"until **{declared}**" in (DOCS / "SECURITY.md").read_text()  # the policy says the same date


def test_a_policy_without_its_timelines_or_contact_is_refused(tmp_path):
    found, problems = read_policy((_without_timelines(tmp_path / "d") / "SECURITY.md").read_text())
    assert problems == ["no Acknowledgement row: the timeline for it", "no Status updates row: the timeline for it"]
    _, problems = read_policy("| Contact | us |\n| Acknowledgement | promptly |\n| Status updates | 2 weeks |\n")
    assert problems == ["the contact names no e-mail address, https address or private reporting route: 'us'",
                        "the Acknowledgement row states no number of days or weeks: 'promptly'"]
    assert read_policy("| Status updates | every 2 weeks |")[0]["status_updates_days"] == 14


@pytest.mark.parametrize("contact", [
    "security@example.com", "<security contact>", "https://security.example.invalid/report",
    "psirt@vendor.example", "TODO", "fill in your e-mail address",
])
def test_a_placeholder_is_not_a_contact(contact):
    _, problems = read_policy(f"| Contact | {contact} |\n| Acknowledgement | 5 days |\n| Status updates | 30 days |\n")
    assert len(problems) == 1 and "placeholder" in problems[0], problems


@pytest.mark.parametrize("contact", ["psirt@espressif.com", "https://github.com/micropython/micropython/security",
                                     "GitHub private vulnerability reporting on this repository"])
def test_real_routes_are_contacts(contact):
    _, problems = read_policy(f"| Contact | {contact} |\n| Acknowledgement | 5 days |\n| Status updates | 30 days |\n")
    assert problems == []


def test_support_periods_that_are_past_missing_or_disagree_are_refused():
    doc = "| Item | Declaration |\n|---|---|\n| Security updates until | 2031-12-31 |\n"
    assert read_support(doc, "2031-12-31", TODAY)[1] == []
    assert read_support(doc, "2030-01-01", TODAY)[1] == [
        "the device says support_until '2030-01-01', the document 2031-12-31"]
    assert read_support(doc, "2031-12-31", dt.date(2032, 1, 1))[1] == [
        "the support period ended on 2031-12-31 (today is 2032-01-01)"]
    assert read_support(doc.replace("2031-12-31", "end of 2031"), "2031-12-31", TODAY)[1] == [
        "the support period's end is not an ISO date (YYYY-MM-DD): 'end of 2031'"]
    assert read_support(doc.replace("2031-12-31", "2031-02-30"), "2031-02-30", TODAY)[1] == [
        "the support period's end 2031-02-30 is not a date"]
    assert read_support("no table", "2031-12-31", TODAY)[1] == [
        "no 'Security updates until' row: the end date of the support period"]


def test_published_addresses_map_into_the_docs_folder_and_nowhere_else(tmp_path):
    prefix = docs_url(VERSION_PY)
    assert prefix and prefix.startswith("https://")
    assert resolve(prefix + "SECURITY.md", prefix, tmp_path) == tmp_path / "SECURITY.md"
    assert resolve(prefix + "SECURITY.md#contact", prefix, tmp_path) == tmp_path / "SECURITY.md"
    assert resolve("https://vendor.test/a/SECURITY.md", None, tmp_path) == tmp_path / "SECURITY.md"
    for url, message in [("http://x/SECURITY.md", "not an https address"),
                         ("https://elsewhere.test/SECURITY.md", "not under the firmware's DOCS_URL"),
                         (prefix + "../../etc/passwd", "not a file under the published folder"),
                         (prefix, "not a file under the published folder")]:
        with pytest.raises(DocsError, match=message):
            resolve(url, prefix, tmp_path)
    with pytest.raises(DocsError, match="not a document beside it"):
        support_document(tmp_path / "SECURITY.md", {"support_document": "../../secret.md"})


# the checks on a board --------------------------------------------------------------
def _online_board(ca: LabCA, port: int, firmware: Path | None = None) -> EmulatedBoard:
    board = EmulatedBoard(f"docs-{uuid.uuid4().hex[:8]}")
    board.start()
    lifecycle.locked(board, ca, FirmwareBundle.from_dir(firmware), broker_port=port)
    return board


def _verify(board, ca, tmp_path, port: int, *extra: str) -> tuple[int, dict[str, dict]]:
    code, data = verify_report(board, ca, tmp_path / f"report-{uuid.uuid4().hex[:6]}.json", *only(*DOCS_CHECKS),
                               *extra, port=port)
    return code, {c["id"]: c for c in data["checks"]}


@pytest.fixture(scope="module")
def reference(ca):
    port = free_port(lab_address())
    board = _online_board(ca, port)
    yield board, port
    board.remove()


def test_the_policy_check_fails_on_a_policy_without_timelines(reference, ca, tmp_path):
    board, port = reference
    code, checks = _verify(board, ca, tmp_path, port, "--docs", str(_without_timelines(tmp_path / "docs")))
    failed = checks["vulnerability-disclosure-policy-published"]
    assert failed["status"] == "fail" and "no Acknowledgement row" in failed["message"], failed
    assert checks["support-period-declared"]["status"] == "pass"  # support.md is intact
    assert code == 1


def test_the_policy_check_fails_when_the_device_points_to_a_missing_document(reference, ca, tmp_path):
    board, port = reference
    (tmp_path / "empty").mkdir()
    code, checks = _verify(board, ca, tmp_path, port, "--docs", str(tmp_path / "empty"))
    assert {c: checks[c]["status"] for c in DOC_CHECKS} == {c: "fail" for c in DOC_CHECKS}
    assert "there is no" in checks["vulnerability-disclosure-policy-published"]["message"]
    assert code == 1


def test_the_support_check_fails_on_a_device_that_does_not_state_its_support_period(ca, tmp_path):
    port = free_port(lab_address())
    board = _online_board(ca, port, build_variant("no-support-period", tmp_path / "fw"))
    try:
        code, checks = _verify(board, ca, tmp_path, port, "--firmware", str(tmp_path / "fw"))
    finally:
        board.remove()
    failed = checks["support-period-declared"]
    assert failed["status"] == "fail" and "no support_until" in failed["message"], failed
    assert checks["vulnerability-disclosure-policy-published"]["status"] == "pass"
    assert code == 1


def test_both_checks_skip_on_a_board_that_never_goes_online(flashed_board, ca, tmp_path):
    code, checks = _verify(flashed_board, ca, tmp_path, free_port(lab_address()))
    for c in DOC_CHECKS:
        assert checks[c]["status"] == "skip" and "not provisioned and locked" in checks[c]["message"], checks[c]
    assert code == 1  # a check the run was asked for and did not test fails the run (sbd verify --check)


def test_a_missing_docs_folder_is_a_clear_error(module_board, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "verify", "--board", module_board.name,
                           "--docs", str(tmp_path / "nope"), "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--docs" in proc.stderr and "no such folder" in proc.stderr
    assert not (tmp_path / "r.json").exists()
