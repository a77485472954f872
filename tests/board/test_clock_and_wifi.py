"""The emulated board's clock and Wi-Fi against the ESP32 port's, and the
device's use of them: it sets its clock from the lab's NTP server before it
goes online, and waits for association instead of failing at once.

Checked against ports/esp32/modtime.c, machine_rtc.c, main.c (mbedTLS's
time), network_wlan.c and micropython-lib's ntptime (docs/emulated-board.md)."""
from __future__ import annotations

import ast
import json
import re
import time

import pytest

from helpers import mpremote
from sbd_harness.boards import lifecycle
from sbd_harness.emulator import netlab
from sbd_harness.identity.provisioning import lab_settings
from sbd_harness.lab import ntp
from sbd_harness.lab.broker import Broker, free_port

needs_netns = pytest.mark.skipif(not netlab.namespaces_available(),
                                 reason="needs root and iproute2: boards on loopback have no link to cut "
                                        "and cannot reach UDP 123")

CLOCK = "import time\nprint(repr((time.time(), time.localtime(), time.gmtime(0))))"


def _clock(board):
    return ast.literal_eval(mpremote(board.port, "exec", CLOCK).strip().splitlines()[-1])


def test_the_clock_starts_in_2000_and_only_power_on_sets_it_back(make_board):
    board = make_board("clk")
    now, local, epoch = _clock(board)
    assert isinstance(now, int) and 0 <= now < 120, now  # seconds since power-on, as an int
    assert local[:3] == (2000, 1, 1) and len(local) == 8, local
    assert epoch[:6] == (2000, 1, 1, 0, 0, 0), epoch
    mpremote(board.port, "exec", "import machine\nmachine.RTC().datetime((2031, 5, 6, 1, 7, 8, 9, 0))")
    assert _clock(board)[1][:4] == (2031, 5, 6, 7)
    board.reset_and_wait("soft")
    assert _clock(board)[1][:4] == (2031, 5, 6, 7)  # the RTC timer runs on across a soft reset
    since = board.log_size()
    mpremote(board.port, "exec", "--no-follow", "import machine\nmachine.reset()")
    board.wait_for_output(">>> ", since, 20, after="rst:0xc")
    assert _clock(board)[1][:4] == (2031, 5, 6, 7)  # and across esp_restart()
    board.reset_and_wait("hard")
    assert _clock(board)[1][0] == 2000  # EN is a power-on reset: back to the epoch


@needs_netns
def test_ntptime_sets_the_clock_from_the_labs_server(make_board):
    host, port = ntp.ensure_running()
    assert port == 123  # ntptime asks port 123 only, as micropython-lib's does
    board = make_board("ntp")
    out = mpremote(board.port, "exec", "import ntptime, time\n"
                   f"ntptime.host = {host!r}\nntptime.timeout = 2\n"
                   "t = ntptime.time()\nntptime.settime()\nprint(repr((t, time.time())))")
    t, now = ast.literal_eval(out.strip().splitlines()[-1])
    lab_now = int(time.time()) - 946684800  # the lab's true time, seconds since 2000
    assert abs(t - lab_now) <= 5 and abs(now - lab_now) <= 5, (t, now, lab_now)


ASSOC = ("import network, time, _board\n"
         "w = network.WLAN(network.STA_IF)\nw.active(True)\n"
         "w.connect(_board.conf['net']['ssid'], _board.conf['net']['psk'])\n"
         "t0 = time.ticks_ms()\nseen = set()\n"
         "while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 10000:\n"
         "    seen.add(w.status())\n    time.sleep_ms(50)\n"
         "print(repr((time.ticks_diff(time.ticks_ms(), t0), sorted(seen), w.status())))")


def test_association_takes_seconds_and_reports_connecting_meanwhile(make_board):
    board = make_board("wifi")
    took, seen, final = ast.literal_eval(mpremote(board.port, "exec", ASSOC).strip().splitlines()[-1])
    assert seen == [1001] and final == 1010, (seen, final)  # STAT_CONNECTING, then STAT_GOT_IP
    assert took >= 900, took  # not at once, as before (ASSOC_MS, 1 s)
    bad = mpremote(board.port, "resume", "exec", "import network, time\nw = network.WLAN(network.STA_IF)\n"
                   "w.connect('another-ssid', 'whatever1')\na = w.status()\ntime.sleep(2.5)\n"
                   "print(repr((a, w.status())))")
    assert ast.literal_eval(bad.strip().splitlines()[-1]) == (1001, 201)  # then STAT_NO_AP_FOUND


@needs_netns
def test_after_a_loss_the_station_reassociates_by_itself(make_board):
    board = make_board("reassoc")
    mpremote(board.port, "exec", ASSOC)
    board.set_link(False)
    try:
        out = mpremote(board.port, "resume", "exec", "import network\nprint(network.WLAN(network.STA_IF).status())")
        assert out.strip().splitlines()[-1] == "1001"
    finally:
        board.set_link(True)
    # no new connect(): the port reconnects on its own, once the access point is back
    out = mpremote(board.port, "resume", "exec", "import network, time\nw = network.WLAN(network.STA_IF)\n"
                   "t0 = time.ticks_ms()\n"
                   "while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 10000:\n"
                   "    time.sleep_ms(50)\nprint(repr((w.isconnected(), time.ticks_diff(time.ticks_ms(), t0))))")
    connected, took = ast.literal_eval(out.strip().splitlines()[-1])
    assert connected and took >= 900, (connected, took)


def _net_events(text: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        m = re.search(r'\{[^{}]*"sbd": "net"[^{}]*\}', line)
        if m:
            events.append(json.loads(m.group(0)))
    return events


@pytest.fixture
def broker(ca):
    with Broker(ca) as b:
        yield b


def test_a_device_goes_online_only_with_time_from_the_labs_ntp_server(make_board, ca, broker):
    # No NTP server answers on this port: the clock stays in 2000 and the device must not connect.
    host, _ = ntp.endpoint()
    silent = make_board("nontp")
    lifecycle.flashed(silent)
    settings = dict(lab_settings(silent, broker.port), ntp_host=host, ntp_port=free_port(host))
    lifecycle.provisioned(silent, ca, settings=settings)
    text = silent.wait_for_output('"detail": "clock not set"', 0, timeout=40)
    assert '"event": "connected"' not in text
    # With the lab's server: synced before connecting, online, and association waited for.
    board = make_board("ntp")
    lifecycle.flashed(board)
    since = board.log_size()
    lifecycle.provisioned(board, ca, broker_port=broker.port)
    text = board.wait_for_output('"event": "connected"', since, timeout=40, after="LOCKED")
    events = _net_events(text[text.find("LOCKED"):])
    assert events and events[0]["event"] == "connected", events  # no failure first: it waited for Wi-Fi
    # Its clock started in 2000 and only NTP can have set it: sbd.tls opens nothing on an unset clock.
