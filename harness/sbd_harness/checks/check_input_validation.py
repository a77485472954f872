"""Commands: on the serial console and on the MQTT command topic, only a
command signed by the lab CA for this device is accepted; forged, replayed,
misdirected, malformed and out-of-range ones are refused and change nothing."""
from __future__ import annotations

import tempfile
import time

import pytest

from sbd_harness.checks.common import boot_line_or_skip
from sbd_harness.checks.online import FastTelemetry, locked_device_id, signed_command, wait_online
from sbd_harness.device.contract import COMMAND_TIMEOUT_S, topics
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.watch import Watcher, on_topic


OVERSIZED_DEFAULT = 1100  # the parts of an over-long command line: just past the 1024-byte limit


@pytest.mark.sbd_check(
    id="commands-need-a-valid-signature",
    title="Forged, replayed, misdirected or malformed commands are refused and change nothing")
def check_commands_authenticated(sbd_board, sbd_boot, sbd_ca, sbd_evidence, sbd_soak):
    boot = boot_line_or_skip(sbd_boot)
    if boot.get("security", {}).get("console") != "locked":
        pytest.skip("commands are served by the locked firmware")
    device_id, cert = boot["device_id"], boot["security"].get("cert_sha256")
    with tempfile.TemporaryDirectory() as tmp:
        rogue = LabCA(tmp)
        rogue.init("rogue CA")
        forged = rogue.sign_payload({"cmd": "status", "device": device_id, "cert": cert, "seq": 2**30})
    body = {"device": device_id, "cert": cert, "seq": 2**30}
    # Harmless commands only: a device that wrongly accepts one must not wipe itself.
    must_refuse = {
        "forged": forged,
        "other-device": sbd_ca.sign_payload(dict(body, cmd="status", device="0000deadbeef")),
        "earlier-certificate": sbd_ca.sign_payload(dict(body, cmd="status", cert="00" * 32)),
        "unknown-command": sbd_ca.sign_payload(dict(body, cmd="shell")),
        "bad-args": sbd_ca.sign_payload(dict(body, cmd="status", args={"x": 1})),
        "malformed": "SBD-CMD not-base64!! ???",
        # Past the firmware's 1024-byte line limit (MAX_LINE); the soak tier sends three times it.
        "oversized": "SBD-CMD " + "A" * (3000 if sbd_soak else OVERSIZED_DEFAULT) + " B",
    }
    replies = {}
    for name, line in must_refuse.items():
        replies[name] = sbd_board.console_request(line)
        if replies[name].get("ok"):
            break
    else:
        good = sbd_ca.sign_command(device_id, "status")
        replies["valid"] = sbd_board.console_request(good)
        replies["replayed"] = sbd_board.console_request(good)
        replies["still-serving"] = sbd_board.console_request(sbd_ca.sign_command(device_id, "status"))
    sbd_evidence["replies"] = replies
    accepted = [n for n in replies if n in must_refuse or n == "replayed" if replies[n].get("ok")]
    assert not accepted, f"accepted what it must refuse: {accepted}"
    assert replies["valid"].get("ok"), f"a valid signed command was refused: {replies['valid']}"
    assert replies["still-serving"].get("ok"), "the device stopped serving commands after the refused ones"


INVALID_COMMANDS = [
    "", "SBD-CMD", "SBD-CMD a", "SBD-CMD a b c", "SBD-CMD !!!! ****", "SBD-CMD AAAA AAAA",
    "SBD-CMD " + "A" * 1000 + " AAAA", "HELLO", "\x00\xff\xfe", "{\"cmd\": \"status\"}",
    "SBD-CMD e30= " + "A" * 88, "sbd-cmd e30= AAAA",
]


@pytest.mark.sbd_check(
    id="invalid-commands-refused-over-mqtt",
    title="Malformed, forged, misdirected and out-of-range commands on the command topic each get an "
          "error result and change nothing; valid ones still work")
def check_invalid_commands(sbd_board, sbd_boot, sbd_broker, sbd_ca, sbd_evidence):
    device_id = locked_device_id(sbd_boot)
    topic = topics(device_id)
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
    with Watcher(sbd_broker, topic.all) as w:
        wait_online(sbd_board, w, topic)
        for payload in payloads:
            w.publish(topic.cmd, payload)
        replies = w.collect(on_topic(topic.result), len(payloads), timeout=2 * COMMAND_TIMEOUT_S)
        status = signed_command(w, sbd_ca, device_id, "status")
        # A valid command that changes something (a reading a second, restored after), and
        # telemetry still flowing at that pace.
        with FastTelemetry(w, sbd_ca, device_id, required=False) as fast:
            since = time.monotonic()
            telemetry = w.collect(lambda m: m.topic == topic.telemetry and m.at >= since, 1,
                                  timeout=10 if fast.active else 45)
    bodies = [r.json() for r in replies]
    accepted = [b for b in bodies if not isinstance(b, dict) or b.get("ok") is not False]
    sbd_evidence.update({"sent": len(payloads), "error_results": len(bodies) - len(accepted),
                         "errors": sorted({str(b.get("error")) for b in bodies if isinstance(b, dict)}),
                         "status_after": status, "set_interval_after": fast.active})
    assert not accepted, f"invalid commands were accepted: {accepted[:5]}"
    assert len(bodies) == len(payloads), f"{len(payloads) - len(bodies)} invalid commands got no error result"
    assert status and status.get("ok"), f"a valid signed command failed after the invalid ones: {status}"
    assert telemetry, "telemetry stopped after the invalid commands"
