"""The check-provision mapping an assessor signs: every ID is one the baselines reference lists, every
claim says how strongly it covers its provision, the corrections of the conformance review hold, and
the report turns strengths, applicability and the run's limitations into honest verdicts, an ICS and
an IXIT."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from sbd_harness.checks import CHECKS_DIR
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.reports import features as feature_decl
from sbd_harness.reports.claims import CLAIMS, claims_for, full, problems
from sbd_harness.reports.ics import OverridesError, ics, ixit, ics_markdown, ixit_markdown, load_overrides, write_all
from sbd_harness.reports.provenance import catalogue_sha256, is_placeholder, run_context
from sbd_harness.reports.provisions import CATALOGUE, EN_STATUS, FEATURE_PROVISIONS, en_category
from sbd_harness.reports.report import build_report, to_html, to_markdown

ROOT = Path(__file__).resolve().parents[2]
BASELINES_MD = Path("/work/shared/reference/baselines.md")


# The mapping --------------------------------------------------------------------------------------------
def _catalogue_check_ids() -> set[str]:
    """The IDs of the checks in the catalogue, read from their markers (no board needed)."""
    found = set()
    for path in CHECKS_DIR.glob("check_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "sbd_check":
                kw = {k.arg: k.value for k in node.keywords}
                found.add(ast.literal_eval(kw["id"]))
                assert set(kw) == {"id", "title"}, f"{path.name}: claims belong in reports/claims.py, not the marker"
    return found


def test_every_check_of_the_catalogue_has_its_claims_in_one_place():
    assert _catalogue_check_ids() == set(CLAIMS)


def test_every_claim_names_a_known_id_and_a_strength_and_every_partial_a_reason():
    for check_id in CLAIMS:
        entry = claims_for(check_id)
        assert entry["subject"] in ("device", "associated_service")
        assert problems(entry["provisions"]) == [], check_id
        for items in entry["provisions"].values():
            assert len({c["id"] for c in items}) == len(items), f"{check_id}: a provision claimed twice"


def test_the_claim_check_rejects_invented_ids_bad_strengths_and_unreasoned_partials():
    bad = problems({"etsi_en_303_645": [full("5.99-1"), {"id": "5.1-1", "strength": "most"},
                                        {"id": "5.4-1", "strength": "partial"}],
                    "owasp_isvs": [full("4.2.3")], "en_18031_2": [full("ACM-3")]})
    assert "etsi_en_303_645: 5.99-1" in bad
    assert any("strength 'most'" in b for b in bad)
    assert any("5.4-1: a partial claim needs a reason" in b for b in bad)
    assert "owasp_isvs: 4.2.3" in bad, "ISVS 1.0 RC's ID: the catalogue pins the 1.0 release"
    assert "en_18031_2: unknown baseline" in bad, "EN 18031-2 (personal data) is not a baseline of this product"


@pytest.mark.skipif(not BASELINES_MD.exists(), reason="the shared baselines reference is not on this machine")
def test_every_catalogue_id_appears_in_the_baselines_reference():
    text = BASELINES_MD.read_text()
    en = re.search(r"## ETSI EN 303 645.*?(?=\n## )", text, re.S).group(0)
    for pid in CATALOGUE["etsi_en_303_645"]:
        major = pid.split("-")[0] + "-"
        assert pid in en or (pid.startswith("6-") and "6-1" in en) or re.search(
            rf"{re.escape(pid[:-1])}[AB]? / .*{pid[-1]}|{re.escape(major)}\d+ \.\. ", en) or _in_range(pid, en), pid
    isvs = re.search(r"## OWASP ISVS.*?(?=\n## )", text, re.S).group(0)
    listed = set(re.findall(r"\b\d\.\d+\.\d+\b", isvs))
    # written there as ranges: 2.1.8–2.1.10, 3.1.4–3.1.5, 4.1.1–4.1.3
    ranges = {"2.1.8", "2.1.9", "2.1.10", "3.1.4", "3.1.5", "4.1.1", "4.1.2", "4.1.3"}
    for pid in CATALOGUE["owasp_isvs"]:
        assert pid in listed or pid in ranges, pid
    assert "4.2.3" not in CATALOGUE["owasp_isvs"]


def _in_range(pid: str, text: str) -> bool:
    """EN rows written as ranges or pairs: '5.6-5 .. 5.6-9', '5.3-14 / 15A / 15B', '5.11-2 / 3 / 4'."""
    clause, _, item = pid.partition("-")
    for m in re.finditer(rf"\| {re.escape(clause)}-(\d+)[AB]?((?: / [\dAB]+)+|(?: \.\. {re.escape(clause)}-(\d+)))", text):
        first = int(m.group(1))
        if m.group(3):
            if first <= int(re.match(r"\d+", item).group(0)) <= int(m.group(3)):
                return True
        else:
            tails = [t.strip() for t in m.group(2).split("/") if t.strip()]
            if item in tails or item.rstrip("AB") in [t.rstrip("AB") for t in tails] or item == str(first):
                return True
    return False


def _claimed(check: str, baseline: str) -> dict[str, str]:
    return {c["id"]: c["strength"] for c in CLAIMS[check].get(baseline, [])}


def test_the_corrections_of_the_conformance_review_hold():
    en, isvs, cra = "etsi_en_303_645", "owasp_isvs", "eu_cra"
    # the UART is a debug interface (5.6-4A), not a network interface (5.6-2); a key read from plaintext NVS
    # shows nothing about protected storage (5.4-1)
    for check in ("no-private-key-on-serial", "serial-discloses-nothing-after-lock"):
        assert "5.6-4A" in _claimed(check, en) and "5.6-2" not in _claimed(check, en)
    assert "5.4-1" not in _claimed("no-private-key-on-serial", en)
    assert "5.5-5" not in _claimed("commands-need-a-valid-signature", en)
    assert _claimed("commands-need-a-valid-signature", en)["5.13-1A"] == "partial"
    assert "5.5-5" in _claimed("invalid-commands-refused-over-mqtt", en)
    assert "5.6-7" not in _claimed("broker-confines-each-identity", en)
    assert "4.2.2" in _claimed("broker-confines-each-identity", isvs)
    assert "2.1.11" in _claimed("broker-refuses-revoked-certificates", isvs)
    assert not {"5.3-7", "5.3-10"} & set(_claimed("update-rollback-refused", en))
    assert "5.3-7" in _claimed("unsigned-or-foreign-updates-refused", en)
    assert "5.5-7" not in _claimed("rogue-brokers-refused", en)
    assert {"5.6-2", "5.8-1"} <= set(_claimed("rogue-brokers-refused", en))
    assert _claimed("rogue-brokers-refused", isvs)["4.1.5"] == "partial"
    assert "3.1.3" not in _claimed("no-listening-ports", isvs)
    assert {"5.6-2", "5.5-4"} <= set(_claimed("no-listening-ports", en))
    assert "5.1-2" not in _claimed("no-default-or-shared-secrets", en)
    assert "5.8-2" not in _claimed("telemetry-over-mutual-tls", en)
    assert "I(2)(k)" not in _claimed("hostile-broker-fuzzing-survived", cra)
    assert "3" in _claimed("factory-reset-erases-identity", "nist_ir_8259a")
    assert set(CATALOGUE["etsi_en_303_645"]) >= {"6-3A", "6-3B"} and "6-3" not in CATALOGUE["etsi_en_303_645"]
    assert "I(1)" in CATALOGUE["eu_cra"]


def test_the_lab_brokers_checks_are_about_an_associated_service():
    assert {c for c, e in CLAIMS.items() if e["subject"] == "associated_service"} == {
        "broker-requires-client-certificate", "broker-refuses-revoked-certificates",
        "broker-confines-each-identity", "broker-tls-configuration"}


def test_every_en_provision_has_a_status_and_the_counts_split_by_it():
    assert set(EN_STATUS) == set(CATALOGUE["etsi_en_303_645"])
    assert en_category("5.2-1") == "mandatory" and en_category("5.7-1") == "recommended"
    assert en_category("6-1") == "unconfirmed", "clause 6's per-provision status is not in the reference"
    for by in FEATURE_PROVISIONS.values():
        for baseline, pids in by.items():
            assert set(pids) <= set(CATALOGUE[baseline])


def test_a_bare_id_on_a_users_marker_never_verifies():
    from sbd_harness.reports.claims import normalise
    assert normalise({"etsi_en_303_645": ["5.3-16"]})["etsi_en_303_645"][0]["strength"] == "supporting"


# The feature declaration --------------------------------------------------------------------------------
def test_the_reference_firmware_declares_every_feature_as_data():
    decl = feature_decl.load(ROOT / "firmware")
    assert decl is not None and set(decl["features"]) == set(FEATURE_PROVISIONS)
    assert decl["features"]["passwords"]["present"] is False
    assert decl["features"]["debug_interfaces"]["present"] is True
    bundle = FirmwareBundle.from_dir(ROOT / "firmware")
    assert not any(p.endswith("features.json") for p in bundle.files), "a declaration, not a file for the device"


def test_a_declaration_missing_a_feature_or_a_reason_is_refused(tmp_path):
    (tmp_path / "features.json").write_text(json.dumps({"features": {"passwords": {"present": False}}}))
    with pytest.raises(feature_decl.FeaturesError) as err:
        feature_decl.load(tmp_path)
    assert "personal_data" in str(err.value) and "passwords" in str(err.value)
    assert feature_decl.load(tmp_path / "none") is None


# Verdicts from strengths, applicability and limitations ---------------------------------------------
def _result(cid: str, status: str, evidence: dict | None = None) -> dict:
    meta = claims_for(cid)
    return {"id": cid, "title": cid, "status": status, "message": "" if status != "skip" else "skipped here",
            "evidence": evidence or {}, "duration_s": 0.1, "subject": meta["subject"], "provisions": meta["provisions"]}


BOOT = {"boot_line": {"device_id": "a1b2c3d4e5f6", "model": "sbd-reference-esp32", "fw_version": "0.1.0",
                      "security": {"profile": "reference", "provisioned": True, "console": "locked"}}}
ATTESTED = {"attestation": {"device_id": "a1b2c3d4e5f6", "fw_version": "0.1.0", "slot": "factory",
                            "security_counter": 0, "file_sha256": {"/main.py": "11" * 32}},
            "changed": [], "missing": []}
ALL_PASS = [_result(c, "pass", BOOT if c == "boot-line-identifies-firmware" else
                    ATTESTED if c == "firmware-matches-build" else None) for c in CLAIMS]
BOARD = {"name": "lab1", "kind": "emulated", "network": "netns", "weakened_by_loopback": []}
FIRMWARE = {"version": "0.1.0", "sha256": "ab" * 32, "files": 3}


@pytest.fixture(scope="module")
def decl():
    return feature_decl.load(ROOT / "firmware")


@pytest.fixture(scope="module")
def context():
    return run_context(FirmwareBundle.from_dir(ROOT / "firmware", compile_lib=False), ["open-acl"],
                       features_path="firmware/features.json")


def _row(report, baseline, pid):
    return next(r for r in report["coverage"][baseline]["provisions"] if r["id"] == pid)


def test_only_full_coverage_is_verified_and_absent_features_do_not_apply(decl, context):
    report = build_report(BOARD, FIRMWARE, ALL_PASS, features=decl, context=context)
    en = "etsi_en_303_645"
    assert _row(report, en, "5.3-9")["verdict"] == "verified"          # full, passed
    assert _row(report, en, "5.5-1")["verdict"] == "partly_verified"   # partial claims only
    assert _row(report, en, "5.4-1")["verdict"] == "supporting_only"   # chip-security-fuses: supporting
    assert _row(report, en, "5.8-2")["verdict"] == "not_applicable"
    assert _row(report, en, "5.1-1")["verdict"] == "not_applicable"
    assert _row(report, en, "5.1-1")["not_applicable"]["feature"] == "passwords"
    assert _row(report, "uk_psti", "Sch1(1)")["verdict"] == "not_applicable"
    assert _row(report, en, "5.6-4A")["applicable"] and _row(report, en, "5.6-4A")["verdict"] == "partly_verified"
    # the placeholder DOCS_URL: the document provisions are inconclusive, not verified
    for baseline, pid in ((en, "5.2-1"), (en, "5.3-13"), ("uk_psti", "Sch1(2)"), ("eu_cra", "II(6)")):
        assert _row(report, baseline, pid)["verdict"] == "inconclusive", pid
    # documented limitations are not coverage
    assert _row(report, en, "5.3-1")["verdict"] == "documented_limitation"
    # the lab broker's checks never raise the device's coverage
    row = _row(report, "owasp_isvs", "4.2.2")
    assert row["associated_service"] and not row["checks"] and row["verdict"] == "not_covered"
    assert _row(report, en, "5.5-8")["verdict"] == "documentation_only"
    counts = report["coverage"][en]["counts"]
    verified = [r["id"] for r in report["coverage"][en]["provisions"] if r["verdict"] == "verified"]
    assert counts["verified"] == len(verified) and set(verified) == {"5.3-9", "5.3-10", "5.5-5", "5.9-1", "5.9-3",
                                                                    "5.11-1"}
    cats = counts["by_category"]
    assert sum(c["provisions"] for c in cats.values()) == counts["provisions"]
    assert cats["mandatory"]["verified"] == 3 and cats["recommended"]["verified"] == 3  # 5.3-9, 5.9-1, 5.9-3
    assert counts["not_applicable"] == sum(1 for r in report["coverage"][en]["provisions"] if not r["applicable"])


def test_a_failed_check_is_shown_even_where_the_feature_is_declared_absent(decl, context):
    results = [r if r["id"] != "no-default-or-shared-secrets" else _result(r["id"], "fail") for r in ALL_PASS]
    report = build_report(BOARD, FIRMWARE, results, features=decl, context=context)
    assert _row(report, "etsi_en_303_645", "5.1-1")["verdict"] == "failed"


def test_a_full_claim_with_a_skipped_companion_is_not_verified(decl, context):
    results = [r if r["id"] != "outages-lose-nothing" else _result(r["id"], "skip") for r in ALL_PASS]
    report = build_report(BOARD, FIRMWARE, results, features=decl, context=context)
    # the fuzzing check's supporting claim passed: evidence, not verification
    assert _row(report, "etsi_en_303_645", "5.9-1")["verdict"] == "supporting_only"
    assert _row(report, "etsi_en_303_645", "5.9-3")["verdict"] == "not_verified_on_this_board"


def test_provenance_and_limitations(decl, context):
    results = [r if r["id"] != "chip-security-fuses" else _result(r["id"], "skip") for r in ALL_PASS]
    report = build_report(BOARD, FIRMWARE, results, features=decl, context=context)
    p = report["provenance"]
    assert set(p) >= {"date", "harness_version", "harness_commit", "catalogue_sha256", "baselines", "environment",
                      "test_object"}
    assert p["catalogue_sha256"] == catalogue_sha256() and len(p["catalogue_sha256"]) == 64
    assert p["baselines"]["etsi_en_303_645"]["edition"].startswith("V3.1.3")
    assert p["baselines"]["owasp_isvs"]["edition"].startswith("1.0")
    assert p["environment"] == {"board": "emulated", "network": "network namespace", "weakened_by_loopback": [],
                                "broker_flaws": ["open-acl"]}
    obj = p["test_object"]
    assert obj["device_id"] == "a1b2c3d4e5f6" and obj["device_id_source"] == "attestation"
    assert obj["firmware_hashes"]["files"] == {"/main.py": "11" * 32}
    assert obj["versions"]["esp_idf"] == "not reported by the device"
    kinds = {(x["kind"], x.get("check")) for x in report["limitations"]}
    assert ("skipped check", "chip-security-fuses") in kinds and ("placeholder URL", None) in kinds
    docs = next(x for x in report["limitations"] if "DOCS_URL" in x["detail"])
    assert "5.2-1" in docs["provisions"]["etsi_en_303_645"]
    md, page = to_markdown(report), to_html(report)
    assert "## Provenance" in md and "## Limitations of this run" in md and "inconclusive" in md
    assert "Limitations of this run" in page and "NOT APPLICABLE (FEATURE ABSENT)" in page
    assert "partial" in page and "associated service" in page


def test_placeholder_addresses():
    assert is_placeholder("https://docs.example.invalid/x/") and is_placeholder("https://example.com/")
    assert is_placeholder(None) and is_placeholder("https://www.example.org/sec")
    assert not is_placeholder("https://security.vendor.eu/policy")


def test_a_real_docs_url_leaves_the_document_provisions_verified(decl, context):
    report = build_report(BOARD, FIRMWARE, ALL_PASS, features=decl,
                          context={**context, "docs_url": "https://docs.vendor.eu/esp32/"})
    assert _row(report, "etsi_en_303_645", "5.2-1")["verdict"] == "verified"


# ICS and IXIT -----------------------------------------------------------------------------------------
def test_the_ics_is_table_b1_with_support_and_5_0_1_justifications(decl, context, tmp_path):
    report = build_report(BOARD, FIRMWARE, ALL_PASS, features=decl, context=context)
    doc = ics(report)
    rows = {r["id"]: r for r in doc["provisions"]}
    assert set(rows) == set(CATALOGUE["etsi_en_303_645"])
    assert all(r["support"] in ("Y", "N", "N/A") for r in rows.values())
    assert rows["5.3-9"]["support"] == "Y" and rows["5.3-9"]["status"] == "R F"
    assert rows["5.1-1"]["support"] == "N/A" and rows["5.1-1"]["detail"].startswith("5.0-1: not applicable")
    assert rows["5.3-5"]["support"] == "N" and "5.0-1 justification needed" in rows["5.3-5"]["detail"]
    over = tmp_path / "m.json"
    over.write_text(json.dumps({"ics": {"5.3-5": {"support": "N", "detail": "updates are pushed, never polled"}},
                                "ixit": {"2-UserInfo": [{"name": "manual", "detail": "the product leaflet"}]}}))
    overrides = load_overrides(over)
    doc = ics(report, overrides)
    row = next(r for r in doc["provisions"] if r["id"] == "5.3-5")
    assert row["source"] == "manufacturer" and row["detail"] == "updates are pushed, never polled"
    assert row["harness_verdict"] == "not_covered" and "proposed_by_harness" in row
    paths = write_all(report, tmp_path / "report.json", decl, overrides)
    assert sorted(p.name for p in paths.values()) == ["report.ics.json", "report.ics.md", "report.ixit.json",
                                                      "report.ixit.md"]
    assert "| 5.3-5 |" in paths["ics_md"].read_text()
    ix = json.loads(paths["ixit_json"].read_text())
    assert ix["tables"]["2-UserInfo"]["entries"][0]["source"] == "manufacturer"


def test_bad_overrides_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ics": {"5.3-5": {"support": "maybe"}}}))
    with pytest.raises(OverridesError):
        load_overrides(bad)
    bad.write_text(json.dumps({"ixit": {"99-Nothing": []}}))
    with pytest.raises(OverridesError):
        load_overrides(bad)
    bad.write_text(json.dumps({"ics": [["5.3-5", "Y"]]}))  # a list, not an object: an error, not a traceback
    with pytest.raises(OverridesError, match="JSON objects"):
        load_overrides(bad)
    bad.write_text(json.dumps({"ics": {"5.3-55": {"support": "Y", "detail": "typo"}}}))  # never silently ignored
    with pytest.raises(OverridesError, match="no such EN 303 645 provision"):
        load_overrides(bad)


def test_the_ixit_is_filled_from_declarations_the_mud_file_and_the_device(decl, context):
    mud = {"ietf-access-control-list:acls": {"acl": [{"name": "mud-x-v4fr", "aces": {"ace": [
        {"name": "mqtt0-frdev", "matches": {"ipv4": {"protocol": 6, "destination-ipv4-network": "198.18.0.1/32"},
                                            "tcp": {"destination-port": {"operator": "eq", "port": 8883}}}}]}}]}}
    results = [r if r["id"] != "connections-match-mud" else
               _result(r["id"], "pass", {"mud_url": "https://mud.example.invalid/x.json", "mud_file": mud})
               for r in ALL_PASS]
    report = build_report(BOARD, FIRMWARE, results, features=decl, context=context)
    doc = ixit(report, decl, nvs_keys=["sk", "pk", "cert", "ca", "config", "stray"])
    t = doc["tables"]
    layout = next(e for e in t["10-SecParam"]["entries"] if e["name"] == "NVS layout on the device")
    assert layout["undeclared"] == ["stray"] and "relkeys" in layout["declared_not_present"]
    assert any("8883" in e["detail"] and "198.18.0.1/32" in e["detail"] for e in t["11-ComMech"]["entries"])
    assert any(e.get("nvs") == "sbd/sk" for e in t["10-SecParam"]["entries"])
    assert any(e["source"] == "the device's boot line" for e in t["20-SecBoot"]["entries"])
    assert {m["table"] for m in doc["missing"]} == {"2-UserInfo"}
    assert "## 10-SecParam Security parameters" in ixit_markdown(doc)
    assert "| 5.3-9 |" in ics_markdown(ics(report))


def test_the_html_page_is_laid_out_for_a_1280_pixel_window(decl, context):
    """A static guard, not a rendering test: the page's width is bounded and every table wraps its cells."""
    page = to_html(build_report(BOARD, FIRMWARE, ALL_PASS, features=decl, context=context))
    assert "max-width:1240px" in page and "box-sizing:border-box" in page
    assert "table-layout:fixed" in page and "overflow-wrap:anywhere" in page
    assert "white-space:nowrap" not in page


