"""The pytest plugin, as a user's own suite uses it: `pytest --sbd-board emulated`."""
from __future__ import annotations

import subprocess
import sys

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
