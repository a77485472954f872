"""A locked device's telemetry over mutual TLS to the lab broker,
its birth message, and signed commands over MQTT."""
from __future__ import annotations

import json
import queue
import time

import pytest

from sbd_harness.boards import lifecycle
from sbd_harness.identity.pki import LabCA
from sbd_harness.identity.provisioning import lab_settings
from sbd_harness.lab.broker import Broker


@pytest.fixture
def lab(tmp_path):
    ca = LabCA(tmp_path / "pki")
    ca.init()
    with Broker(ca) as broker:
        yield ca, broker


def _device(make_board, ca, broker, interval=1):
    board = make_board("mq")
    lifecycle.flashed(board)
    settings = dict(lab_settings(board, broker.port), telemetry_s=interval)
    return board, lifecycle.provisioned(board, ca, settings=settings)


def _watch(broker, topic):
    messages: queue.Queue = queue.Queue()
    client = broker.monitor()
    client.on_message = lambda c, u, m: messages.put((m.topic, m.payload, m.retain))
    client.subscribe(topic, qos=1)
    client.loop_start()
    return client, messages


def _collect(messages, want, timeout=30):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            got.append(messages.get(timeout=0.5))
        except queue.Empty:
            pass
    return got


def test_locked_device_sends_telemetry_and_birth_over_mutual_tls(make_board, lab):
    ca, broker = lab
    board, result = _device(make_board, ca, broker)
    base = f"devices/{result.device_id}"
    client, messages = _watch(broker, f"{base}/#")
    try:
        got = _collect(messages, 5)
    finally:
        client.loop_stop()
        client.disconnect()
    state = [json.loads(p) for t, p, r in got if t == f"{base}/state"]
    telemetry = [json.loads(p) for t, p, r in got if t == f"{base}/telemetry"]
    assert state and state[0]["online"] is True and state[0]["security"]["console"] == "locked"
    seqs = [m["seq"] for m in telemetry]
    assert len(seqs) >= 2 and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {"uptime_s", "heap_free"} <= set(telemetry[0]["data"])
    assert f"u'{result.device_id}'" in broker.log_path.read_text()


def test_signed_command_over_mqtt_gets_a_result(make_board, lab):
    ca, broker = lab
    board, result = _device(make_board, ca, broker, interval=30)
    base = f"devices/{result.device_id}"
    client, messages = _watch(broker, f"{base}/result")
    try:
        board.wait_for_output('"event": "connected"', since=0, timeout=20)
        client.publish(f"{base}/cmd", ca.sign_command(result.device_id, "status"), qos=1)
        client.publish(f"{base}/cmd", "SBD-CMD forged forged", qos=1)
        got = _collect(messages, 2, timeout=20)
    finally:
        client.loop_stop()
        client.disconnect()
    replies = [json.loads(p) for t, p, r in got]
    assert len(replies) == 2, board.serial_log()[-1500:]
    assert replies[0]["ok"] is True and replies[0]["status"]["provisioned"] is True
    assert replies[1] == {"sbd": "cmd", "ok": False, "error": "bad base64"}


def test_over_mqtt_unlock_needs_the_challenge_the_device_handed_out_there(make_board, lab):
    ca, broker = lab
    board, result = _device(make_board, ca, broker, interval=30)
    device_id, base = result.device_id, f"devices/{result.device_id}"
    client, messages = _watch(broker, f"{base}/result")

    def ask(payload: str) -> dict:
        client.publish(f"{base}/cmd", payload, qos=1)
        got = _collect(messages, 1, timeout=20)
        assert got, board.serial_log()[-1500:]
        return json.loads(got[0][1])

    try:
        board.wait_for_output('"event": "connected"', since=0, timeout=20)
        held = ca.sign_command(device_id, "unlock_console")  # signed earlier, without a challenge
        assert ask(held) == {"sbd": "cmd", "ok": False, "error": "no challenge"}
        first = ask("SBD-CHALLENGE")
        assert first["ok"] and first["device"] == device_id and first["cert"] == result.issued.fingerprint
        stale = ca.sign_command(device_id, "unlock_console", challenge=first["nonce"])
        second = board.console_request("SBD-CHALLENGE")  # one challenge for console and MQTT: it replaces the first
        assert second["nonce"] != first["nonce"]
        assert ask(stale) == {"sbd": "cmd", "ok": False, "error": "stale challenge"}
        accepted = ask(ca.sign_command(device_id, "unlock_console", challenge=second["nonce"]))
        assert accepted["ok"] and accepted["cmd"] == "unlock_console"
    finally:
        client.loop_stop()
        client.disconnect()
    board.wait_for_output('"console": "open"', since=0, after="SW_CPU_RESET")
