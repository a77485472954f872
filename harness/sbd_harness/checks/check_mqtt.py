"""The device on the network: telemetry over mutual TLS, rogue brokers
refused, outages ridden out with nothing lost, hostile input survived.

They need a provisioned, locked board configured for a broker, and run the
lab broker where the board expects it (the `sbd_broker` fixture). To get a
prompt connection after the broker (re)starts they reset the board when it
can be reset; otherwise they wait out its backoff.
"""
from __future__ import annotations

import tempfile
import time
from typing import Any

import pytest

from sbd_harness.boards.base import BoardError
from sbd_harness.checks.online import (ONLINE_TIMEOUT_S, board_address, is_birth, locked_device_id,
                                       reset_board, serial_tail, wait_online)
from sbd_harness.pki import LabCA
from sbd_harness.hostile import HostileBroker, designed_cases, random_cases
from sbd_harness.rogue import KINDS, HangUpListener, RogueBroker
from sbd_harness.watch import Message, Watcher, on_topic

def _command(watcher: Watcher, ca, device_id: str, cmd: str, args: dict | None = None,
             timeout: float = 30) -> dict[str, Any] | None:
    """A command signed by the lab CA, sent on the device's command topic; its result."""
    base = f"devices/{device_id}"
    watcher.publish(f"{base}/cmd", ca.sign_command(device_id, cmd, args))
    reply = watcher.wait_for(lambda m: m.topic == f"{base}/result" and (m.json() or {}).get("cmd") == cmd, timeout)
    return reply.json() if reply else None


def _telemetry(watcher: Watcher, base: str) -> list[dict]:
    out = []
    for m in watcher.seen(on_topic(f"{base}/telemetry")):
        body = m.json()
        if isinstance(body, dict) and isinstance(body.get("seq"), int):
            out.append(body)
    return out


class _FastTelemetry:
    """Telemetry every second for the length of a check, then back as it was."""

    def __init__(self, watcher: Watcher, ca, device_id: str):
        self.args = (watcher, ca, device_id)
        self.previous = None

    def __enter__(self) -> "_FastTelemetry":
        reply = _command(*self.args, "set_interval", {"seconds": 1})
        assert reply and reply.get("ok"), f"the device refused a signed set_interval command: {reply}"
        self.previous = reply.get("previous_s")
        return self

    def __exit__(self, *exc) -> None:
        if self.previous and self.previous != 1:
            _command(*self.args, "set_interval", {"seconds": self.previous})


@pytest.mark.sbd_check(
    id="telemetry-over-mutual-tls",
    title="The device connects to the broker over mutual TLS as itself; its birth message and telemetry arrive",
    etsi_en_303_645=["5.5-1", "5.8-1", "5.8-2"], nist_ir_8259a=["3"], eu_cra=["I(2)(e)"],
    owasp_isvs=["4.1.1", "4.2.3"])
