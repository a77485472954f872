"""Attestation, host side (sbd_harness.identity.attest): the verifier takes a valid
statement and refuses every kind of bad one; the comparison with a build
finds missing, changed and extra files. No board: statements are made here
the way the firmware makes them (firmware/lib/sbd/attest.py), signed with a
device key the test's CA certified. tests/test_attest_board.py runs it
against emulated boards."""
from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sbd_harness.identity import attest
from sbd_harness.identity.attest import AttestationError, AttestedFile
from sbd_harness.boards.base import BoardError
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.identity.pki import LabCA

DEVICE = "240ac4010203"
NONCE = "00112233445566778899aabbccddeeff"
BUILD = {"/boot.py": b"# boot\n", "/main.py": b"# main\n", "/lib/sbd/__init__.mpy": b"M\x06init",
         "/lib/sbd/app.mpy": b"M\x06app"}


def _entry(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture
def lab(tmp_path) -> tuple[LabCA, ec.EllipticCurvePrivateKey, str]:
    """A CA, a device key it certified for DEVICE, and that certificate's SHA-256."""
    ca = LabCA(tmp_path / "pki")
    ca.init()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, DEVICE)])).sign(key, hashes.SHA256())
    issued = ca.issue(csr.public_bytes(serialization.Encoding.DER), DEVICE)
    return ca, key, issued.fingerprint


def statement(cert: str, **changes: Any) -> dict[str, Any]:
    body = {"format": "sbd-attest-1", "device_id": DEVICE, "nonce": NONCE, "cert_sha256": cert,
            "model": "sbd-reference-esp32", "fw_version": "0.1.0", "profile": "reference", "slot": "factory",
            "counter": 2, "files": {path: _entry(data) for path, data in BUILD.items()}}
    body.update(changes)
    return body


def encode(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def reply(data: bytes, signature: bytes, **changes: Any) -> dict[str, Any]:
    out = {"sbd": "cmd", "ok": True, "cmd": "attest", "seq": 5,
           "statement": base64.b64encode(data).decode(), "signature": base64.b64encode(signature).decode()}
    out.update(changes)
    return out


def refused(ca: LabCA, answer: dict[str, Any], match: str, device: str = DEVICE, nonce: str = NONCE) -> str:
    with pytest.raises(AttestationError, match=match) as info:
        attest.verify_reply(answer, ca, device, nonce)
    return str(info.value)


def test_a_valid_statement_is_accepted_as_signed(lab):
    ca, key, cert = lab
    data = encode(statement(cert))
    att = attest.verify_reply(reply(data, sign(key, data)), ca, DEVICE, NONCE)
    assert (att.device_id, att.slot, att.version, att.counter, att.cert_sha256) == (DEVICE, "factory", "0.1.0", 2,
                                                                                     cert)
    assert att.files == {p: AttestedFile(len(d), hashlib.sha256(d).hexdigest()) for p, d in BUILD.items()}
    assert att.statement == data and att.nonce == NONCE


def test_a_statement_with_another_nonce_is_refused(lab):
    # what an attacker could replay: a genuine statement, signed, from an earlier request
    ca, key, cert = lab
    old = encode(statement(cert, nonce="ffeeddccbbaa99887766554433221100"))
    message = refused(ca, reply(old, sign(key, old)), "wrong nonce")
    assert "ffeeddccbbaa99887766554433221100" in message and NONCE in message


def test_a_statement_signed_by_another_key_is_refused(lab):
    ca, _, cert = lab
    data = encode(statement(cert))
    refused(ca, reply(data, sign(ec.generate_private_key(ec.SECP256R1()), data)), "bad signature.*another key")


def test_a_tampered_statement_is_refused(lab):
    ca, key, cert = lab
    data = encode(statement(cert))
    sig = sign(key, data)
    # a changed file hash, a dropped file, an extra byte: each after signing
    changed = data.replace(hashlib.sha256(BUILD["/main.py"]).hexdigest().encode(), b"0" * 64)
    dropped = encode(statement(cert, files={p: _entry(d) for p, d in BUILD.items() if p != "/main.py"}))
    for tampered in (changed, dropped, data + b" ", data[:-1]):
        assert tampered != data
        refused(ca, reply(tampered, sig), "bad signature")
    flipped = bytearray(sig)
    flipped[40] ^= 1
    refused(ca, reply(data, bytes(flipped)), "bad signature")
    refused(ca, reply(data, sig[:63]), "bad signature: 63 bytes")


@pytest.mark.parametrize("device_id", ["240AC4010203", "240ac401020", "240ac40102033", "240ac401020g",
                                       " 40ac4010203", "0x0ac4010203", "../../../x"])
def test_a_device_id_of_the_wrong_form_is_refused(lab, device_id):
    ca, key, cert = lab
    data = encode(statement(cert, device_id=device_id))
    refused(ca, reply(data, sign(key, data)), "is not 12 lower-case hex digits")  # in the statement
    with pytest.raises(AttestationError, match="is not 12 lower-case hex digits"):  # or asked for
        attest.verify_reply(reply(data, sign(key, data)), ca, device_id, NONCE)
    with pytest.raises(AttestationError, match="is not 12 lower-case hex digits"):
        attest.attest_command(ca, device_id, NONCE)


def test_a_statement_for_another_device_or_certificate_is_refused(lab):
    ca, key, cert = lab
    other = encode(statement(cert, device_id="240ac4010204"))
    refused(ca, reply(other, sign(key, other)), "is for device 240ac4010204, the command was for 240ac4010203")
    old_cert = encode(statement("ab" * 32))
    refused(ca, reply(old_cert, sign(key, old_cert)), "names certificate abab")
    # a device the CA never certified: nothing to check the signature with
    refused(ca, reply(other, sign(key, other)), "issued no certificate for device 240ac4010204",
            device="240ac4010204")


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("counter"), r"missing fields \['counter'\]"),
    (lambda s: (s.pop("files"), s.pop("slot")), r"missing fields \['slot', 'files'\]"),
    (lambda s: s.update(extra=1), r"unknown fields \['extra'\]"),
    (lambda s: s.update(counter="2"), "counter is not a int"),
    (lambda s: s.update(counter=True), "counter is not a int"),
    (lambda s: s.update(counter=-1), "negative security counter"),
    (lambda s: s.update(slot="c"), "slot 'c' is none of"),
    (lambda s: s.update(format="sbd-attest-2"), "format 'sbd-attest-2'"),
    (lambda s: s.update(cert_sha256="AB" * 32), "cert_sha256 is not a SHA-256"),
    (lambda s: s.update(files=[]), "files is not a dict"),
    (lambda s: s["files"].update({"lib/x.mpy": _entry(b"x")}), "file entry 'lib/x.mpy'"),
    (lambda s: s["files"].update({"/x.mpy": {"size": 1}}), "file entry '/x.mpy'"),
    (lambda s: s["files"].update({"/x.mpy": {"size": -1, "sha256": "0" * 64}}), "file entry '/x.mpy'"),
    (lambda s: s["files"].update({"/x.mpy": {"size": 1, "sha256": "0" * 63}}), "file entry '/x.mpy'"),
])
def test_a_signed_statement_with_missing_or_malformed_fields_is_refused(lab, change, match):
    ca, key, cert = lab
    body = statement(cert)
    change(body)
    data = encode(body)
    refused(ca, reply(data, sign(key, data)), "malformed statement: " + match)


