"""Commands: on the serial console and on the MQTT command topic, only a
command signed by the lab CA for this device is accepted; forged, replayed,
held-back (signed without the device's current challenge, or before its last
reset), misdirected, malformed and out-of-range ones are refused and change
nothing."""
from __future__ import annotations

import tempfile
import time

import pytest

from sbd_harness.boards.base import BoardError
from sbd_harness.checks.common import boot_line_or_skip
from sbd_harness.checks.online import FastTelemetry, locked_device_id, signed_command, wait_online
from sbd_harness.device.contract import CHALLENGE_REQUEST, COMMAND_TIMEOUT_S, topics
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.watch import Watcher, on_topic


OVERSIZED_DEFAULT = 1100  # the parts of an over-long command line: just past the 1024-byte limit


@pytest.mark.sbd_check(
    id="commands-need-a-valid-signature",
    title="Forged, replayed, held-back, misdirected or malformed commands are refused and change nothing")
def check_commands_authenticated(sbd_board, sbd_boot, sbd_ca, sbd_evidence, sbd_soak):
    boot = boot_line_or_skip(sbd_boot)
    if boot.get("security", {}).get("console") != "locked":
        pytest.skip("commands are served by the locked firmware")
    device_id, cert = boot["device_id"], boot["security"].get("cert_sha256")
    with tempfile.TemporaryDirectory() as tmp:
        rogue = LabCA(tmp)
        rogue.init("rogue CA")
        # A sequence number the lab CA gives up: a device that wrongly obeys the forged command
        # does not move its counter past the CA's (the checks after this one sign with it).
        forged = rogue.sign_payload({"cmd": "status", "device": device_id, "cert": cert,
                                     "seq": sbd_ca.reserve_seq(device_id)})
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
        replies.update(_stale_commands(sbd_board, sbd_ca, device_id))
    sbd_evidence["replies"] = replies
    accepted = [n for n in replies if n in must_refuse or n in STALE if replies[n].get("ok")]
    assert not accepted, f"accepted what it must refuse: {accepted}"
    assert replies["valid"].get("ok"), f"a valid signed command was refused: {replies['valid']}"
    assert replies["still-serving"].get("ok"), "the device stopped serving commands after the refused ones"
    assert replies["fresh"].get("ok"), f"a command with the device's current challenge was refused: {replies['fresh']}"


# Each an unlock_console with the highest sequence number yet, so only its freshness can stop it.
STALE = ("replayed", "held-back", "earlier-challenge", "across-reboot")


def _stale_commands(board, ca: LabCA, device_id: str) -> dict[str, dict]:
    """unlock_console signed without the device's current challenge: signed before the challenge
    (held back), for the challenge before it, or before the device's last reset. A device that
    accepts one unlocks its console and resets; it is locked again here, for the checks after."""
    replies: dict[str, dict] = {}

    def challenge() -> str:
        try:
            reply = board.console_request(CHALLENGE_REQUEST, timeout=COMMAND_TIMEOUT_S)
        except BoardError:
            reply = None
        assert reply and reply.get("ok") and isinstance(reply.get("nonce"), str), \
            f"the device hands out no challenge: {reply}"
        return reply["nonce"]

    for name in ("held-back", "earlier-challenge"):
        if name == "held-back":
            line = ca.sign_command(device_id, "unlock_console")  # signed, kept, sent later
        else:
            line = ca.sign_command(device_id, "unlock_console", challenge=challenge())
            challenge()  # the operator's next request: the device now holds one the line does not carry
        replies[name] = board.console_request(line)
        if replies[name].get("ok"):
            _lock_again(board)
            return replies
    line = ca.sign_command(device_id, "unlock_console", challenge=challenge())
    board.reset("hard")
    replies["across-reboot"] = board.console_request(line)
    if replies["across-reboot"].get("ok"):
        _lock_again(board)
        return replies
    replies["fresh"] = board.console_request(ca.sign_command(device_id, "status", challenge=challenge()))
    return replies


def _lock_again(board) -> None:
    """After a wrongly accepted unlock_console the device resets into the REPL: lock it again
    (the check fails anyway; the checks after it expect the locked board they were given)."""
    try:
        board.exec("from sbd import store, state\nstore.put_int(state.LOCKED, 1)")
        board.reset("hard")
    except BoardError:
        pass  # a board left unlocked shows in console-locked


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
        forged = rogue.sign_payload(dict(body, cmd="status", seq=sbd_ca.reserve_seq(device_id)))  # as above
    payloads = INVALID_COMMANDS + [forged] + [sbd_ca.sign_payload(b) for b in signed]
    with Watcher(sbd_broker, topic.all) as w:
        wait_online(sbd_board, w, topic, reuse=True)
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
