"""Which checks `sbd verify` counts as not tested: the lines behind its exit code for a selection
and for the CI skip policy (--allowed-skips)."""
from __future__ import annotations

import argparse

from sbd_harness.cli.verify import _failed, _not_tested

REPORT = {"checks": [
    {"id": "chip-security-fuses", "status": "skip", "message": "hardware only"},
    {"id": "console-locked", "status": "pass", "message": ""},
    {"id": "telemetry-over-mutual-tls", "status": "skip", "message": "no lab CA"},
    {"id": "outages-lose-nothing", "status": "error", "message": "broker would not start"},
]}


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"check": None, "k": None, "allowed_skips": None, **kw})


def test_a_full_run_without_a_policy_reports_skips_but_does_not_fail_on_them():
    assert _not_tested(REPORT, args()) == []  # errors fail the run through the summary


def test_the_skip_policy_fails_every_skip_not_listed():
    lines = _not_tested(REPORT, args(allowed_skips="chip-security-fuses"))
    assert lines == ["not tested: telemetry-over-mutual-tls (skip): no lab CA"]
    assert len(_not_tested(REPORT, args(allowed_skips=""))) == 2


def test_a_selection_counts_its_skips_and_errors_as_not_tested():
    lines = _not_tested(REPORT, args(check=["chip-security-fuses", "outages-lose-nothing"]))
    assert [line.split(" (")[0] for line in lines] == ["not tested: chip-security-fuses",
                                                       "not tested: telemetry-over-mutual-tls",
                                                       "not tested: outages-lose-nothing"]


def test_an_accepted_failure_stays_a_failure_but_only_the_others_fail_the_run():
    report = {"checks": REPORT["checks"] + [
        {"id": "keys-at-rest-protected", "status": "fail", "message": "plaintext NVS"},
        {"id": "console-locked", "status": "fail", "message": "REPL open"}]}
    failing, known = _failed(report, args(accepted_failures="keys-at-rest-protected"))
    assert failing == ["console-locked: REPL open"] and known == ["keys-at-rest-protected: plaintext NVS"]
    failing, known = _failed(report, args())
    assert len(failing) == 2 and known == []
