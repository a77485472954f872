"""The device's own TLS and MQTT clients, seen from the network: what its
ClientHello offers (protocol versions, cipher suites, signature algorithms,
groups), that it refuses a broker that accepts only weak suites, and that its
MQTT CONNECT carries no password.

A stand-in for the lab broker (lab/first_contact.py), on the broker's
address and port while the broker is stopped, reads the device's first
connection after a reset: its ClientHello as it came over the wire, then a
TLS handshake that allows only suites without forward secrecy or AEAD. The
CONNECT is the one the resilience check's hostile broker (a lab-CA broker
too) already read in this run, or, run alone, one a lab-CA stand-in reads.
Both need a provisioned, locked board configured for the lab broker.
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from sbd_harness.checks.online import board_address, locked_device_id, reset_board, serial_tail, wait_online
from sbd_harness.device.contract import ONLINE_TIMEOUT_S, topics
from sbd_harness.lab.client_hello import ClientHelloError, parse
from sbd_harness.lab.first_contact import FirstContact, connect_fields, remember, remembered
from sbd_harness.lab.watch import Watcher


def _first_contact(mode: str, board, broker, ca) -> FirstContact:
    """The device's first connection after a reset, at a stand-in of the given mode; the lab
    broker is back afterwards (the device reconnects to it after its backoff)."""
    broker.stop()
    try:
        with FirstContact(mode, ca, broker.address, broker.port, board_address(board)) as seen:
            reset_board(board)
            deadline = time.monotonic() + ONLINE_TIMEOUT_S
            while not seen.client_hello and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        broker.start()
    return seen


def _back_online(board, broker, device_id: str) -> None:
    """The device at the lab broker again, as the next check expects it (no second reset: the
    device tries again by itself after its first, short backoff)."""
    topic = topics(device_id)
    with Watcher(broker, topic.state) as w:
        wait_online(board, w, topic, reset=False, ready=False)


@pytest.mark.sbd_check(
    id="tls-client-offers-strong-crypto",
    title="The device's ClientHello offers TLS 1.2 or newer, only suites with forward secrecy and AEAD, and no "
          "SHA-1 or MD5 signatures; it refuses a broker with a valid certificate that accepts only weak suites")
def check_tls_client_offer(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    seen = _first_contact("weak-suites", sbd_board, sbd_broker, sbd_ca)
    sbd_evidence["attempts_at_stand_in"] = seen.attempts
    assert seen.client_hello, ("the device sent no ClientHello to the stand-in at its broker's address within "
                               f"{ONLINE_TIMEOUT_S} s{serial_tail(sbd_board)}")
    try:
        hello = parse(seen.client_hello)
    except ClientHelloError as exc:
        raise AssertionError(f"the device's first bytes are not a ClientHello: {exc}") from None
    offered: dict[str, Any] = hello.summary()
    sbd_evidence["client_hello"] = offered
    sbd_evidence["weak_suite_broker"] = {"handshake_completed": seen.handshake, "cipher": seen.cipher,
                                         "mqtt_bytes_sent_by_device": len(seen.received)}
    problems = hello.problems()
    if seen.handshake:
        problems.append(f"it completed a handshake with a broker that accepts only weak suites ({seen.cipher})"
                        + (" and sent it MQTT" if seen.received else ""))
    assert not problems, "the device's TLS client " + "; ".join(problems)
    _back_online(sbd_board, sbd_broker, device_id)


@pytest.mark.sbd_check(
    id="mqtt-connect-has-no-password",
    title="The device's MQTT CONNECT carries no password: it authenticates with its certificate alone")
def check_connect_without_password(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    kept = remembered(sbd_broker, device_id)
    if kept and kept.get("connect"):
        connect, source = kept["connect"], "the hostile broker's first connection in this run"
    else:
        seen = _first_contact("mqtt", sbd_board, sbd_broker, sbd_ca)
        remember(sbd_broker, device_id, seen.client_hello, seen.connect)
        connect, source = seen.connect, "a lab-CA stand-in for the broker, after a reset"
        if connect is not None:
            _back_online(sbd_board, sbd_broker, device_id)
    sbd_evidence["seen_at"] = source
    assert connect is not None, (f"the device sent no MQTT CONNECT to a lab-CA broker at its address within "
                                 f"{ONLINE_TIMEOUT_S} s{serial_tail(sbd_board)}")
    try:
        fields = connect_fields(connect)
    except (IndexError, ValueError) as exc:
        raise AssertionError(f"the device's CONNECT does not parse: {exc}") from None
    sbd_evidence["connect"] = fields
    assert fields["protocol"] == "MQTT" and fields["level"] == 4, f"not an MQTT 3.1.1 CONNECT: {fields}"
    assert not fields["password_flag"], (
        f"the device's CONNECT carries a password ({fields.get('password_length')} bytes"
        + (f", user name {fields['username']!r}" if fields.get("username_flag") else "") + ")")
    assert not fields["bytes_after_fields"], (
        f"the device's CONNECT has {fields['bytes_after_fields']} bytes after its declared fields")
