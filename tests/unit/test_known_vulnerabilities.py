"""Known vulnerabilities (CRA Annex I Part I (2)(a), EN 18031-1 GEC-1): the firmware's platform with exact
versions, looked up in an OSV advisory feed, each finding with the manufacturer's VEX status; the check
`no-known-exploitable-vulnerabilities` passes on the reference (every advisory of its snapshot fixed or not
affected, each with its reason) and fails while a known vulnerability is left affected. Offline: the feeds
are files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from sbd_harness.release.vulnerabilities import (JUSTIFICATIONS, VulnerabilityDataError, _in_range, assess,
                                                 evaluate, load_feed, load_vex)
from sbd_harness.reports.report import build_report, to_html, to_markdown

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
REFRESHED = Path(__file__).parent / "data" / "advisories" / "refreshed.osv.json"
CHECK = "no-known-exploitable-vulnerabilities"


def test_the_reference_has_no_open_known_vulnerability_and_says_why_for_each():
    result = evaluate(FIRMWARE)
    feed = json.loads((FIRMWARE / "advisories.osv.json").read_text())
    assert {v["id"] for v in result["vulnerabilities"]} == {r["id"] for r in feed["vulns"]}, \
        "every advisory of the snapshot concerns the reference's platform"
    assert result["open"] == []
    status = {v["id"]: v["status"] for v in result["vulnerabilities"]}
    assert status["CVE-2025-27809"] == status["CVE-2025-47917"] == "fixed"  # fixed in 3.6.3 and 3.6.4
    assert {(v["component"], v["version"]) for v in result["vulnerabilities"]} == {("mbedtls", "3.6.4"),
                                                                                  ("esp-idf", "5.5.1")}
    assert status["CVE-2026-25532"] == "not_affected", "ESP-IDF's WPS enrollee flaw: the code is in v5.5.1"
    for v in result["vulnerabilities"]:
        if v["status"] == "not_affected":
            assert v["justification"] in JUSTIFICATIONS and len(v["detail"]) > 80, v["id"]
            assert v["source"].endswith("vex.json")
        else:
            assert v["source"] == "the version in use (3.6.4) contains the fix"


def test_the_platform_names_exact_versions_of_what_runs_under_the_application():
    comps = {c["name"]: c for c in evaluate(FIRMWARE)["components"]}
    assert {n: c["version"] for n, c in comps.items()} == {"micropython": "1.28.0", "esp-idf": "5.5.1",
                                                           "mbedtls": "3.6.4", "lwip": "2.2.0"}
    assert all(c["purl"].startswith("pkg:github/") and c["source"] for c in comps.values())


@pytest.mark.parametrize("version,events,hit", [
    ("3.6.4", [{"introduced": "3.0.0"}, {"fixed": "3.6.10"}], True),   # 3.6.4 < 3.6.10, not as text
    ("3.6.4", [{"introduced": "3.0.0"}, {"fixed": "3.6.3"}], False),
    ("3.6.4", [{"introduced": "3.6.4"}, {"fixed": "3.6.5"}], True),     # introduced is inclusive
    ("3.6.5", [{"introduced": "0"}, {"fixed": "3.6.5"}], False),        # fixed is exclusive
    ("3.6.5", [{"introduced": "0"}, {"last_affected": "3.6.5"}], True),  # last_affected is inclusive
    ("5.5.1", [{"introduced": "5.5.0"}], True),                         # no fix yet
    ("2.28.9", [{"introduced": "0"}, {"fixed": "2.28.10"}, {"introduced": "3.0.0"}, {"fixed": "3.6.3"}], True),
    ("2.28.10", [{"introduced": "0"}, {"fixed": "2.28.10"}, {"introduced": "3.0.0"}, {"fixed": "3.6.3"}], False),
])
def test_osv_ranges_compare_versions_as_release_numbers(version, events, hit):
    assert _in_range(Version(version), [{"type": "SEMVER", "events": events}], "t")[0] is hit


def test_git_ranges_name_commits_and_decide_nothing():
    assert _in_range(Version("3.6.4"), [{"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc1234"}]}],
                     "t") == (False, [])


def _feed(*records: dict) -> dict:
    return {"path": "feed", "snapshot": {}, "vulns": list(records)}


def _record(vid: str, package: dict, events: list, versions: list | None = None) -> dict:
    affected = {"package": package, "ranges": [{"type": "SEMVER", "events": events}]}
    if versions is not None:
        affected["versions"] = versions
    return {"id": vid, "affected": [affected]}


def test_advisories_match_by_purl_then_by_name_and_other_lines_of_a_component_are_left_out():
    comps = [{"name": "mbedtls", "version": "3.6.4", "purl": "pkg:github/mbed-tls/mbedtls@v3.6.4"},
             {"name": "esp-idf", "version": "5.5.1"}]
    found = assess(comps, _feed(
        _record("A", {"purl": "pkg:github/Mbed-TLS/mbedtls"}, [{"introduced": "0"}, {"fixed": "3.6.6"}]),
        _record("B", {"purl": "pkg:github/other/mbedtls"}, [{"introduced": "0"}]),          # another package
        _record("C", {"name": "esp-idf"}, [{"introduced": "6.0.0"}, {"fixed": "6.0.1"}]),   # a later line only
        _record("D", {"name": "ESP-IDF"}, [], versions=["5.5.1"]),                          # listed versions
        _record("E", {"name": "esp-idf"}, [{"introduced": "5.4.0"}, {"fixed": "5.4.4"}]),   # past the fix (OSV order)
    ), {})
    assert [(v["id"], v["component"], v["status"]) for v in found] == [("A", "mbedtls", "affected"),
                                                                      ("D", "esp-idf", "affected"),
                                                                      ("E", "esp-idf", "fixed")]


def test_an_unassessed_real_advisory_in_a_refreshed_feed_is_open():
    result = evaluate(FIRMWARE, REFRESHED)
    assert [(v["id"], v["fixed_in"]) for v in result["open"]] == [("CVE-2026-34874", ["3.6.6"])]
    assert result["open"][0]["source"].startswith("no VEX statement")


def test_the_manufacturers_vex_file_overrides_the_shipped_statements(tmp_path):
    mine = tmp_path / "vex.json"
    mine.write_text(json.dumps({"statements": [
        {"vulnerability": "CVE-2026-34877", "component": "mbedtls", "status": "affected"},
        {"vulnerability": "CVE-2026-34874", "status": "fixed", "detail": "a patched mbedTLS build"}]}))
    result = evaluate(FIRMWARE, REFRESHED, [mine])
    status = {v["id"]: (v["status"], v["source"]) for v in result["vulnerabilities"]}
    assert status["CVE-2026-34877"] == ("affected", str(mine))
    assert status["CVE-2026-34874"] == ("fixed", str(mine)), "a statement for every component ('*')"
    assert [v["id"] for v in result["open"]] == ["CVE-2026-34877"]


@pytest.mark.parametrize("statement,error", [
    ({"vulnerability": "CVE-1", "status": "not_affected", "detail": "trust me"}, "needs a justification"),
    ({"vulnerability": "CVE-1", "status": "not_affected", "justification": "vulnerable_code_not_present"},
     "needs a detail"),
    ({"vulnerability": "CVE-1", "status": "maybe"}, "status 'maybe'"),
    ({"status": "fixed"}, "needs 'vulnerability'"),
])
def test_a_vex_statement_without_its_reason_is_refused(tmp_path, statement, error):
    path = tmp_path / "vex.json"
    path.write_text(json.dumps({"statements": [statement]}))
    with pytest.raises(VulnerabilityDataError, match=error):
        load_vex([path])


def test_missing_or_malformed_inputs_are_errors_not_passes(tmp_path):
    with pytest.raises(VulnerabilityDataError, match="no platform declaration"):
        evaluate(tmp_path)
    (tmp_path / "platform.json").write_text(json.dumps({"components": [{"name": "mbedtls", "version": "3.6.x"}]}))
    with pytest.raises(VulnerabilityDataError, match="not a version"):
        evaluate(tmp_path, REFRESHED)
    bad = tmp_path / "feed.json"
    bad.write_text(json.dumps({"vulns": [{"id": "X"}]}))
    with pytest.raises(VulnerabilityDataError, match="not an OSV record"):
        load_feed(bad)


def _run_check(tmp_path: Path, *extra: str) -> dict:
    """The catalogue check as `sbd verify --check` runs it (it needs no board), in a process of its own."""
    report = tmp_path / "report.json"
    checks = ROOT / "harness" / "sbd_harness" / "checks"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "harness")}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(checks), "-c", str(checks / "pytest.ini"),
                           "--rootdir", str(checks), "-p", "no:cacheprovider", "-p", "no:labgrid", "-q",
                           "--sbd-check", CHECK, "--sbd-report", str(report), *extra],
                          capture_output=True, text=True, timeout=300, env=env)
    assert report.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(report.read_text())


def test_the_check_passes_on_the_reference_and_fails_on_an_open_advisory(tmp_path):
    good = _run_check(tmp_path)
    (check,) = good["checks"]
    assert check["id"] == CHECK and check["status"] == "pass", check.get("message")
    assert {c["id"]: c["strength"] for c in check["provisions"]["eu_cra"]} == {"I(2)(a)": "partial"}
    assert {c["id"] for c in check["provisions"]["en_18031_1"]} == {"GEC-1"}

    bad = _run_check(tmp_path, "--sbd-advisories", str(REFRESHED))
    (check,) = bad["checks"]
    assert check["status"] == "fail"
    assert "CVE-2026-34874 in mbedtls 3.6.4 (fixed in 3.6.6)" in check["message"]
    assert [v["id"] for v in check["evidence"]["open"]] == ["CVE-2026-34874"]


def test_the_report_lists_each_known_vulnerability_with_its_status_and_the_feeds_age(tmp_path):
    result = evaluate(FIRMWARE, REFRESHED)
    check = {"id": CHECK, "title": CHECK, "status": "fail", "message": "open", "evidence": result,
             "duration_s": 0.1, "subject": "device", "provisions": {}}
    report = build_report({"name": "b", "kind": "emulated"}, {"version": "0.1.0"}, [check])
    known = report["known_vulnerabilities"]
    assert known["open"] == ["CVE-2026-34874"] and len(known["vulnerabilities"]) == 10
    limit = next(x for x in report["limitations"] if x["kind"] == "advisory feed")
    assert "snapshot dated 2026-12-03" in limit["detail"] and limit["provisions"]["eu_cra"] == ["I(2)(a)"]
    md, page = to_markdown(report), to_html(report)
    assert "| CVE-2026-34874 | mbedtls 3.6.4 | AFFECTED (open) |" in md
    assert "| CVE-2025-27809 | mbedtls 3.6.4 | fixed | the version in use (3.6.4) contains the fix |" in md
    assert "vulnerable_code_not_in_execute_path: nothing on the device serializes" in md
    assert "<h2>Known vulnerabilities</h2>" in page and "AFFECTED (open)" in page


def test_the_check_fails_on_a_firmware_built_on_an_outdated_mbedtls(tmp_path):
    from sbd_harness.release.mistakes import build_variant
    fw = build_variant("outdated-mbedtls", tmp_path / "fw")
    result = evaluate(fw)
    assert sorted((v["id"], v["fixed_in"][-1]) for v in result["open"]) == [("CVE-2025-27809", "3.6.3"),
                                                                            ("CVE-2025-47917", "3.6.4")]
    (check,) = _run_check(tmp_path, "--sbd-firmware", str(fw))["checks"]
    assert check["status"] == "fail"
    assert "CVE-2025-27809 in mbedtls 3.6.2" in check["message"] and "CVE-2025-47917" in check["message"]


def test_sbd_advisories_reports_without_a_board_and_exits_1_while_one_is_open():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "harness")}
    ok = subprocess.run([sys.executable, "-m", "sbd_harness", "advisories"], capture_output=True, text=True,
                        timeout=120, env=env)
    assert ok.returncode == 0 and "open: none" in ok.stdout, ok.stderr
    assert "CVE-2026-34877     mbedtls 3.6.4    not_affected  vulnerable_code_not_in_execute_path" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "sbd_harness", "advisories", "--advisories", str(REFRESHED)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 1 and "open: CVE-2026-34874" in bad.stdout, bad.stderr


def _sbd(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "harness")}
    return subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_sbd_verify_writes_the_findings_and_the_platform_into_every_report(tmp_path):
    """As a manufacturer runs it: `sbd verify --check` on a board (the check itself does not touch it), the
    reference's snapshot, then a refreshed feed with an advisory no statement covers."""
    import uuid
    name = f"vuln-{uuid.uuid4().hex[:8]}"
    try:
        assert _sbd("board", "start", name).returncode == 0
        good = _sbd("verify", "--board", name, "--check", CHECK, "--report", str(tmp_path / "good" / "report.json"))
        bad = _sbd("verify", "--board", name, "--check", CHECK, "--report", str(tmp_path / "bad" / "report.json"),
                   "--advisories", str(REFRESHED))
    finally:
        _sbd("board", "rm", name)
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    assert bad.returncode == 1 and "CVE-2026-34874 in mbedtls 3.6.4" in bad.stdout, bad.stdout[-2000:]
    report = json.loads((tmp_path / "good" / "report.json").read_text())
    assert report["known_vulnerabilities"]["open"] == [] and len(report["known_vulnerabilities"]["vulnerabilities"]) == 9
    assert report["sbom"]["platform"] == {"micropython": "1.28.0", "esp-idf": "5.5.1", "mbedtls": "3.6.4",
                                          "lwip": "2.2.0"}
    assert report["provenance"]["test_object"]["versions"]["mbedtls"].startswith("3.6.4 (the build's platform")
    assert any(x["kind"] == "advisory feed" for x in report["limitations"])
    md = (tmp_path / "bad" / "report.md").read_text()
    page = (tmp_path / "bad" / "report.html").read_text()
    assert "| CVE-2026-34874 | mbedtls 3.6.4 | AFFECTED (open) |" in md and "AFFECTED (open)" in page
    bom = json.loads((tmp_path / "bad" / "report.sbom.cdx.json").read_text())
    assert {c["name"]: c["version"] for c in bom["components"] if c["bom-ref"].startswith("platform:")} == \
        report["sbom"]["platform"]
