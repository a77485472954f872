"""The conformance report (JSON, Markdown, HTML), its coverage tables, the documentation map and the SBOM.

Most tests build reports from synthetic check results (pure functions, no
board). One runs `sbd verify` on an emulated board for the files it writes.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.reports.doc_coverage import DOC_COVERAGE, heading_slug, map_problems
from sbd_harness.reports.claims import full
from sbd_harness.reports.provisions import BASELINES, CATALOGUE
from sbd_harness.reports.report import build_report, coverage, to_html, to_markdown
from sbd_harness.release.sbom import SBOMError, build_sbom, micropython_target, sbom_json, validate, write_sbom

ROOT = Path(__file__).resolve().parents[2]
EVIL = '<script>alert("x")</script> & | <img src=x onerror=1>'


def _check(cid: str, status: str, message: str = "", evidence: dict | None = None, **provisions) -> dict:
    """A check's result as the plugin records it; bare IDs here are full claims."""
    return {"id": cid, "title": f"title of {cid}", "status": status, "message": message,
            "evidence": evidence or {}, "duration_s": 0.5, "subject": "device",
            "provisions": {k: [i if isinstance(i, dict) else full(i) for i in provisions.get(k, [])]
                           for k in CATALOGUE}}


CHECKS = [
    _check("boot-ok", "pass", evidence={"boot_line": {"fw_version": "0.1.0"}},
           etsi_en_303_645=["5.3-16"], nist_ir_8259a=["1"]),
    _check("key-leak", "fail", "private key printed " + EVIL, evidence={"seen": EVIL},
           etsi_en_303_645=["5.4-1"], eu_cra=["I(2)(e)"]),
    _check("efuses", "skip", "the emulated board has no eFuses", etsi_en_303_645=["5.7-1", "5.4-1"],
           owasp_isvs=["3.1.4"]),
    _check("console", "error", "BoardError: no raw REPL", etsi_en_303_645=["5.6-4A"]),
    _check("only-skipped", "skip", "needs a provisioned board", etsi_en_303_645=["5.1-1"], uk_psti=["Sch1(1)"]),
    _check("half", "pass", etsi_en_303_645=["5.5-1"]),
    _check("half-skipped", "skip", "no broker given", etsi_en_303_645=["5.5-1"]),
]
BOARD = {"name": "lab<1>", "kind": "emulated", "serial": "/dev/pts/3", "address": "198.18.0.5"}
FIRMWARE = {"version": "0.1.0", "sha256": "ab" * 32, "files": 3}
SBOM_REF = {"path": "report.sbom.cdx.json", "format": "CycloneDX 1.6 JSON", "files": 3, "micropython": "1.26"}


@pytest.fixture(scope="module")
def report() -> dict:
    return build_report(BOARD, FIRMWARE, CHECKS, notes=["loopback " + EVIL], sbom=SBOM_REF)


def _row(report: dict, baseline: str, pid: str) -> dict:
    return next(r for r in report["coverage"][baseline]["provisions"] if r["id"] == pid)


# coverage ------------------------------------------------------------------------------------
def test_every_provision_of_every_baseline_is_in_the_coverage(report):
    assert set(report["coverage"]) == set(CATALOGUE)
    for baseline, known in CATALOGUE.items():
        cov = report["coverage"][baseline]
        assert {r["id"] for r in cov["provisions"]} == set(known)
        split = cov["automated"] + cov["documentation_only"] + cov["not_covered"]
        assert sorted(split) == sorted(known), "each provision is in exactly one of the three lists"
        assert cov["counts"]["provisions"] == len(known)


