"""`sbd command` signs for the device on record, never for the ID the board on the port claims,
and every command it sends carries the challenge the board just handed out."""
from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sbd_harness.boards.serial_board import SerialBoard
from sbd_harness.cli import main
from sbd_harness.device.contract import CHALLENGE_REQUEST
from sbd_harness.identity.commands import CommandTargetError, console_command, mqtt_challenge, recorded_device_id
from sbd_harness.identity.pki import LabCA

VICTIM = "a0b1c2d3e4f5"
MALLORY = "a2aaaaaaaaaa"
NONCE = "00112233445566778899aabbccddeeff"


def _issue(ca: LabCA, device_id: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])).sign(key, hashes.SHA256()))
    return ca.issue(csr.public_bytes(serialization.Encoding.DER), device_id).fingerprint


@pytest.fixture
def ca(tmp_path) -> LabCA:
    ca = LabCA(tmp_path / "pki")
    ca.init()
    return ca


class ClaimingBoard(SerialBoard):
    """A board on a serial port that answers a challenge request in the name of `device`/`cert`
    and accepts every signed line; it keeps every line it was sent (no port is opened)."""

    def __init__(self, device: str, cert: str):
        super().__init__("/dev/ttyFAKE")
        self.device, self.cert = device, cert
        self.sent: list[str] = []

    def console_request(self, line: str, reply_key: str = "cmd", timeout: float = 20,
                        follow: str | None = None) -> dict[str, Any]:
        self.sent.append(line)
        if line == CHALLENGE_REQUEST:
            return {"sbd": "cmd", "ok": True, "cmd": "challenge", "device": self.device, "cert": self.cert,
                    "nonce": NONCE}
        return {"sbd": "cmd", "ok": True, "cmd": json.loads(base64.b64decode(line.split()[1]))["cmd"]}


def _payloads(board: ClaimingBoard) -> list[dict]:
    return [json.loads(base64.b64decode(line.split()[1])) for line in board.sent if line.startswith("SBD-CMD ")]


def test_the_command_carries_the_challenge_the_board_just_handed_out(ca):
    fingerprint = _issue(ca, VICTIM)
    board = ClaimingBoard(VICTIM, fingerprint)
    assert console_command(board, ca, VICTIM, "unlock_console")["ok"]
    assert board.sent[0] == CHALLENGE_REQUEST
    assert _payloads(board) == [{"cmd": "unlock_console", "device": VICTIM, "cert": fingerprint, "seq": 1,
                                 "challenge": NONCE}]


def test_a_board_that_claims_another_device_gets_nothing_signed(ca):
    victim_cert = _issue(ca, VICTIM)
    _issue(ca, MALLORY)
    # The board on the port says it is the victim; the device on record is MALLORY's
    board = ClaimingBoard(VICTIM, victim_cert)
    seq_before = ca.index()["devices"][MALLORY].get("cmd_seq", 0)
    with pytest.raises(CommandTargetError, match=f"says it is device {VICTIM}, but the command is for {MALLORY}"):
        console_command(board, ca, MALLORY, "unlock_console")
    assert board.sent == [CHALLENGE_REQUEST] and _payloads(board) == []
    assert ca.index()["devices"][MALLORY].get("cmd_seq", 0) == seq_before


def test_a_board_with_another_certificate_gets_nothing_signed(ca):
    _issue(ca, VICTIM)
    board = ClaimingBoard(VICTIM, "ee" * 32)  # the right ID, a certificate the CA did not issue it
    with pytest.raises(CommandTargetError, match="not the one the lab CA issued"):
        console_command(board, ca, VICTIM, "factory_reset")
    assert _payloads(board) == []


def test_a_revoked_or_unknown_device_gets_nothing_signed(ca):
    fingerprint = _issue(ca, VICTIM)
    with pytest.raises(CommandTargetError, match="issued no certificate"):
        console_command(ClaimingBoard(MALLORY, fingerprint), ca, MALLORY, "status")
    ca.revoke(VICTIM)
    board = ClaimingBoard(VICTIM, fingerprint)
    with pytest.raises(CommandTargetError, match="revoked"):
        console_command(board, ca, VICTIM, "status")
    assert board.sent == []


def test_a_real_board_needs_the_device_id_on_record(ca):
    board = ClaimingBoard(VICTIM, "ab" * 32)
    with pytest.raises(CommandTargetError, match="--device"):
        recorded_device_id(board, None)
    assert recorded_device_id(board, VICTIM) == VICTIM


def test_sbd_command_refuses_a_board_claiming_another_id(ca, monkeypatch, capsys):
    victim_cert = _issue(ca, VICTIM)
    _issue(ca, MALLORY)
    board = ClaimingBoard(VICTIM, victim_cert)
    monkeypatch.setattr("sbd_harness.cli.identity.target", lambda args: board)
    code = main(["command", "--port", board.name, "unlock_console", "--device", MALLORY, "--pki", str(ca.dir)])
    err = capsys.readouterr().err
    assert code == 2 and f"says it is device {VICTIM}" in err and "refusing to sign" in err, err
    assert _payloads(board) == []
    code = main(["command", "--port", board.name, "unlock_console", "--pki", str(ca.dir)])
    assert code == 2 and "--device" in capsys.readouterr().err
    assert main(["command", "--port", board.name, "unlock_console", "--device", VICTIM,
                 "--pki", str(ca.dir)]) == 0
    assert [p["challenge"] for p in _payloads(board)] == [NONCE]



class ClaimingDevice:
    """The lab broker's view of a device that answers a challenge request on its command topic."""

    def __init__(self, device: str, cert: str):
        self.device, self.cert = device, cert
        self.published: list[tuple[str, str]] = []

    def publish(self, topic: str, payload: str) -> None:
        self.published.append((topic, payload))

    def wait_for(self, match, timeout: float):
        body = {"sbd": "cmd", "ok": True, "cmd": "challenge", "device": self.device, "cert": self.cert, "nonce": NONCE}
        message = SimpleNamespace(topic=f"devices/{self.device}/result", retain=False, json=lambda: body)
        return message if match(message) else None


def test_over_mqtt_the_answer_must_come_from_the_device_on_record(ca):
    fingerprint = _issue(ca, VICTIM)
    device = ClaimingDevice(VICTIM, fingerprint)
    assert mqtt_challenge(device, ca, VICTIM) == NONCE
    assert device.published == [(f"devices/{VICTIM}/cmd", CHALLENGE_REQUEST)]
    with pytest.raises(CommandTargetError, match="not the one the lab CA issued"):
        mqtt_challenge(ClaimingDevice(VICTIM, "ee" * 32), ca, VICTIM)
