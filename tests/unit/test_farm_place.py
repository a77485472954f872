"""`sbd verify --place` given a place it cannot use: one line saying why, exit 2, no traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from farm_lab import Farm, free_port  # noqa: E402

SBD = [sys.executable, "-m", "sbd_harness"]


def sbd(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SBD, *args], capture_output=True, text=True, timeout=120, env=env)


def assert_usage_error(run: subprocess.CompletedProcess, words: str) -> None:
    assert run.returncode == 2, run.stdout + run.stderr
    assert words in run.stderr, run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_no_coordinator_is_named_with_how_to_start_one(monkeypatch):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("LG_COORDINATOR", address)
    run = sbd("verify", "--place", "bench-1", "--check", "boot-line-identifies-firmware")
    assert_usage_error(run, f"no labgrid coordinator at {address} (LG_COORDINATOR)")
    assert "labgrid-coordinator --listen" in run.stderr


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with Farm(tmp_path_factory.mktemp("farm")) as farm:
        farm.client("-p", "bench-1", "create")
        farm.client("-p", "bench-2", "create")
        farm.client("-p", "bench-2", "add-match", "nowhere/esp32-2/*")  # no exporter has it
        yield farm


def test_an_unknown_place_is_named_with_the_places_there(farm):
    run = sbd("verify", "--place", "bench-9", "--check", "boot-line-identifies-firmware", env=farm.env)
    assert_usage_error(run, f"no place 'bench-9' at the coordinator {farm.coordinator}; its places: bench-1, bench-2")


def test_a_place_held_by_another_client_past_the_wait_is_an_error_and_stays_theirs(farm):
    farm.client("-p", "bench-1", "acquire", "--allow-unmatched", user="ci-other")
    try:
        run = sbd("verify", "--place", "bench-1", "--place-wait", "1", "--check", "boot-line-identifies-firmware",
                  env=farm.env)
        assert_usage_error(run, "place bench-1 is acquired by")
        assert "/ci-other; waited 1 s (--place-wait)" in run.stderr
        assert "waiting for it" in run.stderr
        assert farm.holder("bench-1").endswith("/ci-other")
    finally:
        farm.client("-p", "bench-1", "release", user="ci-other")


def test_a_place_whose_resources_no_exporter_has_is_refused_at_once(farm):
    run = sbd("verify", "--place", "bench-2", "--check", "boot-line-identifies-firmware", env=farm.env)
    assert_usage_error(run, "cannot acquire place bench-2: ")
    assert "nowhere/esp32-2/*" in run.stderr and "waiting" not in run.stderr
    assert farm.holder("bench-2") is None


def test_a_place_and_a_board_together_are_refused(farm):
    run = sbd("verify", "--place", "bench-1", "--board", "lab1", env=farm.env)
    assert_usage_error(run, "--place names the board to verify: leave out --board, --port and --boards")


def test_the_exporter_configuration_wants_a_power_url_it_can_use():
    run = sbd("farm", "exporter-config", "lab1", "--power-url", "http://127.0.0.1:1")
    assert_usage_error(run, "no emulated board named 'lab1'")
    run = sbd("farm", "power", "--listen", "nowhere")
    assert_usage_error(run, "--listen 'nowhere': give HOST:PORT")
