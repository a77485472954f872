"""A class on one machine: `sbd board start --count` and `sbd class status` on real boards."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from sbd_harness.boards import lifecycle
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.device.contract import NET_SENT
from sbd_harness.identity.pki import LabCA
from sbd_harness.identity.provisioning import lab_settings
from sbd_harness.lab.broker import Broker


def sbd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True, timeout=180)


def status(pattern: str) -> dict[str, dict]:
    proc = sbd("class", "status", pattern, "--json")
    assert proc.returncode == 0, proc.stderr
    return {v["name"]: v for v in json.loads(proc.stdout)}


@pytest.fixture
def prefix():
    name = f"c{uuid.uuid4().hex[:6]}"
    yield name
    for board in EmulatedBoard.all():
        if board.name.startswith(name + "-"):
            board.remove()


def test_count_starts_distinct_boards_and_the_class_view_tells_running_from_stopped(prefix):
    proc = sbd("board", "start", prefix, "--count", "3", "--jobs", "3")
    assert proc.returncode == 0, proc.stderr
    boards = json.loads(proc.stdout)
    assert [b["name"] for b in boards] == [f"{prefix}-{i}" for i in (1, 2, 3)]
    assert all(b["running"] for b in boards)
    for key in ("serial", "unique_id", "broker_port", "flash", "address"):
        values = [b[key] for b in boards]
        assert len(set(values)) == 3 or key == "address" and set(values) == {"127.0.0.1"}, (key, values)
    assert sorted(line.split(":")[0] for line in proc.stderr.splitlines() if ": running, /dev/pts/" in line) == [
        b["name"] for b in boards], proc.stderr
    EmulatedBoard(f"{prefix}-2").stop()
    views = status(f"{prefix}-*")
    assert {n: v["state"] for n, v in views.items()} == {
        f"{prefix}-1": "running", f"{prefix}-2": "stopped", f"{prefix}-3": "running"}
    assert not any(v["provisioned"] or v["locked"] or v["online"] or v["last_telemetry"] for v in views.values())
    table = sbd("class", "status", f"{prefix}-*")
    assert table.returncode == 0 and "3 boards: 2 running, 0 online, 1 stopped, 0 failed" in table.stdout


def test_bad_counts_and_names_are_refused_before_any_board_starts(prefix, capsys):
    from sbd_harness.cli import main
    for args in ([prefix, "--count", "0"], [prefix, "--count", "129"], [prefix, "x", "--count", "2"],
                 [prefix, "--count", "2", "--jobs", "0"], [f"{prefix}-ok", "Bad!"], [f"{prefix}-a", f"{prefix}-a"],
                 ["x" * 30, "--count", "100"]):
        assert main(["board", "start", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("sbd: error: ") and "Traceback" not in err, (args, err)
    assert not [b for b in EmulatedBoard.all() if b.name.startswith(prefix) or b.name.startswith("x")]
    assert main(["class", "status", f"{prefix}-*"]) == 2  # a pattern that matches nothing says so
    assert "no emulated board matches" in capsys.readouterr().err


def test_the_class_view_shows_a_provisioned_board_online_with_its_telemetry(make_board, tmp_path):
    ca = LabCA(tmp_path / "pki")
    ca.init()
    with Broker(ca) as broker:
        board = make_board("cv")
        lifecycle.flashed(board)
        view = status(board.name)[board.name]
        assert (view["state"], view["provisioned"], view["locked"], view["online"]) == ("running", False, False, False)
        lifecycle.provisioned(board, ca, settings=dict(lab_settings(board, broker.port), telemetry_s=1))
        board.wait_for_output(NET_SENT, since=0, timeout=60)
        view = status(board.name)[board.name]
        assert (view["provisioned"], view["locked"], view["online"]) == (True, True, True)
        assert isinstance(view["last_telemetry"]["seq"], int) and view["online_since"] <= view["last_telemetry"]["time"]
    board.reset("power-cut")  # boots again with no broker: no longer online, still provisioned and locked
    view = status(board.name)[board.name]
    assert (view["provisioned"], view["locked"], view["online"]) == (True, True, False)
