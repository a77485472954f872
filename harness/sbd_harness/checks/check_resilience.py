"""Resilience: broker outages, network cuts and power cuts ridden out with
no telemetry lost, and malformed MQTT from a broker survived.

Each check has two tiers. By default it runs its shortest form that can
still fail on a broken device: one broker outage, one link cut and one power
cut with queued telemetry; a representative subset of the hostile broker's
designed cases and a few random ones with a fixed seed. With `--sbd-soak`
(`sbd verify --soak`) it runs the long series: more rounds of each outage,
every designed fuzz case and many random ones."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from sbd_harness.boards.base import BoardError, LinkControl, PowerControl, SerialLog, has
from sbd_harness.checks.online import (FastTelemetry, board_address, locked_device_id, log_offset, net_events,
                                       reset_board, serial_tail, telemetry_readings, wait_net_event, wait_online)
from sbd_harness.device.contract import ONLINE_TIMEOUT_S, Topics, backoff_ceiling_ms, is_birth, topics
from sbd_harness.lab import first_contact
from sbd_harness.lab.hostile import FIXED_SEED, HostileBroker, designed_cases, random_cases, representative_cases
from sbd_harness.lab.rogue import HangUpListener
from sbd_harness.lab.watch import Message, Watcher, on_topic

# How much shorter than the backoff the device claims an interval between its attempts may look from
# the host: the host notes an attempt when it accepts the connection, a few scheduler ticks late at worst.
INTERVAL_TOLERANCE_S = 0.2
ATTEMPTS_TIMEOUT_S = 30   # for the reconnection attempts a stand-in broker waits for
DETECT_TIMEOUT_S = 10     # for the device to notice an outage and say so on serial
LINK_DOWN_S = 3.0         # a link cut where the harness cannot see the device notice it (no serial log)


@dataclass(frozen=True)
class OutagePlan:
    broker_outages: int    # the first one with the device's retries watched at a stand-in broker
    link_cuts: int         # where the harness holds the board's link (LinkControl)
    power_cuts: int        # each with telemetry queued for a broker that is down
    watched_attempts: int  # attempts the first outage watches where the device reports its backoff on serial
    host_attempts: int     # ...and where it does not: the host's intervals alone are then the evidence
    drain_timeout_s: float


# By default, where the device reports its backoff, the first outage watches no attempt at a stand-in:
# the device's claim for the drop is held against its reconnection; the power cut's outage watches
# two attempts (the interval between them against the claim for the first one's failure).
DEFAULT_OUTAGES = OutagePlan(broker_outages=1, link_cuts=1, power_cuts=1, watched_attempts=0, host_attempts=3,
                             drain_timeout_s=60)
SOAK_OUTAGES = OutagePlan(broker_outages=3, link_cuts=3, power_cuts=2, watched_attempts=4, host_attempts=4,
                          drain_timeout_s=180)


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
    """Host side only (a board whose serial output the harness does not keep, or firmware that
    does not report its backoff): intervals between attempts against the firmware's schedule.
    After the k-th failure it waits between half and all of min(60, 2**(k-1)) seconds; the first
    attempt the listener sees follows failure 1 (the lost connection)."""
    intervals = [round(b - a, 2) for a, b in zip(times, times[1:])]
    problems = []
    for k, interval in enumerate(intervals, start=2):
        ceiling = backoff_ceiling_ms(k) / 1000
        if not ceiling / 2 - INTERVAL_TOLERANCE_S <= interval <= ceiling + 0.6:
            problems.append(f"attempt {k}: waited {interval} s, expected {ceiling / 2}..{ceiling} s")
    return intervals, problems


def _claimed_backoff(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """What the device reported on serial: each failure's `retry_ms`, numbered within its run of
    failures (a connection or a boot starts the count again), against the backoff schedule.
    Failures before the first connection or boot in `events` are left out: their number in a
    run is not known."""
    claims, problems, failures, known = [], [], 0, False
    for e in events:
        if e.get("sbd") == "boot" or e.get("event") == "connected":
            failures, known = 0, True
        elif e.get("event") == "disconnected" and known:
            failures += 1
            retry = e.get("retry_ms")
            ceiling = backoff_ceiling_ms(failures)
            claims.append({"failure": failures, "retry_ms": retry, "reason": e.get("reason")})
            if not isinstance(retry, int) or isinstance(retry, bool):
                problems.append(f"failure {failures} in a row: no retry_ms reported")
            elif not ceiling // 2 <= retry <= ceiling:
                problems.append(f"after failure {failures} in a row it retries after {retry} ms; the backoff "
                                f"allows {ceiling // 2}..{ceiling} ms")
    return claims, problems


def _phase_failures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failures of one outage: the `disconnected` events up to the next connection or boot."""
    out = []
    for e in events:
        if e.get("sbd") == "boot" or e.get("event") == "connected":
            break
        if e.get("event") == "disconnected":
            out.append(e)
    return out