def test_5_0_1_is_met_only_when_every_gap_carries_its_justification(decl, context, tmp_path):
    report = build_report(BOARD, FIRMWARE, ALL_PASS, features=decl, context=context)
    rows = {r["id"]: r for r in ics(report)["provisions"]}
    assert rows["5.0-1"]["support"] == "N" and "5.3-5" in rows["5.0-1"]["detail"]
    gaps = [r["id"] for r in rows.values() if r["id"] != "5.0-1" and r["support"] == "N"]
    over = {"ics": {pid: {"support": "N", "detail": f"5.0-1: why {pid} is not met"} for pid in gaps}, "ixit": {}}
    rows = {r["id"]: r for r in ics(report, over)["provisions"]}
    assert rows["5.0-1"]["support"] == "Y"


@pytest.mark.parametrize("marker, message", [
    ("id='console-locked', title='x', etsi_en_303_645=['5.6-4A']", "declared in sbd_harness/reports/claims.py"),
    ("id='mine', title='x', etsi_en_303_645=[{'id': '5.6-4A', 'strength': 'partial'}]", "a partial claim needs a reason"),
    ("id='mine', title='x', owasp_isvs=[{'id': '4.2.3', 'strength': 'full'}]", "4.2.3"),
])
def test_the_plugin_refuses_claims_out_of_place_or_unsound(tmp_path, marker, message):
    import subprocess
    import sys
    (tmp_path / "check_bad.py").write_text(f"import pytest\n@pytest.mark.sbd_check({marker})\ndef check_x():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\npython_files = check_*.py\npython_functions = check_*\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                           "-p", "no:cacheprovider", "--collect-only"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_the_ics_never_proposes_support_the_documentation_denies(decl, context):
    """Keys in plaintext NVS (5.4-1) and no verified boot chain (5.7-1) are documented limitations: with the
    eFuse check skipped on an emulated board, the ICS proposes N, not Y."""
    results = [r if r["id"] != "chip-security-fuses" else _result(r["id"], "skip") for r in ALL_PASS]
    rows = {r["id"]: r for r in ics(build_report(BOARD, FIRMWARE, results, features=decl, context=context))["provisions"]}
    assert rows["5.4-1"]["support"] == "N" and "limitation" in rows["5.4-1"]["detail"]
    assert rows["5.7-1"]["support"] == "N"
    assert rows["5.2-1"]["support"] == "Y" and rows["5.2-1"]["detail"].startswith("unconfirmed by this run")
