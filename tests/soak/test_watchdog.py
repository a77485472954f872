"""A locked device arms the task watchdog and feeds it from its main loop: a
broker that stalls every handshake does not starve it (each blocking call has
a timeout shorter than the watchdog's), and a main loop that stops going round
resets the board."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

from sbd_harness.boards import lifecycle
from sbd_harness.identity.pki import LabCA
from sbd_harness.identity.provisioning import lab_settings
from sbd_harness.lab.broker import lab_address

WDT_MS = 60000  # firmware/lib/sbd/app.py


def _stalling_broker():
    """Accepts TCP connections and never says a word of TLS."""
    server = socket.socket()
    server.bind((lab_address(), 0))
    server.listen(8)
    held = []

    def serve():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    return server, held


def test_watchdog_is_fed_through_stalled_handshakes_and_resets_a_hung_board(make_board, tmp_path):
    ca = LabCA(tmp_path / "pki")
    ca.init()
    server, held = _stalling_broker()
    try:
        board = make_board("wd")
        lifecycle.flashed(board)
        settings = dict(lab_settings(board, server.getsockname()[1]), telemetry_s=60)
        lifecycle.provisioned(board, ca, settings=settings)

        since = board.log_size()
        time.sleep(WDT_MS / 1000 + 10)  # longer than the timeout, every handshake stalling
        text = board._log_since(since)
        assert len(held) >= 2 and '"disconnected"' in text, text[-500:]
        assert "Task watchdog" not in text and "rst:" not in text, text[-500:]

        since = board.log_size()
        os.kill(board.cpu_pid(), signal.SIGSTOP)  # the main loop stops going round
        text = board.wait_for_output('"watchdog"', since, timeout=WDT_MS / 1000 + 30,
                                     after="E (wdt) Task watchdog got triggered.")
        assert "rst:0x7 (TG0WDT_SYS_RESET)" in text
        # the reset stopped the watchdog; the firmware arms it again once its boot reaches the main loop
        deadline = time.monotonic() + 30
        while board.control({"cmd": "status"}).get("wdt_ms") != WDT_MS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert board.control({"cmd": "status"}).get("wdt_ms") == WDT_MS
    finally:
        server.close()
        for conn in held:
            conn.close()