def _lower_bound_problems(marks: list[float], failures: list[dict[str, Any]]) -> tuple[list[dict], list[str]]:
    """The host-side lower bound: `marks` are host times of the outage's start and of each connection
    attempt seen after it (the last may be the reconnection); failure i's claimed retry_ms must not be
    longer than the time from mark i to mark i + 1 (minus the tolerance): a device must not retry
    sooner than it says."""
    rows, problems = [], []
    for i, (a, b) in enumerate(zip(marks, marks[1:])):
        if i >= len(failures) or not isinstance(failures[i].get("retry_ms"), int):
            break
        claimed, seen = failures[i]["retry_ms"] / 1000, b - a
        rows.append({"claimed_s": round(claimed, 3), "measured_at_least_s": round(seen, 3)})
        if seen < claimed - INTERVAL_TOLERANCE_S:
            problems.append(f"it said it would wait {claimed:.2f} s after failure {i + 1} of an outage, "
                            f"and tried again {seen:.2f} s later")
    return rows, problems


class _Outages:
    """One run of the outage check: the device on the lab broker with telemetry every second, the
    phases it goes through, and what they showed of its backoff."""

    def __init__(self, board, broker, watcher: Watcher, topic: Topics, since: int):
        self.board, self.broker, self.w, self.topic, self.since = board, broker, watcher, topic, since
        self.phases: list[dict[str, Any]] = []
        self.host_backoff: list[str] = []       # host-side lower-bound and schedule problems
        self.bounds: list[dict[str, Any]] = []  # claimed backoff against what the host measured
        self.intervals: list[float] = []        # host-side intervals between watched attempts
        self.serial = has(board, SerialLog)

    def back_online(self, phase: dict[str, Any], started: float) -> Message:
        birth_of = is_birth(self.topic)
        birth = self.w.wait_for(lambda m: birth_of(m) and m.at > started, ONLINE_TIMEOUT_S)
        phase["reconnected_after_s"] = round(birth.at - started, 1) if birth else None
        self.phases.append(phase)
        assert birth is not None, f"after {phase['phase']} the device did not reconnect{serial_tail(self.board)}"
        # connected again: telemetry flows before the next outage
        assert self.w.wait_for(on_topic(self.topic.telemetry), 15), f"no telemetry after {phase['phase']}"
        phase["took_s"] = round(time.monotonic() - started, 1)
        return birth

    def reports_backoff(self, offset: int) -> bool:
        """Whether the device says on serial how long it backs off (it has a `retry_ms` on a failure)."""
        if not self.serial or not wait_net_event(self.board, "disconnected", offset, DETECT_TIMEOUT_S):
            return False
        return any(isinstance(e.get("retry_ms"), int) for e in net_events(self.board, offset)
                   if e.get("event") == "disconnected")

    def broker_outage(self, name: str, soak: bool) -> None:
        """The broker stops and starts again: until the device noticed and retried once (serial),
        or for LINK_DOWN_S where the harness cannot see it."""
        self.w.pause()
        offset = log_offset(self.board)
        started = time.monotonic()
        self.broker.stop()
        if not self._device_retried(offset, 2 if soak else 1):
            time.sleep(LINK_DOWN_S)
        self.broker.start()
        self.w.resume()
        self.back_online({"phase": name}, started)

    def _device_retried(self, offset: int, failures: int) -> bool:
        """Waits until the device reported `failures` failures on serial since `offset`."""
        if not self.serial:
            return False
        deadline = time.monotonic() + DETECT_TIMEOUT_S * failures
        while time.monotonic() < deadline:
            if sum(1 for e in net_events(self.board, offset) if e.get("event") == "disconnected") >= failures:
                return True
            time.sleep(0.05)
        return False

    def link_cut(self, name: str, soak: bool) -> bool:
        offset = log_offset(self.board)
        started = time.monotonic()
        try:
            self.board.set_link(False)
        except BoardError as exc:  # e.g. no network namespace: loopback has no link to cut
            self.phases.append({"phase": "network cuts", "skipped": str(exc)[:200]})
            return False
        try:
            if not self._device_retried(offset, 2 if soak else 1):
                time.sleep(LINK_DOWN_S)
        finally:
            self.board.set_link(True)
        self.back_online({"phase": name}, started)
        return True


