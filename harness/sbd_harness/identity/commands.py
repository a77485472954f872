"""Signed operator commands, for the identity on record and with the device's challenge.

A signed command is only as safe as the choice of what to sign. The harness never signs for the
device ID a board claims: it signs for the identity on record (the ID the operator names, or an
emulated board's own hardware ID, with the certificate the lab CA issued for it), asks the board
for a challenge, and refuses when the board's answer names another device or another certificate.
A board that claims a victim's ID would otherwise be handed a valid command for the victim.

The challenge is the freshness proof (firmware: sbd/commands.py): a random nonce the device hands
out, keeps in RAM and accepts once. `unlock_console` and `factory_reset` must carry it, so a
command signed earlier and held back, or signed before the device last reset, is refused.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sbd_harness.boards.base import Board, BoardError
from sbd_harness.device.contract import CHALLENGE_REQUEST, COMMAND_TIMEOUT_S, is_command_result, topics
from sbd_harness.errors import SbdError
from sbd_harness.identity.pki import LabCA

if TYPE_CHECKING:
    from sbd_harness.lab.watch import Watcher


class CommandTargetError(SbdError):
    """The board is not the device on record, or gave no challenge: nothing was signed."""


def recorded_device_id(board: Board, device_id: str | None) -> str:
    """The device ID to sign for: an emulated board's own hardware ID (its record, which the
    firmware cannot change), or the one the operator gives; never what the board says of itself.
    A real board on a serial port has no record here, so its ID must be given."""
    from sbd_harness.boards.emulated import EmulatedBoard
    if isinstance(board, EmulatedBoard):
        recorded = str(board.conf["unique_id"])
        if device_id is not None and device_id != recorded:
            raise CommandTargetError(f"emulated board {board.name} is device {recorded}, not {device_id}")
        return recorded
    if device_id is None:
        raise CommandTargetError(f"give the device ID of the board on {board.name} (--device ID): a command is "
                                 "signed for the device on record, never for the ID a board claims")
    return device_id


def certified_fingerprint(ca: LabCA, device_id: str) -> str:
    """The SHA-256 of the certificate the lab CA issued for `device_id` (the identity on record)."""
    entry = ca.index()["devices"].get(device_id)
    if entry is None:
        raise CommandTargetError(f"the lab CA in {ca.dir} issued no certificate for {device_id}: not a device "
                                 "of this CA")
    if ca.is_revoked(device_id):
        raise CommandTargetError(f"the certificate of {device_id} is revoked: no command is signed for it")
    return str(entry["fingerprint"])


def check_challenge(reply: dict[str, Any] | None, device_id: str, fingerprint: str, where: str) -> str:
    """The nonce of a challenge answer, once the answer shows the device on record."""
    if not reply or not reply.get("ok") or reply.get("cmd") != "challenge" or not isinstance(reply.get("nonce"), str):
        raise CommandTargetError(f"{where} handed out no challenge: {reply} (firmware without challenges?)")
    claimed = reply.get("device")
    if claimed != device_id:
        raise CommandTargetError(f"{where} says it is device {claimed}, but the command is for {device_id}, the "
                                 "device on record: refusing to sign (is the right board connected?)")
    if reply.get("cert") != fingerprint:
        raise CommandTargetError(f"{where} holds certificate {reply.get('cert')}, not the one the lab CA issued "
                                 f"to {device_id} ({fingerprint}): refusing to sign")
    return str(reply["nonce"])


def console_command(board: Board, ca: LabCA, device_id: str, name: str, args: dict[str, Any] | None = None,
                    follow: str | None = None) -> dict[str, Any]:
    """Sends `name` on the board's console, signed for `device_id` with the challenge the board just
    handed out (every command gets one: the answer is also how the board's identity is compared
    with the record before anything is signed). The board's answer."""
    fingerprint = certified_fingerprint(ca, device_id)
    try:
        reply = board.console_request(CHALLENGE_REQUEST, timeout=COMMAND_TIMEOUT_S)
    except BoardError as exc:
        raise CommandTargetError(f"the board on {board.name} handed out no challenge ({exc}): is it locked, "
                                 "and does its firmware hand out challenges?") from exc
    nonce = check_challenge(reply, device_id, fingerprint, f"the board on {board.name}")
    return board.console_request(ca.sign_command(device_id, name, args, challenge=nonce), follow=follow)


def mqtt_challenge(watcher: "Watcher", ca: LabCA, device_id: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """The device's challenge, asked for on its command topic (a lab Watcher on its topics)."""
    topic = topics(device_id)
    fingerprint = certified_fingerprint(ca, device_id)
    deadline = time.monotonic() + timeout
    watcher.publish(topic.cmd, CHALLENGE_REQUEST)
    reply = watcher.wait_for(is_command_result(topic, "challenge"), max(deadline - time.monotonic(), 0.01))
    return check_challenge(reply.json() if reply else None, device_id, fingerprint, f"device {device_id} (MQTT)")