def test_a_signed_statement_that_is_not_a_json_object_is_refused(lab):
    ca, key, cert = lab
    for data in (b"not json", b"[1, 2]", b"\xff\xfe{}"):
        refused(ca, reply(data, sign(key, data)), "malformed statement")
    refused(ca, reply(b"", sign(key, b"")), "malformed reply: no statement")


def test_a_refusal_or_a_malformed_reply_is_said_as_such(lab):
    ca, key, cert = lab
    data = encode(statement(cert))
    sig = sign(key, data)
    refused(ca, {"sbd": "cmd", "ok": False, "error": "bad args"}, "refused the attest command: bad args")
    refused(ca, reply(data, sig, cmd="status"), "answered 'status', not attest")
    refused(ca, reply(data, sig, statement="not base64!"), "the statement is not base64")
    refused(ca, {k: v for k, v in reply(data, sig).items() if k != "signature"}, "no signature")
    refused(ca, {"sbd": "boot"}, "malformed reply")


class FakeBoard:
    """A locked board's console: signs whatever nonce the command carries, as the firmware does."""

    name = "fake"

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: str, silent: bool = False):
        self.key, self.cert, self.silent, self.lines = key, cert, silent, []

    def console_request(self, line: str, reply_key: str = "cmd", timeout: float = 20) -> dict:
        self.lines.append(line)
        if self.silent:
            raise BoardError("no answer from fake within 20s: b''")
        payload = json.loads(base64.b64decode(line.split()[1]))
        data = encode(statement(self.cert, nonce=payload["args"]["nonce"]))
        return reply(data, sign(self.key, data), seq=payload["seq"])


def test_attest_sends_a_fresh_signed_command_and_verifies_the_answer(lab):
    ca, key, cert = lab
    board = FakeBoard(key, cert)
    first, second = attest.attest(board, ca, DEVICE), attest.attest(board, ca, DEVICE)
    assert first.nonce != second.nonce and len(first.nonce) == 32
    payloads = [json.loads(base64.b64decode(line.split()[1])) for line in board.lines]
    assert [p["cmd"] for p in payloads] == ["attest", "attest"]
    assert payloads[1]["seq"] == payloads[0]["seq"] + 1  # the CA's counter: never a replay
    assert payloads[0]["args"] == {"nonce": first.nonce} and payloads[0]["cert"] == cert
    with pytest.raises(AttestationError, match="fake did not answer the attest command"):
        attest.attest(FakeBoard(key, cert, silent=True), ca, DEVICE)