def test_a_skipped_check_never_counts_as_a_pass(report):
    only_skipped = _row(report, "etsi_en_303_645", "5.1-1")
    assert only_skipped["coverage"] == "automated" and only_skipped["result"] == "skip"
    assert _row(report, "uk_psti", "Sch1(1)")["result"] == "skip"
    assert _row(report, "etsi_en_303_645", "5.5-1")["result"] == "partial"  # one passed, one skipped
    assert _row(report, "etsi_en_303_645", "5.3-16")["result"] == "pass"
    assert _row(report, "etsi_en_303_645", "5.4-1")["result"] == "fail"  # failed beats skipped
    assert _row(report, "etsi_en_303_645", "5.6-4A")["result"] == "error"
    counts = report["coverage"]["etsi_en_303_645"]["counts"]
    assert counts["verified"] == 1  # 5.3-16 only: not 5.5-1 (partial), not 5.1-1 or 5.7-1 (skipped)
    assert counts["not_verified_on_this_board"] == 2  # 5.1-1, 5.7-1
    assert counts["failed"] == 2  # 5.4-1 (fail), 5.6-4A (error)
    assert _row(report, "etsi_en_303_645", "5.5-1")["checks"] == [
        {"id": "half", "status": "pass", "strength": "full"}, {"id": "half-skipped", "status": "skip", "strength": "full"}]


def test_documentation_covers_what_no_check_does_and_the_sbom_is_listed(report):
    policy = _row(report, "etsi_en_303_645", "5.2-1")
    assert policy["coverage"] == "documentation" and policy["result"] is None
    assert policy["docs"][0]["page"] == "docs/SECURITY.md"
    secure_boot = _row(report, "etsi_en_303_645", "5.7-1")
    assert secure_boot["coverage"] == "automated" and secure_boot["documented_limitations"], \
        "a check and the page documenting the limitation: both are listed"
    assert not secure_boot["docs"], "a page documenting a limitation is not coverage"
    for baseline, pid in (("eu_cra", "II(1)"), ("owasp_isvs", "1.2.1")):
        row = _row(report, baseline, pid)
        assert row["coverage"] == "documentation"
        assert any(d["page"] == "report.sbom.cdx.json" for d in row["docs"])
    nothing = _row(report, "etsi_en_303_645", "5.10-1")
    assert nothing["coverage"] == "none" and not nothing["checks"] and not nothing["docs"]
    assert "5.10-1" in report["coverage"]["etsi_en_303_645"]["not_covered"]


def test_ts_103_701_test_groups_and_cases_follow_the_en_303_645_ids(report):
    row = _row(report, "etsi_en_303_645", "5.3-16")
    assert row["ts_103_701"] == {"test_group": "5.3-16", "conceptual": "5.3-16-1", "functional": "5.3-16-2"}
    assert "ts_103_701" not in _row(report, "nist_ir_8259a", "1")


def test_coverage_with_no_docs_and_no_checks_covers_nothing():
    cov = coverage([], docs={})
    for baseline, known in CATALOGUE.items():
        assert cov[baseline]["not_covered"] and len(cov[baseline]["not_covered"]) == len(known)


# HTML ----------------------------------------------------------------------------------------
class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def test_html_is_self_contained(report):
    page = to_html(report)
    parsed = _parse(page)
    names = [t for t, _ in parsed.tags]
    assert "style" in names
    for forbidden in ("script", "link", "img", "iframe", "object", "embed", "base", "form"):
        assert forbidden not in names, forbidden
    for tag, attrs in parsed.tags:
        assert "src" not in attrs, (tag, attrs)
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if "href" in attrs:
            assert ":" not in attrs["href"] and not attrs["href"].startswith("//"), attrs
    lowered = page.lower()
    for needle in ("http://", "https://", "url(", "@import"):
        assert needle not in lowered, needle


def test_html_escapes_everything(report):
    page = to_html(report)
    assert EVIL not in page and "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "lab&lt;1&gt;" in page
    text = "".join(_parse(page).text)
    assert text.count(EVIL) == 2, "the evil text reads as text, in the message and in the notes"
    assert '"seen": "<script>alert(\\"x\\")</script> & | <img src=x onerror=1>"' in text  # the evidence


def test_html_shows_summary_statuses_reasons_and_evidence(report):
    page = to_html(report)
    assert page.index('class="verdict fail"') < page.index("<h2>Checks</h2>"), "the verdict comes first"
    for status in ("PASS", "FAIL", "SKIP", "ERROR"):
        assert f'class="badge {status.lower()}">{status}</span>' in page
    assert "the emulated board has no eFuses" in page and "BoardError: no raw REPL" in page
    assert "<details><summary>evidence</summary>" in page
    assert '<a href="report.sbom.cdx.json">' in page
    for check in CHECKS:
        assert f"<code>{check['id']}</code>" in page


