"""The demo accepts a failing reference only when each failure is a documented gap its check names
(`known_gaps` in the evidence): any other failure, or an error, still fails the demo."""
from __future__ import annotations

import json

import pytest
from rich.console import Console

from sbd_harness.tools import demo


def _report(tmp_path, monkeypatch, *checks: dict) -> Console:
    monkeypatch.chdir(tmp_path)
    (tmp_path / demo.REPORTS).mkdir(parents=True)
    (tmp_path / demo.REPORTS / "report.json").write_text(json.dumps({"checks": list(checks)}))
    return Console(file=open(tmp_path / "out.txt", "w"))


GAP = {"id": "rogue-brokers-refused", "status": "fail",
       "evidence": {"known_gaps": {"revoked": "the device does not check revocation"}}}


def test_a_failure_for_a_named_gap_is_accepted_and_said(tmp_path, monkeypatch):
    console = _report(tmp_path, monkeypatch, GAP, {"id": "console-locked", "status": "pass", "evidence": {}})
    assert demo.gaps_only(console)
    console.file.close()
    assert "fails rogue-brokers-refused for a documented gap (revoked)" in (tmp_path / "out.txt").read_text()


@pytest.mark.parametrize("other", [
    {"id": "console-locked", "status": "fail", "evidence": {}},
    {"id": "console-locked", "status": "error", "evidence": {"known_gaps": {"x": "y"}}},
    {"id": "rogue-brokers-refused", "status": "fail", "evidence": {"known_gaps": {}}},
])
def test_any_other_failure_is_not(tmp_path, monkeypatch, other):
    assert not demo.gaps_only(_report(tmp_path, monkeypatch, GAP, other))
