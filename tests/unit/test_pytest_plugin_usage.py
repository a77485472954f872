"""The pytest plugin's usage errors and CI policy, as a product team's own suite meets them:
a clear message and a failing exit code, never a traceback or a silently dropped claim."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


def run_suite(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_product.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                           "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


CHECK = '''import pytest

@pytest.mark.sbd_check({marker})
def test_it():
    {body}
'''


@pytest.mark.parametrize("marker, message", [
    ('id="sensor-range-checked"', "needs title"),
    ('title="Sensor range checked"', "needs id"),
    ('id="x", title="y", etsi_en_303_645=["5.13-1"], nist_ir_8259=["2"]',
     "no keyword 'nist_ir_8259' (did you mean nist_ir_8259a?)"),
    ('id="x", title="y", etsi_en_303_645="5.13-1"', "takes a list of provision IDs"),
    ('"x", "y"', "keywords only"),
])
def test_a_malformed_check_marker_is_a_usage_error(tmp_path, marker, message):
    proc = run_suite(tmp_path, CHECK.format(marker=marker, body="pass"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert message in out and "Traceback" not in out, out


def test_a_report_into_a_missing_folder_is_refused_before_the_run(tmp_path):
    proc = run_suite(tmp_path, CHECK.format(marker='id="x", title="y"', body="pass"),
                     "--sbd-markdown", str(tmp_path / "no-such-folder" / "report.md"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "no-such-folder" in out and "does not exist" in out and "Traceback" not in out, out


SKIPPING = '''import pytest

@pytest.mark.sbd_check(id="needs-efuses", title="eFuses", etsi_en_303_645=["5.4-1"])
def test_fuses():
    pytest.skip("hardware only")

@pytest.mark.sbd_check(id="boots", title="Boots", etsi_en_303_645=["5.7-1"])
def test_boots():
    pass
'''


def test_a_skip_the_ci_policy_does_not_allow_fails_the_run(tmp_path):
    strict = run_suite(tmp_path, SKIPPING, "--sbd-allowed-skips", "")
    assert strict.returncode == pytest.ExitCode.TESTS_FAILED, strict.stdout
    assert "not tested, and not allowed to skip: needs-efuses: hardware only" in strict.stdout
    allowed = run_suite(tmp_path, SKIPPING, "--sbd-allowed-skips", "needs-efuses")
    assert allowed.returncode == 0, allowed.stdout
    no_policy = run_suite(tmp_path, SKIPPING)
    assert no_policy.returncode == 0, no_policy.stdout
    typo = run_suite(tmp_path, SKIPPING, "--sbd-allowed-skips", "needs-efuse")
    assert typo.returncode == pytest.ExitCode.USAGE_ERROR and "names no check: needs-efuse" in typo.stdout + typo.stderr


def test_junit_test_cases_are_named_by_check_id(tmp_path):
    junit = tmp_path / "junit.xml"
    proc = run_suite(tmp_path, SKIPPING, "--junitxml", str(junit), "-o", "junit_family=xunit2")
    assert proc.returncode == 0, proc.stdout
    cases = {c.get("name"): c for c in ET.parse(junit).iter("testcase")}
    assert set(cases) == {"needs-efuses", "boots"}, list(cases)
    props = {p.get("name"): p.get("value") for p in cases["boots"].iter("property")}
    assert props["function"] == "test_boots" and props["check_id"] == "boots"
    assert "5.7-1" in props["provisions"]
