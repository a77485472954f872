"""The pytest plugin, as a user's own suite uses it: `pytest --sbd-board emulated`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

USER_SUITE = '''
def test_my_device_boots(sbd_board, sbd_boot):
    assert sbd_boot.boot_line["model"] == "sbd-reference-esp32"
    assert sbd_board.exec("print(6 * 7)").strip() == "42"
'''


def test_a_users_suite_gets_a_fresh_flashed_board_and_cleans_up(tmp_path):
    (tmp_path / "test_mine.py").write_text(USER_SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    before = subprocess.run([sys.executable, "-m", "sbd_harness", "board", "list", "--json"],
                            capture_output=True, text=True).stdout
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                           "--sbd-board", "emulated", "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    after = subprocess.run([sys.executable, "-m", "sbd_harness", "board", "list", "--json"],
                           capture_output=True, text=True).stdout
    assert after == before, "the plugin removes the board it started"


def test_a_real_board_type_without_a_port_is_a_usage_error(tmp_path):
    (tmp_path / "test_mine.py").write_text(USER_SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                           "--sbd-board", "esp32", "-q", "-p", "no:cacheprovider"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "needs --sbd-port" in proc.stdout + proc.stderr


def _check_file(name: str, check_id: str) -> str:
    return f'''import pytest

@pytest.mark.sbd_check(id="{check_id}", title="{name}", etsi_en_303_645=["5.7-1"])
def test_{name}(sbd_board, sbd_boot, sbd_evidence):
    sbd_evidence["board"] = sbd_board.name
    assert sbd_boot.boot_line["model"] == "sbd-reference-esp32"
'''


def test_two_xdist_workers_get_a_board_each_and_one_merged_report(tmp_path):
    """`pytest -n 2` with the plugin: each worker starts a fresh emulated board of its own, and the
    controller writes one report holding every worker's checks (the workers write none)."""
    (tmp_path / "test_one.py").write_text(_check_file("one", "product-one"))
    (tmp_path / "test_two.py").write_text(_check_file("two", "product-two"))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                           "-n", "2", "--dist", "loadfile", "--sbd-board", "emulated", "--sbd-report", str(report),
                           "--junitxml", str(tmp_path / "junit.xml"), "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    body = json.loads(report.read_text())
    checks = {c["id"]: c for c in body["checks"]}
    assert set(checks) == {"product-one", "product-two"} and all(c["status"] == "pass" for c in checks.values())
    boards = {c["evidence"]["board"] for c in checks.values()}
    assert len(boards) == 2, boards  # a board per worker
    assert body["board"].get("name") in boards
    assert any("one per pytest-xdist worker" in n for n in body.get("notes", [])), body.get("notes")
    assert "product-one" in (tmp_path / "junit.xml").read_text()


def test_one_named_board_for_two_xdist_workers_is_a_usage_error(tmp_path):
    (tmp_path / "test_one.py").write_text(_check_file("one", "product-one"))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
                           "-n", "2", "--sbd-board-name", "somebody", "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "one board cannot serve 2 pytest-xdist workers" in proc.stdout + proc.stderr


PRODUCT_ONLINE = '''
def test_my_device_reports_its_heap(sbd_online):
    assert sbd_online.birth["model"] == "sbd-reference-esp32"
    reading = sbd_online.telemetry()
    assert reading["data"]["heap_free"] > 0
'''


def test_a_products_test_reads_the_devices_birth_and_telemetry(tmp_path):
    """The documented fixture `sbd_online`: the plugin's fresh board provisioned with the given lab
    CA, online at the lab broker, its birth message and its next telemetry reading."""
    from sbd_harness.identity.pki import LabCA
    ca = LabCA(tmp_path / "pki")
    ca.init()
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_product.py").write_text(PRODUCT_ONLINE)
    (suite / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-c", str(suite / "pytest.ini"),
                           "--sbd-board", "emulated", "--sbd-pki", str(ca.dir), "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


EMBEDDED_PYTHON = Path(__file__).resolve().parents[2] / ".venv" / "tools" / "embedded" / "bin" / "python"
BOTH_PLUGINS = '''
def test_with_both_plugins(test_case_name, dut, sbd_board, sbd_boot):
    assert test_case_name == "test_with_both_plugins"   # pytest-embedded's fixtures
    dut.write("ping")
    assert sbd_boot.boot_line["model"] == "sbd-reference-esp32"   # the harness's
'''


def test_the_plugin_loads_beside_pytest_embedded(tmp_path):
    """An ESP-IDF team's environment: Espressif's pytest-embedded installed with the harness
    (make setup builds it, resolving the harness's version ranges against pytest-embedded's).
    Both plugins register their options (no clash over --port), and one suite uses the fixtures of both."""
    assert EMBEDDED_PYTHON.exists(), "make setup builds .venv/tools/embedded"
    (tmp_path / "test_both.py").write_text(BOTH_PLUGINS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    base = [str(EMBEDDED_PYTHON), "-m", "pytest", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), "-p", "no:cacheprovider"]
    helped = subprocess.run(base + ["--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "--sbd-port" in helped.stdout and "--port" in helped.stdout and "embedded" in helped.stdout
    proc = subprocess.run(base + ["-q", "--sbd-board", "emulated"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
