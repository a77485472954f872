"""A board farm on labgrid, end to end on this machine (loopback only): a coordinator, an exporter
with two emulated boards (their PTYs through ser2net, their power through `sbd farm power`), and
`sbd verify --place` on each from clients; one place held by another client while a verify waits
for it; a user's suite through the plugin's --sbd-place; a verify stopped by SIGTERM (a cancelled CI
job) releases its place."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from farm_lab import Farm  # noqa: E402

CHECKS = ["--check", "boot-line-identifies-firmware", "--check", "firmware-matches-build"]


def verify(farm: Farm, place: str, out: Path, *extra: str, user: str) -> tuple[subprocess.Popen, Path]:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "verify.log"
    proc = subprocess.Popen([sys.executable, "-m", "sbd_harness", "verify", "--place", place, *extra,
                             "--report", str(out / "report.json")],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(farm.env, LG_USERNAME=user))
    return proc, log


def wait_for(what, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message()
        time.sleep(0.2)


def passed(out: Path) -> list[str]:
    report = json.loads((out / "report.json").read_text())
    return sorted(c["id"] for c in report["checks"] if c["status"] == "pass")


def test_verify_through_labgrid_places_with_one_place_held_by_another_client(make_board, tmp_path):
    first, second = make_board("farm"), make_board("farm")
    with Farm(tmp_path / "farm") as farm:
        farm.export([first, second])
        farm.client("-p", first.name, "acquire", user="ci-holder")  # another pipeline has the first board
        waiting, waiting_log = verify(farm, first.name, tmp_path / "first", "--flash", *CHECKS, user="ci-a")
        running, running_log = verify(farm, second.name, tmp_path / "second", "--flash", *CHECKS, user="ci-b")

        wait_for(lambda: "waiting for it" in waiting_log.read_text(), 60, waiting_log.read_text)
        assert f"place {first.name} is acquired by " in waiting_log.read_text()
        assert running.wait(240) == 0, running_log.read_text()
        assert passed(tmp_path / "second") == ["boot-line-identifies-firmware", "firmware-matches-build"]
        assert farm.holder(second.name) is None  # released at the end
        # All that time the first verify waited, and the holder kept the place.
        assert waiting.poll() is None, waiting_log.read_text()
        assert farm.holder(first.name).endswith("/ci-holder")

        farm.client("-p", first.name, "release", user="ci-holder")
        assert waiting.wait(240) == 0, waiting_log.read_text()
        assert passed(tmp_path / "first") == ["boot-line-identifies-firmware", "firmware-matches-build"]
        assert farm.holder(first.name) is None
        # The boot the checks captured came through the place's power switch (the exporter's ser2net
        # passes no reset line to a PTY): each board shows power-on resets after its flashing.
        for board in (first, second):
            assert board.serial_log().count("rst:0x1 (POWERON_RESET)") >= 2

        # A user's own suite through the plugin, with labgrid's own pytest plugin loaded beside it:
        # the place acquired for the session, a hard reset through its power switch, released at the end.
        suite = tmp_path / "suite"
        suite.mkdir()
        (suite / "test_at_place.py").write_text(
            "from sbd_harness.boards.base import PowerControl, has\n"
            "def test_the_board_at_the_place(sbd_board, sbd_boot):\n"
            f"    assert sbd_board.describe()['place'] == {second.name!r}\n"
            "    assert has(sbd_board, PowerControl)\n"
            "    assert sbd_boot.boot_line is not None, sbd_boot.transcript\n"
            "def test_beside_labgrids_own_plugin(pytestconfig):\n"
            "    assert pytestconfig.pluginmanager.has_plugin('labgrid')\n")
        plugin = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite),
                                 "--sbd-place", second.name, "--sbd-board", "esp32", "--sbd-no-flash"],
                                capture_output=True, text=True, timeout=240, cwd=suite,
                                env={**{k: v for k, v in farm.env.items() if k != "PYTEST_ADDOPTS"},
                                     "LG_USERNAME": "ci-suite"})
        assert plugin.returncode == 0, plugin.stdout + plugin.stderr
        assert farm.holder(second.name) is None

        # A cancelled job (SIGTERM) gives its place back.
        cancelled, cancelled_log = verify(farm, second.name, tmp_path / "cancelled", *CHECKS, user="ci-c")
        wait_for(lambda: farm.holder(second.name) is not None, 60, cancelled_log.read_text)
        cancelled.send_signal(signal.SIGTERM)
        cancelled.wait(60)
        assert farm.holder(second.name) is None, cancelled_log.read_text()
