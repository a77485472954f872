"""The lab CA does not trust the device ID a board reports: only the firmware's
form, never a path built from it, never a lab identity's name, and no second
valid certificate for an ID unless the caller asks to re-issue; lab identities
cannot be taken for devices; revocation dates survive a CRL refresh.

A board that lies is played by `LyingBoard`: it answers `sbd provision` as
the firmware does, with a key of its own, but reports whatever unique ID it
is given."""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import re
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sbd_harness.boards.serial_board import SerialBoard
from sbd_harness.errors import SbdError
from sbd_harness.identity import pki
from sbd_harness.identity.pki import LabCA, PKIError
from sbd_harness.identity.provisioning import MUD_URL_CODE, UNIQUE_ID_CODE, provision

VICTIM = "aabbccddeeff"


def _csr(cn: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    req = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256())
    return req.public_bytes(serialization.Encoding.DER)


class LyingBoard(SerialBoard):
    """A board on a serial port that reports `reported_id` as machine.unique_id() in hex and
    otherwise answers provisioning as the firmware does. `ran` is every piece of code it was sent."""

    def __init__(self, reported_id: str):
        super().__init__("/dev/null", name=f"liar-{reported_id[:12]}")
        self.reported_id = reported_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.ran: list[str] = []

    @contextlib.contextmanager
    def session(self, soft_reset: bool = False) -> Iterator[None]:
        yield None

    def _exec(self, t: object, code: str, timeout: float = 10) -> str:  # type: ignore[override]
        self.ran.append(code)
        if code == UNIQUE_ID_CODE:
            return self.reported_id + "\n"
        if "state.summary()" in code:
            return "False\n"
        if "provisioning.request()" in code:
            return "CSR " + base64.b64encode(_csr(self.reported_id, self.key)).decode() + "\n"
        if code == MUD_URL_CODE:
            return "MUD -\n"
        if "provisioning.install(" in code:
            cert = base64.b64decode(re.search(r"install\('([A-Za-z0-9+/=]+)'", code).group(1))
            return "INSTALLED " + hashlib.sha256(cert).hexdigest() + "\n"
        return ""


@pytest.fixture
def lab(tmp_path) -> LabCA:
    ca = LabCA(tmp_path / "pki")
    ca.init()
    return ca


def _files(ca: LabCA) -> dict[str, bytes]:
    return {str(p.relative_to(ca.dir.parent)): p.read_bytes() for p in ca.dir.parent.rglob("*") if p.is_file()}


@pytest.mark.parametrize("reported", ["../ca.key", "sbd-monitor", "broker.sbd.lab", "AABBCCDDEEFF",
                                      "aabbccddeef", "aabbccddeeff0", "aabbccddeeff/x", "+", ""])
def test_a_board_reporting_an_id_the_firmware_never_makes_is_refused_before_anything_is_stored(lab, reported):
    board = LyingBoard(reported)
    before = _files(lab)
    with pytest.raises(SbdError) as refused:
        provision(board, lab, lock=False, release_keys=[])
    message = str(refused.value)
    assert "12 lower-case hex digits" in message or "reserved for the lab" in message, message
    assert board.ran == [UNIQUE_ID_CODE], "the harness sent the board more than the ID query"
    assert _files(lab) == before, "the CA wrote something for a board it refused"


def test_the_ca_never_writes_outside_issued_nor_certifies_a_lab_name(lab):
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = lab.key_path.read_bytes()
    for name in ("../ca.key", "../../escaped", "sbd-monitor", "broker.sbd.lab", "AABBCCDDEEFF"):
        with pytest.raises(PKIError, match="firmware's form"):
            lab.issue(_csr(name, key), name)
        with pytest.raises(PKIError):
            lab.issued_certificate(name)
    assert lab.key_path.read_bytes() == ca_key
    assert lab.index()["devices"] == {}
    assert sorted(p.name for p in lab.dir.parent.rglob("*.pem")) == ["ca.cert.pem", "ca.key.pem", "crl.pem"]


def test_an_id_with_a_valid_certificate_gets_no_second_one_from_another_board(lab):
    victim = LyingBoard(VICTIM)
    issued = provision(victim, lab, lock=False, release_keys=[]).issued
    impostor = LyingBoard(VICTIM)  # another board, another key, the victim's ID
    with pytest.raises(PKIError, match="already has a valid certificate.*--reissue"):
        provision(impostor, lab, lock=False, release_keys=[])
    assert len(impostor.ran) == 2, "the impostor was sent more than the ID and state queries"
    entry = lab.index()["devices"][VICTIM]
    assert entry["fingerprint"] == issued.fingerprint and not lab.is_revoked(VICTIM)