def _first_broker_outage(o: _Outages, plan: OutagePlan) -> None:
    """The broker stops and comes back; the device must reconnect by itself. Where it reports its
    backoff on serial and the plan watches no attempt (the default), the broker comes back as soon
    as the device said how long it waits, and its reconnection is the attempt held against that
    claim; otherwise a stand-in that hangs up at once notes `watched_attempts` attempts (where the
    device reports its backoff) or `host_attempts` (where it does not: the host's intervals alone
    are then the evidence) before the broker comes back."""
    o.w.pause()
    offset = log_offset(o.board)
    started = time.monotonic()
    o.broker.stop()
    times: list[float] = []
    try:
        reported = o.reports_backoff(offset)
        wanted = plan.watched_attempts if reported else plan.host_attempts
        if wanted:
            with HangUpListener(o.broker.address, o.broker.port, board_address(o.board)) as listener:
                deadline = time.monotonic() + ATTEMPTS_TIMEOUT_S
                while len(listener.times) < wanted and time.monotonic() < deadline:
                    time.sleep(0.02)
                times = list(listener.times)
    finally:
        o.broker.start()
        o.w.resume()
    name = "broker outage 1" + (" (retries watched)" if wanted else "")
    birth = o.back_online({"phase": name, "attempts_watched": len(times)}, started)
    _judge_watched(o, offset, [started] + times + [birth.at], times, plan.host_attempts if not reported else 0)


def _power_cut_with_queue(o: _Outages, name: str, plan: OutagePlan, cut: str) -> None:
    """The broker stops; readings queue on flash while the device retries (two attempts seen at a
    stand-in: at least 1.5 s offline at one reading a second); then the board loses power (or is
    reset), the broker comes back, and what was queued must still arrive."""
    o.w.pause()
    offset = log_offset(o.board)
    started = time.monotonic()
    o.broker.stop()
    try:
        with HangUpListener(o.broker.address, o.broker.port, board_address(o.board)) as listener:
            wanted = 2 if o.reports_backoff(offset) else plan.host_attempts
            deadline = time.monotonic() + ATTEMPTS_TIMEOUT_S
            while len(listener.times) < wanted and time.monotonic() < deadline:
                time.sleep(0.02)
            times = list(listener.times)
            offline_s = time.monotonic() - started
            assert reset_board(o.board, cut), f"the harness could not {cut}-reset this board"
    finally:
        o.broker.start()
        o.w.resume()
    o.back_online({"phase": name, "attempts_watched": len(times), "offline_before_cut_s": round(offline_s, 1)},
                  started)
    _judge_watched(o, offset, [started] + times, times, plan.host_attempts)


