"""The console loop under MicroPython (firmware/lib/sbd/console.py): long work
(the network tick) never starts while input waits unread.

The ESP32's console UART keeps 259 bytes and drops what comes while it is full
(ports/esp32/mphalport.c, ports/esp32/uart.c); the network tick can block for
seconds while it connects. A firmware that reads a byte and then ticks loses
the rest of a signed line (about 270 bytes) whenever a tick blocks. Here the
tick stands in for a blocking connect and reports any input it finds unread.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from sbd_harness.boards.serial_board import PACED_CHUNK, PACED_GAP_S, PING
from sbd_harness.emulator.micropython import micropython_command

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, select, sys, time
from sbd import console
poll = select.poll()
poll.register(sys.stdin, select.POLLIN)
lines = []
def on_line(line):
    lines.append(line)
    print(json.dumps({"line": len(line)}))
    if len(lines) == 2:
        raise SystemExit
def tick():
    if poll.poll(0):
        print(json.dumps({"tick_with_unread_input": True}))
    time.sleep_ms(300)  # a connect attempt that blocks
    return False
console.serve(on_line, 1025, tick=tick, period_ms=100)
"""

LINE = b"SBD-CMD " + b"A" * 262  # as long as a signed command line


def test_a_paced_line_after_an_answered_one_is_read_whole_before_any_long_work(tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware" / "lib"))
    proc = subprocess.Popen(micropython_command() + [str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        time.sleep(0.5)  # the loop is running, and ticking
        proc.stdin.write(b"\r\n" + PING + b"\r\n")
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())
        assert first == {"line": len(PING)}, first
        data = LINE + b"\r\n"
        for at in range(0, len(data), PACED_CHUNK):  # as the harness's writer sends it
            proc.stdin.write(data[at:at + PACED_CHUNK])
            proc.stdin.flush()
            time.sleep(PACED_GAP_S)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
    assert {"tick_with_unread_input": True} not in events, events
    assert events[-1] == {"line": len(LINE)}, (events, err.decode()[-2000:])


STREAM_SCRIPT = r"""
import json, time
from sbd import console
seen = [0]
def on_line(line):
    seen[0] += 1
    time.sleep_ms(200)  # a signature check
    print(json.dumps({"line": seen[0]}))
    if seen[0] == 12:
        raise SystemExit
def tick():
    print(json.dumps({"tick": seen[0]}))
    return False
console.serve(on_line, 1025, tick=tick, period_ms=100)
"""


def test_a_stream_of_lines_does_not_starve_the_network_tick(tmp_path):
    """Anyone on the serial port can send line after line; each costs a signature check. tick()
    (network work, and the watchdog it feeds) still runs at least once a TICK_MAX_MS."""
    script = tmp_path / "stream.py"
    script.write_text(STREAM_SCRIPT)
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware" / "lib"))
    proc = subprocess.Popen(micropython_command() + [str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        time.sleep(0.3)
        proc.stdin.write(b"x\r\n" * 12)  # all at once: the UART never empties while they are handled
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    lines_done = [e["line"] for e in events if "line" in e]
    assert lines_done == list(range(1, 13)), events
    # ticks while lines were still waiting: after a line in the middle of the stream, not only before or after it
    assert any(0 < e["tick"] < 12 for e in events if "tick" in e), events
