"""Resilience: broker outages, network cuts and power cuts ridden out with
no telemetry lost, and malformed MQTT from a broker survived."""
from __future__ import annotations

import time
from typing import Any

import pytest

from sbd_harness.boards.base import BoardError, LinkControl, PowerControl, SerialLog, has
from sbd_harness.checks.online import FastTelemetry, board_address, locked_device_id, reset_board, serial_tail, telemetry_readings, wait_online
from sbd_harness.device.contract import ONLINE_TIMEOUT_S, Topics, is_birth, topics
from sbd_harness.lab.hostile import HostileBroker, designed_cases, random_cases
from sbd_harness.lab.rogue import HangUpListener
from sbd_harness.lab.watch import Message, Watcher, on_topic


def _wait_caught_up(w: Watcher, topic: str, timeout: float, gap_s: float = 0.6) -> bool:
    """True once two messages on `topic` arrive at least gap_s apart: the backlog is gone."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        m = w.wait_for(on_topic(topic), deadline - time.monotonic())
        if m is None:
            return False
        if last is not None and m.at - last >= gap_s:
            return True
        last = m.at
    return False


def _backoff_problems(times: list[float]) -> tuple[list[float], list[str]]:
    """Intervals between attempts against the firmware's schedule: after the
    k-th failure it waits between half and all of min(60, 2**(k-1)) seconds.
    The first attempt the listener sees follows failure 1 (the lost connection)."""
    intervals = [round(b - a, 2) for a, b in zip(times, times[1:])]
    problems = []
    for k, interval in enumerate(intervals, start=2):
        ceiling = min(60.0, 2.0 ** (k - 1))
        if not ceiling / 2 - 0.2 <= interval <= ceiling + 0.6:
            problems.append(f"attempt {k}: waited {interval} s, expected {ceiling / 2}..{ceiling} s")
    return intervals, problems


@pytest.mark.sbd_check(
    id="outages-lose-nothing",
    title="Broker outages, network cuts and power cuts with queued telemetry: every message arrives, "
          "and reconnection backs off exponentially",
    etsi_en_303_645=["5.9-1", "5.9-2", "5.9-3"], eu_cra=["I(2)(h)"])
def check_outages(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    topic = topics(device_id)
    power = has(sbd_board, PowerControl)
    phases: list[dict[str, Any]] = []
    with Watcher(sbd_broker, topic.all, persistent=True) as w:
        wait_online(sbd_board, w, topic)
        with FastTelemetry(w, sbd_ca, device_id):
            first = w.wait_for(on_topic(topic.telemetry), 30)
            assert first is not None, "no telemetry before the outages"
            first_seq = first.json()["seq"]

            def back_online(phase: str, started: float) -> None:
                birth_of = is_birth(topic)
                birth = w.wait_for(lambda m: birth_of(m) and m.at > started, ONLINE_TIMEOUT_S)
                phases.append({"phase": phase, "reconnected_after_s":
                               round(birth.at - started, 1) if birth else None})
                assert birth is not None, f"after {phase} the device did not reconnect"
                # connected again: telemetry flows before the next outage
                assert w.wait_for(on_topic(topic.telemetry), 15), f"no telemetry after {phase}"

            # 1. the broker host is up but mosquitto is not: watch the retries
            w.pause()
            sbd_broker.stop()
            t0 = time.monotonic()
            with HangUpListener(sbd_broker.address, sbd_broker.port, board_address(sbd_board)) as listener:
                while len(listener.times) < 4 and time.monotonic() - t0 < 30:
                    time.sleep(0.1)
            sbd_broker.start()
            w.resume()
            intervals, backoff = _backoff_problems(listener.times)
            sbd_evidence["reconnect_intervals_s"] = intervals
            back_online("broker outage (retries watched)", t0)
            # 2. the broker stops and starts again, twice more
            for i in range(2):
                sbd_broker.stop()
                t0 = time.monotonic()
                time.sleep(3)
                sbd_broker.start()
                back_online(f"broker outage {i + 2}", t0)
            # 3. the board's network link goes down, three times (where the harness holds it)
            for i in range(3 if has(sbd_board, LinkControl) else 0):
                t0 = time.monotonic()
                try:
                    sbd_board.set_link(False)
                except BoardError as exc:  # e.g. no network namespace: loopback has no link to cut
                    phases.append({"phase": "network cuts", "skipped": str(exc)[:200]})
                    break
                time.sleep(3)
                sbd_board.set_link(True)
                back_online(f"network cut {i + 1}", t0)
            # 4. power cuts while telemetry is queued for a broker that is down
            for i in range(2):
                sbd_broker.stop()
                t0 = time.monotonic()
                time.sleep(3.5)
                cut = "power-cut" if power else "hard"
                assert reset_board(sbd_board, cut), f"the harness could not {cut}-reset this board"
                sbd_broker.start()
                back_online(f"{cut} with queued telemetry {i + 1}", t0)
            # Everything queued drains (faster than one a second), then
            # readings arrive at their own pace again: the device caught up.
            caught_up = _wait_caught_up(w, topic.telemetry, timeout=180)
        seqs = sorted({t["seq"] for t in telemetry_readings(w, topic) if t["seq"] >= first_seq})
    missing = sorted(set(range(first_seq, seqs[-1] + 1)) - set(seqs)) if seqs else []
    sbd_evidence.update({"phases": phases, "first_seq": first_seq, "last_seq": seqs[-1] if seqs else None,
                         "received": len(seqs), "missing": missing[:50], "backoff_problems": backoff})
    assert len(listener.times) >= 4, \
        f"only {len(listener.times)} reconnection attempts in 30 s{serial_tail(sbd_board)}"
    assert not backoff, f"reconnection does not follow the backoff: {backoff}"
    assert caught_up, f"the device did not catch up with its queued telemetry within 180 s (last {seqs[-3:]})"
    assert not missing, f"{len(missing)} telemetry messages were lost: seq {missing[:20]}"


def _uptime_of(m: Message) -> int | None:
    body = m.json()
    data = body.get("data") if isinstance(body, dict) else None
    return data.get("uptime_s") if isinstance(data, dict) else None


def _uptime(watcher: Watcher, topic: Topics, timeout: float) -> int | None:
    m = watcher.wait_for(on_topic(topic.telemetry), timeout)
    return _uptime_of(m) if m else None


@pytest.mark.sbd_check(
    id="hostile-broker-fuzzing-survived",
    title="Malformed MQTT from a broker with a valid certificate: the device hangs up on each, "
          "never restarts, and keeps publishing",
    etsi_en_303_645=["5.13-1B", "5.9-1"], eu_cra=["I(2)(h)", "I(2)(k)"])
def check_hostile_broker(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    topic = topics(device_id)
    cases = designed_cases(device_id) + random_cases(device_id, 16, seed=int(device_id[-6:], 16))
    with Watcher(sbd_broker, topic.all, persistent=True) as w:
        wait_online(sbd_board, w, topic)
        with FastTelemetry(w, sbd_ca, device_id):
            before = _uptime(w, topic, 30)
            assert before is not None, "no telemetry before the hostile broker"
            started = time.monotonic()
            log_from = len(sbd_board.serial_log()) if has(sbd_board, SerialLog) else 0
            w.pause()
            sbd_broker.stop()
            try:
                with HostileBroker(sbd_ca, sbd_broker.address, sbd_broker.port, cases) as hostile:
                    finished = hostile.wait(len(cases) * 8 + 60)
            finally:
                sbd_broker.start()
                w.resume()
            results = hostile.results
            kept_open = [r.name for r, c in zip(results, cases) if c.must_close and not r.device_closed]
            sbd_evidence.update({"cases": len(cases), "run": len(results), "kept_open": kept_open,
                                 "uptime_before_s": before, "fuzz_seconds": round(time.monotonic() - started, 1),
                                 "results": [vars(r) for r in results]})
            assert finished, f"the device stopped reconnecting after {len(results)} of {len(cases)} cases"
            wait_online(sbd_board, w, topic, reset=False)
            elapsed = time.monotonic() - started
            # The queue drains first; then readings taken after the fuzzing. A
            # device that restarted meanwhile never reports this much uptime.
            target = before + elapsed - 10
            latest = w.wait_for(lambda m: m.topic == topic.telemetry
                                and (_uptime_of(m) or 0) >= target, 90)
            after = max((_uptime_of(m) or 0) for m in w.seen(on_topic(topic.telemetry)))
    restarts = None
    if has(sbd_board, SerialLog):
        restarts = sbd_board.serial_log()[log_from:].count("rst:0x")
    sbd_evidence.update({"uptime_after_s": after, "restarts_seen_on_serial": restarts})
    assert not restarts, f"the device restarted {restarts} times during the fuzzing"
    assert latest is not None, f"the device restarted during the fuzzing (uptime {before} s, then at most {after} s)"
    assert not kept_open, f"the device accepted malformed packets without hanging up: {kept_open}"
