"""EN 18031-1 as a baseline: its requirement IDs (families from the shared baselines reference), the
checks' claims with the same strength rules as the other baselines, what does not apply to an end device
without passwords, and the restrictions of its Official Journal listing in the report."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sbd_harness.reports import en_18031
from sbd_harness.reports import features as feature_decl
from sbd_harness.reports.claims import CLAIMS, claims_for, full, problems
from sbd_harness.reports.provisions import BASELINES, CATALOGUE, EDITIONS
from sbd_harness.reports.report import build_report, coverage, to_html, to_markdown

ROOT = Path(__file__).resolve().parents[2]
BASELINES_MD = Path("/work/shared/reference/baselines.md")
ID_RE = re.compile(r"^(ACM|AUM|SUM|SSM|SCM|RLM|NMM|TCM|CCK|GEC|CRY)-\d+(-\d+)?$")


def test_the_catalogue_has_en_18031_1_with_its_edition_and_only_ids_of_its_families():
    assert CATALOGUE["en_18031_1"] is en_18031.REQUIREMENTS
    assert "EN 18031-1" in BASELINES["en_18031_1"] and "2025/138" in EDITIONS["en_18031_1"]
    assert all(ID_RE.match(pid) for pid in en_18031.REQUIREMENTS), "IDs of the form ACM-1, AUM-1-1"
    assert {pid.split("-")[0] for pid in en_18031.REQUIREMENTS} == set(en_18031.FAMILIES)
    # EN 18031-2 and -3's own requirements are not EN 18031-1's
    for other in ("ACM-3", "ACM-6", "AUM-1-3", "AUM-2-2", "GEC-7", "GEC-8", "LGM-1", "DLM-1", "UNM-1"):
        assert other not in en_18031.REQUIREMENTS


@pytest.mark.skipif(not BASELINES_MD.exists(), reason="the shared baselines reference is not on this machine")
def test_every_family_is_one_the_baselines_reference_names_for_en_18031_1():
    text = BASELINES_MD.read_text()
    section = re.search(r"## EN 18031-1.*?(?=\n## |\Z)", text, re.S).group(0)
    for family in en_18031.FAMILIES:
        assert re.search(rf"\b{family}\b", section), family


def test_every_en_18031_claim_reaches_a_catalogue_check_and_follows_the_strength_rules():
    assert set(en_18031.CLAIMS) <= set(CLAIMS), "an EN 18031-1 claim for a check the catalogue does not have"
    for check_id, items in en_18031.CLAIMS.items():
        entry = claims_for(check_id)
        assert entry["provisions"]["en_18031_1"] == items
        assert problems({"en_18031_1": items}) == [], check_id
        # a decision tree over the product's assets and documents decides each requirement: no check walks it
        assert all(c["strength"] != "full" for c in items), check_id
    assert problems({"en_18031_1": [full("ACM-3")]}) == ["en_18031_1: ACM-3"], "EN 18031-2's ID refused"


def _reference_features() -> dict:
    return feature_decl.load(ROOT / "firmware")


def test_network_equipment_requirements_and_password_ones_do_not_apply_to_the_reference():
    rows = {r["id"]: r for r in coverage([], features=_reference_features())["en_18031_1"]["provisions"]}
    for pid in ("NMM-1", "TCM-1"):
        assert rows[pid]["verdict"] == "not_applicable"
        assert "network equipment" in rows[pid]["not_applicable"]["justification"]
    for pid in ("AUM-5-1", "AUM-5-2"):
        assert rows[pid]["verdict"] == "not_applicable"
        assert rows[pid]["not_applicable"]["feature"] == "passwords"
    assert rows["SUM-2"]["verdict"] == "documentation_only", "ota.md, with no check run"
    assert rows["SCM-4"]["verdict"] == "not_covered"


def _check(cid: str, status: str) -> dict:
    entry = claims_for(cid)
    return {"id": cid, "title": cid, "status": status, "message": "", "evidence": {}, "duration_s": 0.1,
            "subject": entry["subject"], "provisions": entry["provisions"]}


def test_partial_claims_never_verify_a_requirement_and_a_failed_check_fails_it():
    checks = [_check("unsigned-or-foreign-updates-refused", "pass"), _check("update-rollback-refused", "pass"),
              _check("rogue-brokers-refused", "fail")]
    rows = {r["id"]: r for r in coverage(checks)["en_18031_1"]["provisions"]}
    assert rows["SUM-2"]["verdict"] == "partly_verified"
    assert {c["id"] for c in rows["SUM-2"]["checks"]} == {"unsigned-or-foreign-updates-refused",
                                                          "update-rollback-refused"}
    assert rows["SCM-2"]["verdict"] == "failed"
    assert rows["CRY-1"]["verdict"] == "failed"


def test_the_lab_brokers_claims_are_associated_service_evidence_not_the_devices():
    rows = {r["id"]: r for r in coverage([_check("broker-requires-client-certificate", "pass")])["en_18031_1"]["provisions"]}
    assert rows["AUM-2"]["checks"] == [] and rows["AUM-2"]["associated_service"][0]["status"] == "pass"
    assert rows["AUM-2"]["verdict"] == "not_covered"


def test_the_oj_restrictions_say_whether_they_bite_for_this_product():
    cov = coverage([], features=_reference_features())["en_18031_1"]
    assert cov["oj_listing"]["eli"] == "http://data.europa.eu/eli/dec_impl/2025/138/oj"
    passwords = next(r for r in cov["oj_restrictions"] if r["feature"] == "passwords")
    assert passwords["applies"] is False and "does not bite" in passwords["for_this_product"]
    assert passwords["requirements"] == ["AUM-5-1", "AUM-5-2"]
    update = next(r for r in cov["oj_restrictions"] if r["topic"] == "secure update")
    assert update["applies"] is None and "EN 18031-3" in update["restriction"]
    # a product that has passwords: the restriction applies
    with_passwords = _reference_features()
    with_passwords["features"]["passwords"] = {"present": True, "detail": "a web UI login"}
    again = coverage([], features=with_passwords)["en_18031_1"]
    assert next(r for r in again["oj_restrictions"] if r["feature"] == "passwords")["applies"] is True
    rows = {r["id"]: r for r in again["provisions"]}
    assert rows["AUM-5-1"]["applicable"] is True


def test_the_report_pages_name_the_listing_and_its_restrictions():
    report = build_report({"name": "b", "kind": "emulated"}, {"version": "0.1.0"},
                          [_check("device-keys-unique", "pass")], features=_reference_features())
    md, page = to_markdown(report), to_html(report)
    for text in (md, page):
        assert "EN 18031-1:2024 (RED Article 3(3)(d))" in text
        assert "Implementing Decision (EU) 2025/138" in text
        assert "Restriction on passwords the user may choose not to set or use" in text
        assert "it does not bite" in text
    assert "EN 18031-1 CCK-3 (partial)" in md


def test_the_reference_run_counts_that_harness_md_quotes():
    """Every catalogue check passing but the eFuse one (skipped on an emulated board), as in
    tests/checks/test_reference.py: the EN 18031-1 counts docs/harness.md gives."""
    checks = [_check(cid, "skip" if cid == "chip-security-fuses" else "pass") for cid in CLAIMS]
    cov = coverage(checks, features=_reference_features())
    n = cov["en_18031_1"]["counts"]
    assert (n["provisions"], n["verified"], n["partly_verified"], n["supporting_only"],
            n["not_verified_on_this_board"], n["not_applicable"], n["documented_limitation"],
            n["not_covered"] - n["documented_limitation"]) == (33, 0, 10, 6, 2, 4, 1, 14)
    rows = {r["id"]: r["verdict"] for r in cov["en_18031_1"]["provisions"]}
    assert rows["SSM-2"] == rows["SSM-3"] == "not_verified_on_this_board"
    assert rows["SUM-1"] == "documented_limitation", "MicroPython itself is not updated over the air (ota.md)"
    assert {r["id"]: r["verdict"] for r in cov["etsi_en_303_645"]["provisions"]}["5.2-3"] == "supporting_only"