def _judge_watched(o: _Outages, offset: int, marks: list[float], times: list[float], attempts: int) -> None:
    """The outage's marks (its start, the attempts seen, the reconnection if the device made it)
    against what the device claimed on serial; or, where it claimed nothing, the attempts seen
    (at least `attempts`) against the backoff schedule."""
    failures = _phase_failures(net_events(o.board, offset))
    if any(isinstance(f.get("retry_ms"), int) for f in failures):
        rows, problems = _lower_bound_problems(marks, failures)
        o.bounds += rows
        o.host_backoff += problems
    else:  # nothing reported on serial: the host's measurement against the schedule
        intervals, problems = _backoff_problems(times)
        o.intervals += intervals
        o.host_backoff += problems
        assert len(times) >= attempts, \
            f"only {len(times)} reconnection attempts in {ATTEMPTS_TIMEOUT_S} s{serial_tail(o.board)}"


def _backoff_verdict(o: _Outages, evidence: dict[str, Any]) -> None:
    """Fails at once when what the device reported, or what the host measured, breaks the backoff."""
    claims, claimed_problems = _claimed_backoff(net_events(o.board, o.since))
    evidence.update({"backoff_reported": claims[:40], "backoff_against_host": o.bounds[:40],
                     "reconnect_intervals_s": o.intervals,
                     "backoff_problems": (claimed_problems + o.host_backoff)[:20]})
    if not claims and o.serial:
        evidence["backoff_note"] = "the device reports no retry_ms on serial: judged from the host's measurement"
    problems = claimed_problems + o.host_backoff
    assert not problems, f"reconnection does not follow the backoff: {problems[:5]}"


@pytest.mark.sbd_check(
    id="outages-lose-nothing",
    title="Broker outages, network cuts and power cuts with queued telemetry: every message arrives, "
          "and reconnection backs off exponentially")
def check_outages(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence, sbd_soak):
    device_id = locked_device_id(sbd_boot)
    topic = topics(device_id)
    plan = SOAK_OUTAGES if sbd_soak else DEFAULT_OUTAGES
    cut = "power-cut" if has(sbd_board, PowerControl) else "hard"
    with Watcher(sbd_broker, topic.all, persistent=True) as w:
        since = log_offset(sbd_board)
        wait_online(sbd_board, w, topic, reuse=True)
        o = _Outages(sbd_board, sbd_broker, w, topic, since)
        sbd_evidence.update({"plan": vars(plan), "phases": o.phases})
        with FastTelemetry(w, sbd_ca, device_id):
            first = w.wait_for(on_topic(topic.telemetry), 30)
            assert first is not None, "no telemetry before the outages"
            first_seq = first.json()["seq"]
            sbd_evidence["first_seq"] = first_seq
            # 1. the broker host is up but mosquitto is not: the retries, watched; a failure of the
            #    backoff is visible at once
            _first_broker_outage(o, plan)
            _backoff_verdict(o, sbd_evidence)
            for i in range(1, plan.broker_outages):
                o.broker_outage(f"broker outage {i + 1}", sbd_soak)
            # 2. the board's network link goes down (where the harness holds it)
            for i in range(plan.link_cuts if has(sbd_board, LinkControl) else 0):
                if not o.link_cut(f"network cut {i + 1}", sbd_soak):
                    break
            # 3. power cuts while telemetry is queued for a broker that is down
            for i in range(plan.power_cuts):
                _power_cut_with_queue(o, f"{cut} with queued telemetry {i + 1}", plan, cut)
            _backoff_verdict(o, sbd_evidence)
            # Everything queued drains (faster than one a second), then readings
            # arrive at their own pace again: the device caught up.
            drain_from = time.monotonic()
            caught_up = _wait_caught_up(w, topic.telemetry, timeout=plan.drain_timeout_s)
            sbd_evidence["drain_s"] = round(time.monotonic() - drain_from, 1)
        seqs = sorted({t["seq"] for t in telemetry_readings(w, topic) if t["seq"] >= first_seq})
    missing = sorted(set(range(first_seq, seqs[-1] + 1)) - set(seqs)) if seqs else []
    sbd_evidence.update({"last_seq": seqs[-1] if seqs else None, "received": len(seqs), "missing": missing[:50]})
    assert caught_up, (f"the device did not catch up with its queued telemetry within {plan.drain_timeout_s} s "
                       f"(last {seqs[-3:]})")
    assert not missing, f"{len(missing)} telemetry messages were lost: seq {missing[:20]}"


