"""An emulated board exported to labgrid: the configuration labgrid's exporter reads, and the
power endpoint that turns labgrid's power switch into a power cut of the board."""
from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from labgrid.remote.config import ResourceConfig

from sbd_harness.farm.exporter import power_server


def test_the_exporter_reads_the_board_as_a_serial_port_and_a_power_switch(module_board, tmp_path, capsys):
    out = tmp_path / "exporter.yaml"
    run = subprocess.run([sys.executable, "-m", "sbd_harness", "farm", "exporter-config", module_board.name,
                          "--power-url", "http://127.0.0.1:20409", "--exporter", "lab-1", "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"labgrid-client -p {module_board.name} add-match 'lab-1/sbd-{module_board.name}/*'" in run.stderr
    config = ResourceConfig(str(out)).data  # labgrid's own reader, Jinja template and all
    assert config == {f"sbd-{module_board.name}": {
        "serial": {"cls": "RawSerialPort", "port": module_board.port, "speed": 115200},
        "power": {"cls": "NetworkPowerPort", "model": "simplerest",
                  "host": f"http://127.0.0.1:20409/power/{module_board.name}/{{value}}", "index": 0}}}


def test_a_stopped_board_cannot_be_exported(make_board, tmp_path):
    board = make_board("stopped")
    board.stop()
    run = subprocess.run([sys.executable, "-m", "sbd_harness", "farm", "exporter-config", board.name,
                          "--power-url", "http://127.0.0.1:20409"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert f"emulated board {board.name!r} is not running: sbd board start {board.name}" in run.stderr


@pytest.fixture
def endpoint():
    server = power_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_power_off_is_a_power_cut_and_the_board_reads_on(module_board, endpoint):
    from sbd_harness.farm.exporter import EXPORTED_MARK, mark_exported
    (module_board.state.dir / EXPORTED_MARK).unlink(missing_ok=True)
    assert get(f"{endpoint}/power/{module_board.name}/0")[0] == 404  # not exported: not this switch's
    mark_exported(module_board)
    before = module_board.control({"cmd": "status"})["boots"]
    since = module_board.log_size()
    assert get(f"{endpoint}/power/{module_board.name}/0") == (200, "1")
    module_board.wait_for_output("rst:0x1 (POWERON_RESET)", since=since, timeout=20)
    assert module_board.control({"cmd": "status"})["boots"] == before + 1
    assert get(f"{endpoint}/power/{module_board.name}/1") == (200, "1")  # on: it is, nothing happens
    assert get(f"{endpoint}/power/{module_board.name}") == (200, "1")
    assert module_board.control({"cmd": "status"})["boots"] == before + 1
    assert get(f"{endpoint}/power/no-such-board/0")[0] == 404
    assert get(f"{endpoint}/elsewhere")[0] == 404
