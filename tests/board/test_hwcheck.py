"""`sbd hwcheck`, the script for people with a real ESP32, run against an
emulated board through the serial-port path (SerialBoard over its PTY), as a
real board on USB would be measured."""
from __future__ import annotations

import json

from sbd_harness.cli import main


def test_hwcheck_measures_an_unlocked_board_through_its_serial_port(flashed_board, bundle, capsys):
    address = flashed_board.address or "127.0.0.1"  # not provisioned: it has not joined Wi-Fi
    code = main(["hwcheck", "--port", flashed_board.port, "--address", address, "--round-trips", "20",
                 "--storm-resets", "1", "--p256-runs", "1", "--tcp-ports", "1-1024"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["console"] == "uart-bridge" and out["console_locked"] is False
    boot = out["boot"]
    assert boot["boot_line"]["fw_version"] == bundle.version and boot["boot_s"] > 0 and boot["rst_line_seen"]
    assert out["p256_verify_ms"] > 0
    heap = out["heap"]
    assert 0 < heap["idle_free_bytes"] and heap["connected_free_bytes"] is None  # not provisioned: no broker
    assert "not configured" in heap["connected_note"]
    assert out["round_trips"] == {"sent": 20, "answered": 20, "wrong": 0, "lost": 0}
    # An unlocked board's REPL answers a Ctrl-C: the storm must see it.
    assert out["ctrl_c_storm"]["resets"] == 1 and out["ctrl_c_storm"]["repl_prompts"] == 1
    net = out["network"]
    assert net["address"] == address
    assert net["tcp"]["ports_probed"] == 1024
    assert {q["name"] for q in net["mdns"]["queries"]} == {"_services._dns-sd._udp.local", "mpy-esp32.local"}
    assert net["mdns"]["udp_probe"]["ports_probed"] == 1


def test_hwcheck_on_a_locked_board_skips_the_repl_and_sees_no_prompt_under_the_storm(locked_board, capsys):
    # --board: the emulated board's EN line (its control socket) resets it, as
    # RTS does on a real board; a locked console would ignore machine.reset().
    board = locked_board()
    code = main(["hwcheck", "--board", board.name, "--storm-resets", "1", "--address", "127.0.0.1",
                 "--tcp-ports", "1-16"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["console_locked"] is True
    assert out["p256_verify_ms"] is None and "console locked" in out["skipped"]
    assert out["ctrl_c_storm"] == {"resets": 1, "repl_prompts": 0, "seconds_each": out["ctrl_c_storm"]["seconds_each"]}