def check_telemetry(sbd_board, sbd_boot, sbd_broker, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    base = f"devices/{device_id}"
    with Watcher(sbd_broker, f"{base}/#") as w:
        birth = wait_online(sbd_board, w, base).json()
        telemetry = w.collect(on_topic(f"{base}/telemetry"), 2, timeout=45)
    log = sbd_broker.log_path.read_text(errors="replace")
    as_user = [line for line in log.splitlines() if f"u'{device_id}'" in line]
    sbd_evidence.update({"broker": f"{sbd_broker.address}:{sbd_broker.port}", "birth": birth,
                         "telemetry": [m.json() for m in telemetry], "broker_log": as_user[-1:]})
    assert birth.get("fw_version") == sbd_boot.boot_line.get("fw_version"), "the birth message names another version"
    assert birth.get("security", {}).get("console") == "locked", f"birth message: {birth}"
    assert as_user, "the broker did not take the device's certificate CN as its user name"
    bodies = [m.json() for m in telemetry]
    assert len(bodies) == 2, f"no telemetry arrived on {base}/telemetry within 45 s"
    seqs = [b.get("seq") if isinstance(b, dict) else None for b in bodies]
    assert all(isinstance(s, int) for s in seqs) and seqs[0] < seqs[1], f"telemetry without increasing seq: {bodies}"
    assert all(isinstance(b.get("data"), dict) for b in bodies), f"telemetry without a reading: {bodies}"


@pytest.mark.sbd_check(
    id="rogue-brokers-refused",
    title="At its broker's address the device refuses a self-signed, foreign-CA, wrong-host, expired "
          "or TLS 1.1 broker and sends it nothing",
    etsi_en_303_645=["5.5-1", "5.5-7"], nist_ir_8259a=["3"], eu_cra=["I(2)(d)", "I(2)(e)"],
    owasp_isvs=["4.1.1", "4.1.3", "4.2.3"])
def check_rogue_brokers(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    base = f"devices/{device_id}"
    seen: dict[str, dict[str, Any]] = {}
    sbd_broker.stop()
    try:
        for kind in KINDS:
            with RogueBroker(kind, sbd_ca, sbd_broker.address, sbd_broker.port, board_address(sbd_board)) as rogue:
                reset_board(sbd_board)
                deadline = time.monotonic() + ONLINE_TIMEOUT_S
                while rogue.attempts < 2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(0.5)
                seen[kind] = {"attempts": rogue.attempts, "handshakes": rogue.handshakes,
                              "bytes_sent_by_device": len(rogue.received)}
    finally:
        sbd_broker.start()
    with Watcher(sbd_broker, f"{base}/state") as w:
        wait_online(sbd_board, w, base)
    sbd_evidence["rogue_brokers"] = seen
    untried = [k for k, v in seen.items() if not v["attempts"]]
    assert not untried, f"the device never tried to connect while these stood in for its broker: {untried}"
    fooled = [k for k, v in seen.items() if v["bytes_sent_by_device"]]
    assert not fooled, f"the device talked MQTT to rogue brokers: {fooled}"


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
    base = f"devices/{device_id}"
    emulated = getattr(sbd_board, "kind", "") == "emulated"
    phases: list[dict[str, Any]] = []
    with Watcher(sbd_broker, f"{base}/#", persistent=True) as w:
        wait_online(sbd_board, w, base)
        with _FastTelemetry(w, sbd_ca, device_id):
            first = w.wait_for(on_topic(f"{base}/telemetry"), 30)
            assert first is not None, "no telemetry before the outages"
            first_seq = first.json()["seq"]

            def back_online(phase: str, started: float) -> None:
                birth_of = is_birth(base)
                birth = w.wait_for(lambda m: birth_of(m) and m.at > started, ONLINE_TIMEOUT_S)
                phases.append({"phase": phase, "reconnected_after_s":
                               round(birth.at - started, 1) if birth else None})
                assert birth is not None, f"after {phase} the device did not reconnect"
                # connected again: telemetry flows before the next outage
                assert w.wait_for(on_topic(f"{base}/telemetry"), 15), f"no telemetry after {phase}"

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
            for i in range(3 if hasattr(sbd_board, "set_link") else 0):
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
                cut = "power-cut" if emulated else "hard"
                assert reset_board(sbd_board, cut), f"the harness could not {cut}-reset this board"
                sbd_broker.start()
                back_online(f"{cut} with queued telemetry {i + 1}", t0)
            # Everything queued drains (faster than one a second), then
            # readings arrive at their own pace again: the device caught up.
            caught_up = _wait_caught_up(w, f"{base}/telemetry", timeout=180)
        seqs = sorted({t["seq"] for t in _telemetry(w, base) if t["seq"] >= first_seq})
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


def _uptime(watcher: Watcher, base: str, timeout: float) -> int | None:
    m = watcher.wait_for(on_topic(f"{base}/telemetry"), timeout)
    return _uptime_of(m) if m else None


@pytest.mark.sbd_check(
    id="hostile-broker-fuzzing-survived",
    title="Malformed MQTT from a broker with a valid certificate: the device hangs up on each, "
          "never restarts, and keeps publishing",
    etsi_en_303_645=["5.13-1B", "5.9-1"], eu_cra=["I(2)(h)", "I(2)(k)"])
def check_hostile_broker(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    base = f"devices/{device_id}"
    cases = designed_cases(device_id) + random_cases(device_id, 16, seed=int(device_id[-6:], 16))
    with Watcher(sbd_broker, f"{base}/#", persistent=True) as w:
        wait_online(sbd_board, w, base)
        with _FastTelemetry(w, sbd_ca, device_id):
            before = _uptime(w, base, 30)
            assert before is not None, "no telemetry before the hostile broker"
            started = time.monotonic()
            log_from = len(sbd_board.serial_log()) if getattr(sbd_board, "kind", "") == "emulated" else 0
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
            wait_online(sbd_board, w, base, reset=False)
            elapsed = time.monotonic() - started
            # The queue drains first; then readings taken after the fuzzing. A
            # device that restarted meanwhile never reports this much uptime.
            target = before + elapsed - 10
            latest = w.wait_for(lambda m: m.topic == f"{base}/telemetry"
                                and (_uptime_of(m) or 0) >= target, 90)
            after = max((_uptime_of(m) or 0) for m in w.seen(on_topic(f"{base}/telemetry")))
    restarts = None
    if getattr(sbd_board, "kind", "") == "emulated":
        restarts = sbd_board.serial_log()[log_from:].count("rst:0x")
    sbd_evidence.update({"uptime_after_s": after, "restarts_seen_on_serial": restarts})
    assert not restarts, f"the device restarted {restarts} times during the fuzzing"
    assert latest is not None, f"the device restarted during the fuzzing (uptime {before} s, then at most {after} s)"
    assert not kept_open, f"the device accepted malformed packets without hanging up: {kept_open}"


INVALID_COMMANDS = [
    "", "SBD-CMD", "SBD-CMD a", "SBD-CMD a b c", "SBD-CMD !!!! ****", "SBD-CMD AAAA AAAA",
    "SBD-CMD " + "A" * 1000 + " AAAA", "HELLO", "\x00\xff\xfe", "{\"cmd\": \"status\"}",
    "SBD-CMD e30= " + "A" * 88, "sbd-cmd e30= AAAA",
]


@pytest.mark.sbd_check(
    id="invalid-commands-refused-over-mqtt",
    title="Malformed, forged, misdirected and out-of-range commands on the command topic each get an "
          "error result and change nothing; valid ones still work",
    etsi_en_303_645=["5.13-1B", "5.5-5"], nist_ir_8259a=["2"], eu_cra=["I(2)(d)", "I(2)(f)"])
def check_invalid_commands(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    base = f"devices/{device_id}"
    cert = sbd_boot.boot_line["security"].get("cert_sha256")
    body = {"device": device_id, "cert": cert, "seq": 2 ** 30}
    signed = [
        dict(body, cmd="set_interval", args={"seconds": 0}),
        dict(body, cmd="set_interval", args={"seconds": 999999}),
        dict(body, cmd="set_interval", args={"seconds": "1"}),
        dict(body, cmd="set_interval", args={}),
        dict(body, cmd="status", device="000000000000"),
        dict(body, cmd="status", cert="00" * 32),
        dict(body, cmd="status", seq=0),
        dict(body, cmd="status", seq=-5),
        dict(body, cmd="shell"),
        dict(body, cmd="status", extra=True),
    ]
    with tempfile.TemporaryDirectory() as tmp:  # well-formed, but signed by someone else's CA
        rogue = LabCA(tmp)
        rogue.init("rogue CA")
        forged = rogue.sign_payload(dict(body, cmd="status"))
    payloads = INVALID_COMMANDS + [forged] + [sbd_ca.sign_payload(b) for b in signed]
    with Watcher(sbd_broker, f"{base}/#") as w:
        wait_online(sbd_board, w, base)
        for payload in payloads:
            w.publish(f"{base}/cmd", payload)
        replies = w.collect(on_topic(f"{base}/result"), len(payloads), timeout=60)
        status = _command(w, sbd_ca, device_id, "status")
        telemetry = w.collect(on_topic(f"{base}/telemetry"), 1, timeout=45)
    bodies = [r.json() for r in replies]
    accepted = [b for b in bodies if not isinstance(b, dict) or b.get("ok") is not False]
    sbd_evidence.update({"sent": len(payloads), "error_results": len(bodies) - len(accepted),
                         "errors": sorted({str(b.get("error")) for b in bodies if isinstance(b, dict)}),
                         "status_after": status})
    assert not accepted, f"invalid commands were accepted: {accepted[:5]}"
    assert len(bodies) == len(payloads), f"{len(payloads) - len(bodies)} invalid commands got no error result"
    assert status and status.get("ok"), f"a valid signed command failed after the invalid ones: {status}"
    assert telemetry, "telemetry stopped after the invalid commands"