def test_a_factory_reset_board_is_reissued_on_request_and_its_old_certificate_revoked(lab):
    first = provision(LyingBoard(VICTIM), lab, lock=False, release_keys=[]).issued
    again = provision(LyingBoard(VICTIM), lab, lock=False, release_keys=[], reissue=True).issued  # a new key
    assert again.fingerprint != first.fingerprint
    assert lab.index()["devices"][VICTIM]["fingerprint"] == again.fingerprint
    crl = x509.load_pem_x509_crl(lab.crl_path.read_bytes())
    assert crl.is_signature_valid(lab.certificate.public_key())
    assert crl.get_revoked_certificate_by_serial_number(first.certificate.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(again.certificate.serial_number) is None
    assert not lab.is_revoked(VICTIM)


def test_an_id_whose_certificate_was_revoked_or_expired_is_certified_again_without_reissue(lab, monkeypatch):
    key = ec.generate_private_key(ec.SECP256R1())
    lab.issue(_csr(VICTIM, key), VICTIM)
    lab.revoke(VICTIM)
    lab.issue(_csr(VICTIM, key), VICTIM)  # revoked: nothing valid left for this ID
    other = "112233445566"
    lab.issue(_csr(other, ec.generate_private_key(ec.SECP256R1())), other, days=1)
    later = pki._now() + dt.timedelta(days=2)
    monkeypatch.setattr(pki, "_now", lambda: later)
    lab.issue(_csr(other, ec.generate_private_key(ec.SECP256R1())), other)  # expired: likewise


def test_lab_identities_carry_the_lab_unit_and_never_a_device_id(lab):
    device = lab.issue(_csr(VICTIM, ec.generate_private_key(ec.SECP256R1())), VICTIM).certificate
    assert device.subject.rfc4514_string() == f"CN={VICTIM}"
    client = x509.load_pem_x509_certificate(lab.issue_client("sbd-monitor")[0])
    server = x509.load_pem_x509_certificate(lab.issue_server("broker.sbd.lab", ["127.0.0.1"])[0])
    assert client.subject.rfc4514_string() == "CN=sbd-monitor,OU=sbd lab identities,O=sbd lab"
    assert server.subject.rfc4514_string() == "CN=broker.sbd.lab,OU=sbd lab identities,O=sbd lab"
    with pytest.raises(PKIError, match="form of a device ID"):
        lab.issue_client(VICTIM)
    with pytest.raises(PKIError, match="cannot name a lab identity"):
        lab.issue_client("CN=x,OU=sbd lab identities")


def test_revocation_dates_survive_a_crl_refresh_and_the_window_moves(lab, monkeypatch):
    real_now = pki._now()
    long_ago = real_now - dt.timedelta(days=40)
    monkeypatch.setattr(pki, "_now", lambda: long_ago)
    lab.issue(_csr(VICTIM, ec.generate_private_key(ec.SECP256R1())), VICTIM)
    serial = lab.index()["devices"][VICTIM]["serial"]
    lab.revoke(VICTIM)  # the CRL is written "long ago": its next update has passed
    assert x509.load_pem_x509_crl(lab.crl_path.read_bytes()).next_update_utc < real_now
    monkeypatch.setattr(pki, "_now", lambda: real_now)
    lab.write_crl()
    crl = x509.load_pem_x509_crl(lab.crl_path.read_bytes())
    assert crl.next_update_utc > real_now + dt.timedelta(days=29)
    revoked = crl.get_revoked_certificate_by_serial_number(serial)
    assert abs(revoked.revocation_date_utc - long_ago) < dt.timedelta(seconds=2), revoked.revocation_date_utc


def test_a_crl_written_before_dates_were_recorded_keeps_its_dates(lab, monkeypatch):
    """An index from before this change lists revoked serials without dates: the CRL on disk has them."""
    real_now = pki._now()
    long_ago = real_now - dt.timedelta(days=10)
    monkeypatch.setattr(pki, "_now", lambda: long_ago)
    lab.issue(_csr(VICTIM, ec.generate_private_key(ec.SECP256R1())), VICTIM)
    lab.revoke(VICTIM)
    index = lab.index()
    index.pop("revoked_at")
    lab._write_index(index)
    monkeypatch.setattr(pki, "_now", lambda: real_now)
    lab.write_crl()
    lab.write_crl()
    serial = lab.index()["devices"][VICTIM]["serial"]
    date = x509.load_pem_x509_crl(lab.crl_path.read_bytes()).get_revoked_certificate_by_serial_number(serial)
    assert abs(date.revocation_date_utc - long_ago) < dt.timedelta(seconds=2)
    assert str(serial) in lab.index()["revoked_at"]