def test_html_has_a_coverage_table_for_every_baseline(report):
    page = to_html(report)
    for baseline, title in BASELINES.items():
        assert f"<h3>{title}</h3>" in page
        for pid in CATALOGUE[baseline]:
            assert f"<td><b>{pid.replace('&', '&amp;')}</b>" in page, (baseline, pid)
    assert "NOT VERIFIED ON THIS BOARD" in page and "DOCUMENTATION ONLY" in page and "NOT COVERED" in page
    assert "group 5.3-16: functional test case 5.3-16-2" in page
    assert "group 5.2-1: input to conceptual test case 5.2-1-1" in page


def test_a_clean_run_says_pass_and_a_skip_is_not_hidden():
    clean = build_report(BOARD, FIRMWARE, [CHECKS[0]])
    assert 'class="verdict pass">PASS<' in to_html(clean)
    skipped = build_report(BOARD, FIRMWARE, [CHECKS[0], CHECKS[2]])
    assert "PASS, with checks not run on this board" in to_html(skipped)
    assert "PASS, with checks not run on this board" in to_markdown(skipped)


def test_the_reports_say_which_tier_ran():
    default = build_report(BOARD, FIRMWARE, [CHECKS[0]])
    soak = build_report(BOARD, FIRMWARE, [CHECKS[0]], tier="soak")
    assert default["tier"] == "default" and soak["tier"] == "soak"
    assert "- Tier: default: each check's shortest form" in to_markdown(default)
    assert "- Tier: soak: each check's long form" in to_markdown(soak)
    assert "<dt>Tier</dt><dd>soak: each check&#x27;s long form" in to_html(soak)
    with pytest.raises(ValueError, match="unknown tier"):
        build_report(BOARD, FIRMWARE, [CHECKS[0]], tier="quick")


# Markdown ------------------------------------------------------------------------------------
def test_markdown_has_reasons_coverage_tables_and_the_sbom(report):
    md = to_markdown(report)
    assert md.startswith("# Conformance report: lab<1>")
    assert "| `boot-ok` | PASS |" in md and "| `efuses` | SKIP |" in md
    assert "the emulated board has no eFuses" in md
    for line in md.splitlines():
        if line.startswith("| `key-leak`"):
            assert line.count(" | ") == 4, "a | in a message does not add a column"
    for title in BASELINES.values():
        assert f"### {title}" in md
    assert "| 5.1-1 | " in md and "not verified on this board" in md
    assert "| 5.2-1 | " in md and "documentation only" in md and "docs/SECURITY.md" in md
    assert "[report.sbom.cdx.json](report.sbom.cdx.json)" in md


# the documentation map -----------------------------------------------------------------------
def test_the_documentation_map_is_sound():
    assert map_problems(ROOT) == []
    pages = {page.partition("#")[0] for entries in DOC_COVERAGE.values() for refs in entries.values()
             for page, _ in refs}
    assert {"docs/SECURITY.md", "docs/support.md", "docs/ota.md"} <= pages
    for baseline, entries in DOC_COVERAGE.items():
        assert set(entries) <= set(CATALOGUE[baseline])


def test_the_map_check_finds_bad_entries():
    bad = {"etsi_en_303_645": {"5.99-1": [("docs/ota.md", "x")], "5.2-1": [("docs/nope.md", "x")],
                               "5.3-1": [("docs/ota.md#no-such-section", "x")]},
           "iso_99999": {"1": [("docs/ota.md", "x")]}}
    problems = map_problems(ROOT, bad)
    assert any("unknown provision 5.99-1" in p for p in problems)
    assert any("no page docs/nope.md" in p for p in problems)
    assert any("no section #no-such-section" in p for p in problems)
    assert any("unknown baseline iso_99999" in p for p in problems)


def test_heading_slugs_match_github():
    assert heading_slug(" Storage in NVS, and at rest on a real ESP32") == "storage-in-nvs-and-at-rest-on-a-real-esp32"
    assert heading_slug(" Key handling for a manufacturer") == "key-handling-for-a-manufacturer"
    assert heading_slug(" The `sbd verify` report") == "the-sbd-verify-report"