def _uptime_of(m: Message) -> int | None:
    body = m.json()
    data = body.get("data") if isinstance(body, dict) else None
    return data.get("uptime_s") if isinstance(data, dict) else None


UPTIME_SLACK_S = 3  # a reading up to a period old, uptime in whole seconds, delivery


@pytest.mark.sbd_check(
    id="hostile-broker-fuzzing-survived",
    title="Malformed MQTT from a broker with a valid certificate: the device hangs up on each, "
          "never restarts, and keeps publishing")
def check_hostile_broker(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence, sbd_soak):
    device_id = locked_device_id(sbd_boot)
    topic = topics(device_id)
    if sbd_soak:  # every designed case, and many random ones seeded by the device
        cases = designed_cases(device_id) + random_cases(device_id, 48, seed=int(device_id[-6:], 16))
        observe_s, quiet_s = 3.0, 0.25
    else:  # one of each kind of malformation, and two random ones, the same on every run (a random
        # one is survival only: a restart shows on serial and in the uptime, whatever the window)
        cases = representative_cases(device_id) + random_cases(device_id, 2, seed=FIXED_SEED, wait_s=0.5)
        observe_s, quiet_s = 1.0, 0.1
    serial = has(sbd_board, SerialLog)
    with Watcher(sbd_broker, topic.all, persistent=True) as w:
        wait_online(sbd_board, w, topic, reuse=True)
        with FastTelemetry(w, sbd_ca, device_id):
            reading = w.wait_for(lambda m: m.topic == topic.telemetry and _uptime_of(m) is not None, 30)
            assert reading is not None, "no telemetry before the hostile broker"
            before, before_at = _uptime_of(reading), reading.at  # the device's uptime, and when it said so
            started = time.monotonic()
            log_from = log_offset(sbd_board)

            def restarted() -> bool:  # a restart on serial: the run has already failed
                return serial and "rst:0x" in sbd_board.log_since(log_from)

            w.pause()
            sbd_broker.stop()
            try:
                with HostileBroker(sbd_ca, sbd_broker.address, sbd_broker.port, cases,
                                   observe_s=observe_s, quiet_s=quiet_s) as hostile:
                    finished = hostile.wait(len(cases) * 8 + 60, abort=restarted)
            finally:
                sbd_broker.start()
                w.resume()
            first_contact.remember(sbd_broker, device_id, hostile.client_hello, hostile.connect)
            results = hostile.results
            kept_open = [r.name for r, c in zip(results, cases) if c.must_close and not r.device_closed]
            restarts = sbd_board.log_since(log_from).count("rst:0x") if serial else None
            sbd_evidence.update({"tier_cases": "every designed case" if sbd_soak else "representative subset",
                                 "cases": len(cases), "run": len(results), "kept_open": kept_open,
                                 "uptime_before_s": before, "fuzz_seconds": round(time.monotonic() - started, 1),
                                 "restarts_seen_on_serial": restarts,
                                 "results": [vars(r) for r in results]})
            assert not restarts, f"the device restarted {restarts} times during the fuzzing"
            assert finished, f"the device stopped reconnecting after {len(results)} of {len(cases)} cases"
            birth = wait_online(sbd_board, w, topic, reset=False)
            # A reading taken after the device came back: a device that restarted meanwhile counts its
            # uptime from the restart, after `before_at`, and reports less than its uptime then plus
            # the time since (readings still queued from before the fuzzing report less too).
            target = before + (birth.at - before_at) - UPTIME_SLACK_S
            latest = w.wait_for(lambda m: m.topic == topic.telemetry and (_uptime_of(m) or 0) >= target, 30)
            after = max([_uptime_of(m) or 0 for m in w.seen(lambda m: m.topic == topic.telemetry
                                                             and m.at >= birth.at)], default=None)
    sbd_evidence.update({"uptime_after_s": after, "uptime_needed_s": round(target, 1)})
    assert latest is not None, (f"the device restarted during the fuzzing: it reported an uptime of {before} s "
                                f"before it and at most {after} s after, where {target:.0f} s were due")
    assert not kept_open, f"the device accepted malformed packets without hanging up: {kept_open}"
