"""MQTT over mutual TLS: the device connects to its broker as itself, and
refuses every broker that cannot prove it is the lab's.

They need a provisioned, locked board configured for a broker, and run the
lab broker where the board expects it (the `sbd_broker` fixture)."""
from __future__ import annotations

import time
from typing import Any

import pytest

from sbd_harness.checks.online import (FastTelemetry, board_address, locked_device_id, reset_board, retry_or_reset,
                                       telemetry_since, wait_online)
from sbd_harness.device.contract import ONLINE_TIMEOUT_S, topics
from sbd_harness.identity.pki import BROKER_CERT_DAYS
from sbd_harness.lab.rogue import KINDS, RogueBroker
from sbd_harness.lab.watch import Watcher


SLOW_TELEMETRY_S = 45  # two readings at the device's own pace (10 s by default)
FAST_TELEMETRY_S = 10  # two readings at one a second


@pytest.mark.sbd_check(
    id="telemetry-over-mutual-tls",
    title="The device connects to the broker over mutual TLS as itself; its birth message and telemetry arrive")
def check_telemetry(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence, sbd_soak):
    device_id = locked_device_id(sbd_boot)
    topic = topics(device_id)
    with Watcher(sbd_broker, topic.all) as w:
        message = wait_online(sbd_board, w, topic, reuse=True)  # connected now; its birth as the broker kept it
        birth = message.json()
        timeout = SLOW_TELEMETRY_S
        if sbd_soak:  # at the device's own pace
            telemetry = telemetry_since(w, topic, message.at, 2, timeout)
        else:  # a reading a second for the length of the check (where the device takes the signed command)
            with FastTelemetry(w, sbd_ca, device_id, required=False) as fast:
                timeout = FAST_TELEMETRY_S if fast.active else SLOW_TELEMETRY_S
                telemetry = telemetry_since(w, topic, message.at, 2, timeout)
            sbd_evidence["telemetry_every_s"] = 1 if fast.active else "the device's own interval"
    log = sbd_broker.log_path.read_text(errors="replace")
    as_user = [line for line in log.splitlines() if f"u'{device_id}'" in line]
    sbd_evidence.update({"broker": f"{sbd_broker.address}:{sbd_broker.port}", "birth": birth,
                         "telemetry": [m.json() for m in telemetry], "broker_log": as_user[-1:]})
    assert birth.get("fw_version") == sbd_boot.boot_line.get("fw_version"), "the birth message names another version"
    assert birth.get("security", {}).get("console") == "locked", f"birth message: {birth}"
    assert as_user, "the broker did not take the device's certificate CN as its user name"
    bodies = [m.json() for m in telemetry]
    sbd_broker.telemetry_seen = {**getattr(sbd_broker, "telemetry_seen", {}), device_id: bodies}  # for later checks
    assert len(bodies) == 2, f"no telemetry arrived on {topic.telemetry} within {timeout} s"
    seqs = [b.get("seq") if isinstance(b, dict) else None for b in bodies]
    assert all(isinstance(s, int) for s in seqs) and seqs[0] < seqs[1], f"telemetry without increasing seq: {bodies}"
    assert all(isinstance(b.get("data"), dict) for b in bodies), f"telemetry without a reading: {bodies}"


def _attempts_at(rogue: RogueBroker, board, wanted: int, reset: bool) -> None:
    """Until the device's `wanted` connection attempts at this rogue broker are over (or a rogue
    already has its bytes): a reset makes the device try at once instead of after its backoff;
    without `reset`, only when the device did not retry by itself (online.retry_or_reset)."""
    if reset:
        reset_board(board)
    else:
        retry_or_reset(board, lambda: bool(rogue.attempts or rogue.received))
    deadline = time.monotonic() + ONLINE_TIMEOUT_S
    while rogue.handled < wanted and not rogue.received and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.sbd_check(
    id="rogue-brokers-refused",
    title="At its broker's address the device refuses a self-signed, foreign-CA, wrong-host, expired, "
          "TLS 1.1 or client-certificate broker and sends it nothing; the broker's own certificate lives "
          "a day, so a revoked one is trusted no longer")
def check_rogue_brokers(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence, sbd_soak):
    device_id = locked_device_id(sbd_boot)
    topic = topics(device_id)
    # Default: one attempt per rogue. The first gets the device's retry as its broker goes away;
    # then a reset before every other rogue: the one after a reset gets the boot's first attempt,
    # the next the device's retry after that refusal (its shortest backoff, 0.5 to 1 s, sooner than
    # a reset brings it back). The soak tier resets before every rogue but the first and waits for
    # a second attempt at each, the one after the device's backoff.
    # Revocation: the device cannot check it (MicroPython's ssl has no CRL or OCSP), so a revoked
    # broker certificate is trusted until it expires; the lab keeps that to BROKER_CERT_DAYS, and the
    # device refuses an expired certificate (rogue "expired", below). Seen at once, before any rogue.
    cert = sbd_broker.certificate()
    life_h = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 3600
    limit_h = BROKER_CERT_DAYS * 24 + 1  # the hour allows for the backdated start
    sbd_evidence["broker_certificate"] = {"serial": cert.serial_number, "valid_hours": round(life_h, 2),
                                          "limit_hours": limit_h,
                                          "revocation_checked_by_device": False}
    assert life_h <= limit_h, (
        f"the broker's certificate is valid for {life_h / 24:.0f} days: the device cannot check revocation, "
        f"so a revoked or stolen broker certificate would be trusted that long (the lab issues them for "
        f"{BROKER_CERT_DAYS} day; docs/mqtt.md, revoked broker certificates)")
    wanted = 2 if sbd_soak else 1
    seen: dict[str, dict[str, Any]] = {}
    sbd_broker.stop()
    try:
        for i, kind in enumerate(KINDS):
            with RogueBroker(kind, sbd_ca, sbd_broker.address, sbd_broker.port, board_address(sbd_board)) as rogue:
                _attempts_at(rogue, sbd_board, wanted, reset=i > 0 if sbd_soak else i % 2 == 1)
                seen[kind] = {"attempts": rogue.attempts, "handshakes": rogue.handshakes,
                              "bytes_sent_by_device": len(rogue.received)}
            if rogue.received:  # the device already talked to a rogue: the check has failed
                break
    finally:
        sbd_broker.start()
    with Watcher(sbd_broker, topic.state) as w:
        wait_online(sbd_board, w, topic, ready=False)
    sbd_evidence["rogue_brokers"] = seen
    fooled = [k for k, v in seen.items() if v["bytes_sent_by_device"]]
    assert not fooled, f"the device talked MQTT to rogue brokers: {fooled}"
    untried = [k for k, v in seen.items() if not v["attempts"]]
    assert not untried, f"the device never tried to connect while these stood in for its broker: {untried}"