# the SBOM ------------------------------------------------------------------------------------
def test_the_sbom_validates_and_lists_every_file_with_its_hash(bundle, tmp_path):
    summary = write_sbom(bundle, tmp_path / "fw.cdx.json")
    text = (tmp_path / "fw.cdx.json").read_text()
    assert validate(text) == []
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    fw = doc["metadata"]["component"]
    assert fw["type"] == "firmware" and fw["name"] == "sbd-reference-esp32" and fw["version"] == bundle.version
    assert {"name": "sbd:bundle-sha256", "value": bundle.sha256} in fw["properties"]
    files = {c["name"]: c for c in doc["components"] if c["type"] == "file"}
    assert set(files) == set(bundle.files) and summary["files"] == len(bundle.files)
    for path, data in bundle.files.items():
        assert files[path]["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(data).hexdigest()}]
    app = files["/lib/sbd/app.mpy"]
    assert {"name": "sbd:source-sha256",
            "value": hashlib.sha256(bundle.sources["/lib/sbd/app.py"]).hexdigest()} in app["properties"]
    mp = next(c for c in doc["components"] if c["name"] == "micropython")
    assert micropython_target()["minimum_version"] == "1.26"
    assert {"name": "sbd:micropython:minimum-version", "value": "1.26"} in mp["properties"]
    assert {"name": "sbd:mpy:format", "value": "6"} in mp["properties"]
    # what runs under the application, with exact versions (the firmware's platform.json)
    platform = json.loads((ROOT / "firmware" / "platform.json").read_text())["components"]
    exact = {c["name"]: c["version"] for c in platform}
    listed = {c["name"]: c for c in doc["components"] if c["bom-ref"].startswith("platform:")}
    assert {n: c["version"] for n, c in listed.items()} == exact == summary["platform"]
    assert set(exact) == {"micropython", "esp-idf", "mbedtls", "lwip"}
    assert listed["mbedtls"]["purl"] == "pkg:github/mbed-tls/mbedtls@v3.6.4"
    assert {d["ref"]: set(d.get("dependsOn", [])) for d in doc["dependencies"]}["platform:micropython"] == {
        "platform:esp-idf", "platform:mbedtls", "platform:lwip"}
    deps = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    assert set(deps[fw["bom-ref"]]) == {c["bom-ref"] for c in doc["components"]} - {
        "platform:esp-idf", "platform:mbedtls", "platform:lwip"}


def test_a_broken_sbom_does_not_validate(bundle):
    doc = json.loads(sbom_json(build_sbom(bundle)))
    doc["components"][0]["hashes"][0]["alg"] = "SHA-999"
    assert any("SHA-999" in e for e in validate(json.dumps(doc)))
    del doc["specVersion"]
    assert validate(json.dumps(doc))


def test_an_update_sbom_says_which_files_the_update_carries(bundle):
    lib = sorted(p[1:] for p in bundle.files if p.startswith("/lib/"))
    doc = json.loads(sbom_json(build_sbom(bundle, "0.2.0", update={"files": lib, "security_counter": 7})))
    assert doc["metadata"]["component"]["version"] == "0.2.0"
    assert {"name": "sbd:ota:security-counter", "value": "7"} in doc["metadata"]["component"]["properties"]
    delivered = {c["name"]: next(p["value"] for p in c["properties"] if p["name"] == "sbd:delivered-by")
                 for c in doc["components"] if c["type"] == "file"}
    assert delivered["/main.py"] == delivered["/boot.py"] == "flash"
    assert {p for p, how in delivered.items() if how == "update"} == {"/" + p for p in lib}
    with pytest.raises(SBOMError, match="does not hold"):
        build_sbom(bundle, update={"files": ["lib/nope.mpy"]})
    with pytest.raises(SBOMError, match="no files"):
        build_sbom(FirmwareBundle())


def _sbd(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_ota_build_writes_a_valid_sbom_beside_the_update(tmp_path):
    env = {"SBD_STATE_DIR": str(tmp_path)}
    assert _sbd("ota", "keygen", env=env).returncode == 0
    out = tmp_path / "rel" / "0.2.0.sbdota"
    built = _sbd("ota", "build", "--counter", "2", "--version", "0.2.0", "--out", str(out), env=env)
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    sbom_path = tmp_path / "rel" / "0.2.0.sbom.cdx.json"
    assert summary["sbom"] == str(sbom_path)
    text = sbom_path.read_text()
    assert validate(text) == []
    doc = json.loads(text)
    props = {p["name"]: p["value"] for p in doc["metadata"]["component"]["properties"]}
    assert props["sbd:ota:stream-sha256"] == summary["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert doc["metadata"]["component"]["version"] == "0.2.0"
    same = _sbd("ota", "build", "--counter", "3", "--out", str(out), "--sbom", str(out), env=env)
    assert same.returncode == 2 and "different files" in same.stderr


# sbd verify ----------------------------------------------------------------------------------
def _sbd_on_a_terminal(*args: str, timeout: float = 300) -> tuple[int, str]:
    """`sbd` with its standard output on a pseudo-terminal, as a person at one runs it."""
    import pty
    import time
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sbd_harness", *args], stdout=slave,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=10), out.decode(errors="replace")


def test_verify_writes_every_format_with_skip_reasons_and_the_sbom(tmp_path):
    name = f"rep-{uuid.uuid4().hex[:8]}"
    checks = ("--check", "boot-line-identifies-firmware", "--check", "identity-certified-by-lab-ca")
    try:
        assert _sbd("board", "start", name).returncode == 0
        assert _sbd("flash", "--board", name).returncode == 0
        out = tmp_path / "out" / "report.json"
        # one check that runs on an unprovisioned board, one that must skip on it
        proc = _sbd("verify", "--board", name, "--report", str(out), *checks)
        assert out.exists(), proc.stdout + proc.stderr
        # on a terminal: each check's result as it ends, with the time
        code, shown = _sbd_on_a_terminal("verify", "--board", name, "--report", str(tmp_path / "tty.json"), *checks)
    finally:
        _sbd("board", "rm", name)
    # not a terminal (CI logs): the table, no progress lines, no pytest output
    assert "(total" not in proc.stdout and "passed" not in proc.stdout and "Traceback" not in proc.stdout
    assert "default tier" in proc.stdout
    # a selected check that skips was not tested: the run says so and fails
    assert code == 1 and proc.returncode == 1, shown
    assert "not tested: identity-certified-by-lab-ca (skip): the board is not provisioned" in proc.stdout
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert re.search(r"PASS +boot-line-identifies-firmware +[0-9.]+ s +\(total", plain), plain[-2000:]
    assert re.search(r"SKIP +identity-certified-by-lab-ca +[0-9.]+ s", plain), plain[-2000:]
    assert "Traceback" not in plain
    report = json.loads(out.read_text())
    assert report["tier"] == "default"
    status = {c["id"]: c for c in report["checks"]}
    assert status["boot-line-identifies-firmware"]["status"] == "pass"
    skipped = [c for c in report["checks"] if c["status"] == "skip"]
    assert skipped and all(c["message"] for c in skipped)

    md, page = (out.with_suffix(".md").read_text(), out.with_suffix(".html").read_text())
    junit = ET.parse(out.with_suffix(".junit.xml")).getroot()
    for c in skipped:
        assert c["message"].replace("|", "\\|") in md
        assert html.escape(c["message"], quote=True) in page
    junit_skips = [s.get("message", "") for s in junit.iter("skipped")]
    assert len(junit_skips) == len(skipped) and all(junit_skips)

    sbom = tmp_path / "out" / "report.sbom.cdx.json"
    assert validate(sbom.read_text()) == []
    assert report["sbom"]["path"] == "report.sbom.cdx.json"
    assert report["sbom"]["files"] == report["firmware"]["files"]
    assert '<a href="report.sbom.cdx.json">' in page and "(report.sbom.cdx.json)" in md
    assert [r["id"] for r in report["coverage"]["eu_cra"]["provisions"][:2]] == ["I(1)", "I(2)(a)"]