def _attestation(files: dict[str, bytes], slot: str = "factory") -> attest.Attestation:
    return attest.Attestation(DEVICE, slot, "0.1.0", 0, "ab" * 32,
                              {p: AttestedFile(len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items()},
                              "sbd-reference-esp32", "reference", NONCE, b"", b"")


def test_the_attested_files_are_compared_with_the_build():
    bundle = FirmwareBundle(dict(BUILD))
    same = attest.compare_with_bundle(_attestation(BUILD), bundle)
    assert same.ok and (same.missing, same.changed, same.extra) == ([], [], [])
    board = dict(BUILD)
    del board["/main.py"]
    board["/lib/sbd/app.mpy"] = b"M\x06app, changed"
    board["/sbd/__init__.py"] = b"__path__ = '/lib/sbd'\n"   # shadows /lib/sbd
    board["/lib/sbd/stray.mpy"] = b"M\x06left over"
    board["/data/x.mpy"] = b"M\x06"
    diff = attest.compare_with_bundle(_attestation(board), bundle)
    assert not diff.ok
    assert diff.missing == ["/main.py"] and diff.changed == ["/lib/sbd/app.mpy"]
    assert diff.extra == ["/data/x.mpy", "/lib/sbd/stray.mpy", "/sbd/__init__.py"]
    # same content, another size on record: changed too
    sized = _attestation(BUILD)
    sized.files["/boot.py"] = AttestedFile(99, sized.files["/boot.py"].sha256)
    assert attest.compare_with_bundle(sized, bundle).changed == ["/boot.py"]


def test_on_a_running_update_its_slot_is_the_image_compared():
    bundle = FirmwareBundle(dict(BUILD))
    factory = {"/lib/sbd/__init__.mpy": b"M\x06init", "/lib/sbd/app.mpy": b"M\x06app 0.0.9"}
    board = {"/boot.py": BUILD["/boot.py"], "/main.py": BUILD["/main.py"], **factory,
             "/ota/slot_b/manifest.json": b"{}", "/ota/slot_b/manifest.sig": b"sig",
             "/ota/slot_b/lib/sbd/__init__.mpy": BUILD["/lib/sbd/__init__.mpy"],
             "/ota/slot_b/lib/sbd/app.mpy": BUILD["/lib/sbd/app.mpy"],
             "/ota/slot_a/lib/sbd/app.mpy": b"M\x06the release before"}
    diff = attest.compare_with_bundle(_attestation(board, slot="b"), bundle)
    assert diff.ok, diff
    assert diff.inactive == ["/ota/slot_a/lib/sbd/app.mpy"]
    assert diff.not_compared == ["/lib/sbd/__init__.mpy", "/lib/sbd/app.mpy"]
    board["/ota/slot_b/lib/sbd/app.mpy"] = b"M\x06changed in the slot"
    board["/ota/slot_b/evil.py"] = b"x"
    diff = attest.compare_with_bundle(_attestation(board, slot="b"), bundle)
    assert diff.changed == ["/lib/sbd/app.mpy"] and diff.extra == ["/ota/slot_b/evil.py"]
    # the same board, said to run its factory image: /lib is the image, and no running image owns
    # what is in /ota (the firmware keeps no update then; a flash or a factory reset erases them)
    diff = attest.compare_with_bundle(_attestation(board), bundle)
    assert diff.changed == ["/lib/sbd/app.mpy"] and not diff.inactive and not diff.ok
    assert diff.stale == sorted(p for p in board if p.startswith("/ota/")), diff


def test_every_file_outside_the_build_counts_but_the_devices_own_data():
    bundle = FirmwareBundle(dict(BUILD))
    board = {**BUILD, "/rollback_floor": b"3", "/data/outbox/00000001.log": b"telemetry"}
    assert attest.compare_with_bundle(_attestation(board), bundle).ok
    board.update({"/notes.txt": b"no module", "/lib/sbd/ca.der": b"0\x82", "/ota/slot_a/manifest.json": b"{}"})
    diff = attest.compare_with_bundle(_attestation(board), bundle)
    assert (diff.extra, diff.stale) == (["/lib/sbd/ca.der", "/notes.txt"], ["/ota/slot_a/manifest.json"])
    assert "stale updates ['/ota/slot_a/manifest.json']" in diff.summary()


def test_the_running_slot_is_read_from_sys_path():
    assert attest.running_slot([".frozen", "/lib"]) == "factory"
    assert attest.running_slot(["/ota/slot_b/lib", ".frozen", "/lib"]) == "b"
    assert attest.running_slot(["/ota/slot_bb/lib", "/ota/slot_a/libx"]) == "factory"
