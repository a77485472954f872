"""The lab CA: issues device certificates from CSRs, revokes them, signs
operator commands. P-256 keys with `cryptography`; the CA key is written
with owner-only permissions and never leaves the PKI folder.

Provisions served: ETSI EN 303 645 5.1-1, 5.4-4 (a per-device identity
instead of shared credentials), 5.5-8 (credentials managed over their
lifecycle: issue, record, revoke).
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sbd_harness.errors import SbdError
from sbd_harness.identity.names import LAB_ORGANIZATION, LAB_UNIT, device_id_problem, lab_name_problem
from sbd_harness.paths import state_dir

# A broker certificate lives one day: the devices cannot check its revocation (MicroPython's ssl
# has no CRL or OCSP), so a revoked or stolen one is trusted until it expires, and no longer.
BROKER_CERT_DAYS = 1

DEVICE_CERT_DAYS = 825
CA_DAYS = 3650
CRL_DAYS = 30  # the CRL's own window: every write (init, revoke, a broker start) moves its next update


class PKIError(SbdError, ValueError):
    """A CSR or request the CA refuses, with the reason."""


MUD_URL_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.25")  # id-pe-mud-url, RFC 8520 section 10


def mud_url_extension(url: str) -> x509.UnrecognizedExtension:
    """MUDURLSyntax ::= IA5String, an https URL (RFC 8520 sections 3.1 and 10)."""
    if not url.startswith("https://") or len(url) > 2048 or not all(0x21 <= ord(c) <= 0x7E for c in url):
        raise PKIError(f"not a MUD URL (https, printable ASCII, no spaces): {url[:80]!r}")
    raw = url.encode("ascii")
    length = bytes([len(raw)]) if len(raw) < 0x80 else \
        bytes([0x80 | ((len(raw).bit_length() + 7) // 8)]) + len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return x509.UnrecognizedExtension(MUD_URL_OID, b"\x16" + length + raw)


def certificate_mud_url(cert: x509.Certificate) -> str | None:
    """The id-pe-mud-url of a certificate, or None."""
    try:
        value = cert.extensions.get_extension_for_oid(MUD_URL_OID).value
    except x509.ExtensionNotFound:
        return None
    der = value.value  # type: ignore[attr-defined]
    if not der or der[0] != 0x16:
        raise PKIError("id-pe-mud-url is not an IA5String")
    n, body = der[1], der[2:]
    if n & 0x80:
        size = n & 0x7F
        n, body = int.from_bytes(body[:size], "big"), body[size:]
    if n != len(body):
        raise PKIError("id-pe-mud-url has a bad length")
    return body.decode("ascii")


def default_pki_dir() -> Path:
    return Path(os.environ.get("SBD_PKI_DIR", state_dir() / "pki"))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def public_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def lab_subject(name: str) -> x509.Name:
    """The subject of a lab identity: `CN=<name>, OU=sbd lab identities, O=sbd lab`. A device's
    subject is `CN=<device ID>` alone, so the broker (use_subject_as_username) tells them apart."""
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, LAB_ORGANIZATION),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, LAB_UNIT),
                      x509.NameAttribute(NameOID.COMMON_NAME, name)])


@dataclass
class IssuedCertificate:
    device_id: str
    certificate: x509.Certificate
    csr_public_key: bytes

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)


class LabCA:
    def __init__(self, directory: Path | None = None):
        self.dir = Path(directory) if directory else default_pki_dir()

    # files -------------------------------------------------------------------------
    @property
    def key_path(self) -> Path:
        return self.dir / "ca.key.pem"

    @property
    def cert_path(self) -> Path:
        return self.dir / "ca.cert.pem"

    @property
    def crl_path(self) -> Path:
        return self.dir / "crl.pem"

    @property
    def index_path(self) -> Path:
        return self.dir / "index.json"

    def exists(self) -> bool:
        return self.key_path.exists() and self.cert_path.exists()

    def init(self, name: str = "sbd lab CA") -> None:
        """Creates the CA; refuses to overwrite an existing one."""
        if self.exists():
            raise PKIError(f"a CA already exists in {self.dir}")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sbd lab")])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._write_index({"devices": {}, "revoked": [], "revoked_at": {}})
        self.write_crl()

    def _key(self) -> ec.EllipticCurvePrivateKey:
        if not self.exists():
            raise PKIError(f"no CA in {self.dir}: run `sbd pki init`")
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    @property
    def certificate(self) -> x509.Certificate:
        if not self.exists():
            raise PKIError(f"no CA in {self.dir}: run `sbd pki init`")
        return x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            raise PKIError(f"no CA in {self.dir}: run `sbd pki init`")
        return json.loads(self.index_path.read_text())

    def _write_index(self, index: dict[str, Any]) -> None:
        _write_atomic(self.index_path, (json.dumps(index, indent=2) + "\n").encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Holds the CA's lock (`.lock` in its folder) for a read-modify-write of its index or CRL:
        two runs on one CA (two `sbd verify`, a provisioning beside a check run) each see the
        other's writes, and a reader never meets a half-written file. flock, so it also
        serialises threads of one process, each opening the file anew."""
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    # issuing -----------------------------------------------------------------------
    def check_csr(self, csr_der: bytes, device_id: str) -> x509.CertificateSigningRequest:
        """Refuses a CSR that is malformed, not self-signed, not P-256, or not for device_id."""
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError as exc:
            raise PKIError(f"malformed CSR: {exc}") from exc
        if not csr.is_signature_valid:
            raise PKIError("the CSR's signature does not verify: the device does not hold its key")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise PKIError("the CSR's key is not a P-256 key")
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(cns) != 1 or cns[0].value != device_id or len(csr.subject) != 1:
            raise PKIError(f"the CSR's subject is {csr.subject.rfc4514_string()!r}, expected CN={device_id}")
        return csr

    def check_can_issue(self, device_id: str, reissue: bool = False) -> dict[str, Any] | None:
        """Refuses a device ID the firmware does not make or the lab reserves, and one that
        already has a valid (unrevoked, unexpired) certificate unless `reissue`. Returns that
        valid certificate's index entry (to be revoked on re-issue), or None."""
        problem = device_id_problem(device_id)
        if problem:
            raise PKIError(f"the CA certifies device IDs of the firmware's form only: {problem}")
        index = self.index()
        entry = index["devices"].get(device_id)
        if entry is None or entry["serial"] in index["revoked"] or self._not_after(device_id, entry) <= _now():
            return None
        if not reissue:
            raise PKIError(
                f"device {device_id} already has a valid certificate from this CA (serial "
                f"{entry['serial']:x}, issued {entry['issued']}). If this board was factory-reset, provision it "
                f"again with `sbd provision --reissue` (reissue=True), which revokes that certificate; if another "
                f"board claims this ID, do not.")
        return entry

    def _not_after(self, device_id: str, entry: dict[str, Any]) -> dt.datetime:
        if "not_after" in entry:
            return dt.datetime.fromisoformat(entry["not_after"])
        cert = self.issued_certificate(device_id)  # an index written before not_after was recorded
        return cert.not_valid_after_utc if cert is not None else _now()

    def issue(self, csr_der: bytes, device_id: str, days: int = DEVICE_CERT_DAYS,
              mud_url: str | None = None, reissue: bool = False) -> IssuedCertificate:
        """Certifies the CSR's key for device_id; with `mud_url` (the URL the
        firmware declares, sbd.network_policy), the certificate carries it as
        the id-pe-mud-url extension (RFC 8520 section 10).

        device_id must have the firmware's form and must not be a lab name; an ID
        that holds a valid certificate gets a new one only with `reissue=True`,
        and its previous certificate is then revoked and the CRL rewritten."""
        self.check_can_issue(device_id, reissue)  # fail fast, before the CSR is checked
        csr = self.check_csr(csr_der, device_id)
        mud_extension = [(mud_url_extension(mud_url), False)] if mud_url else []
        point = public_point(csr.public_key())
        with self._locked():
            previous_valid = self.check_can_issue(device_id, reissue)  # again, under the lock
            return self._issue_locked(csr, device_id, days, point, mud_extension, previous_valid)

    def _issue_locked(self, csr: x509.CertificateSigningRequest, device_id: str, days: int, point: bytes,
                      mud_extension: list, previous_valid: dict[str, Any] | None) -> IssuedCertificate:
        index = self.index()
        for other_id, entry in index["devices"].items():
            if entry["public_key"] == point.hex() and other_id != device_id:
                raise PKIError(f"this key is already certified for device {other_id}: keys must be unique")
        now = _now()
        cert = self._leaf(device_id, csr.public_key(), days, [
            (x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                           key_encipherment=False, data_encipherment=False, key_agreement=False,
                           encipher_only=False, decipher_only=False), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key().public_key()), False),
        ] + mud_extension)
        issued = IssuedCertificate(device_id, cert, point)
        (self.dir / "issued").mkdir(exist_ok=True)
        _write_atomic(self._issued_path(device_id), cert.public_bytes(serialization.Encoding.PEM))
        previous = index["devices"].get(device_id, {})
        index["devices"][device_id] = {"serial": cert.serial_number, "fingerprint": issued.fingerprint,
                                       "public_key": point.hex(), "issued": now.isoformat(timespec="seconds"),
                                       "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
                                       # the command counter outlives re-provisioning
                                       "cmd_seq": previous.get("cmd_seq", 0)}
        if previous_valid is not None:
            self._record_revocation(index, previous_valid["serial"])
        self._write_index(index)
        if previous_valid is not None:
            self._write_crl(CRL_DAYS)
        return issued

    def _leaf(self, common_name: str, public_key, days: int, extensions: list,
              subject: x509.Name | None = None) -> x509.Certificate:
        """An end-entity certificate from this CA: `subject` (default CN alone, a device's), random
        serial, not a CA, the extensions given."""
        now = _now()
        builder = (x509.CertificateBuilder()
                   .subject_name(subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.certificate.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(self._key(), hashes.SHA256())

    @staticmethod
    def _with_new_key(make) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a certificate `make(public_key)` for a key made here."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = make(key.public_key())
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))

    def issue_server(self, hostname: str, addresses: list[str], days: int | None = None) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a broker reachable as `hostname` and `addresses`: a lab
        identity (lab_subject) for server authentication only, so no client can present it. Valid
        BROKER_CERT_DAYS unless told: devices cannot check a broker certificate's revocation, so its
        short life is what bounds the trust in one revoked or stolen (docs/mqtt.md)."""
        days = BROKER_CERT_DAYS if days is None else days
        import ipaddress
        san = [x509.DNSName(hostname)] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        return self._with_new_key(lambda pub: self._leaf(hostname, pub, days, [
            (x509.SubjectAlternativeName(san), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            # RFC 5280 requires it; strict path validators (sslyze's) refuse a chain without it
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(self.certificate.public_key()), False)],
            subject=lab_subject(hostname)))

    def issue_client(self, name: str, days: int = 30) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a host-side client such as the lab's monitor or a
        broker check's probe; made on the host, so never for a device (devices make their own
        keys). Its subject is a lab identity (lab_subject), and `name` never has a device ID's form."""
        problem = lab_name_problem(name)
        if problem:
            raise PKIError(problem)
        return self._with_new_key(lambda pub: self._leaf(name, pub, days, [
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)], subject=lab_subject(name)))

    def _issued_path(self, device_id: str) -> Path:
        """issued/<device ID>.pem; only ever built from an ID of the firmware's form."""
        problem = device_id_problem(device_id)
        if problem:
            raise PKIError(f"no certificate file for this device ID: {problem}")
        return self.dir / "issued" / f"{device_id}.pem"

    def issued_certificate(self, device_id: str) -> x509.Certificate | None:
        """The last certificate issued to device_id (PKIError for an ID of another form)."""
        path = self._issued_path(device_id)
        return x509.load_pem_x509_certificate(path.read_bytes()) if path.exists() else None

    # revocation ---------------------------------------------------------------------
    def revoke(self, device_id: str) -> None:
        entry = self.index()["devices"].get(device_id)
        if entry is None:
            raise PKIError(f"no certificate issued for {device_id}")
        self.revoke_serial(entry["serial"])

    def revoke_serial(self, serial: int) -> None:
        """Revokes any certificate of this CA (a device's, or a host client's) and rewrites the CRL."""
        with self._locked():
            index = self.index()
            self._record_revocation(index, serial)
            self._write_index(index)
            self._write_crl(CRL_DAYS)

    @staticmethod
    def _record_revocation(index: dict[str, Any], serial: int) -> None:
        """Adds `serial` to the revoked list with the time of revocation, once: a serial revoked
        earlier keeps its first date."""
        if serial not in index["revoked"]:
            index["revoked"].append(serial)
        index.setdefault("revoked_at", {}).setdefault(str(serial), _now().isoformat(timespec="seconds"))

    def is_revoked(self, device_id: str) -> bool:
        index = self.index()
        entry = index["devices"].get(device_id)
        return entry is not None and entry["serial"] in index["revoked"]

    def write_crl(self, days: int = CRL_DAYS) -> None:
        """The CRL the broker loads (mosquitto `crlfile`), valid from now for `days`: written at
        `sbd pki init`, at every revocation and at every start of the lab broker, so it does
        not expire under a broker that keeps being used. Each entry keeps the revocation date
        recorded when it was revoked."""
        with self._locked():
            self._write_crl(days)

    def _write_crl(self, days: int) -> None:
        key, ca_cert, now = self._key(), self.certificate, _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
                   .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=days)))
        for serial, when in self._revocation_dates().items():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
        crl = builder.sign(key, hashes.SHA256())
        _write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))

    def _revocation_dates(self) -> dict[int, dt.datetime]:
        """Each revoked serial with its recorded date. A serial revoked before dates were
        recorded takes its date from the CRL on disk (else now), and keeps it from then on."""
        index = self.index()
        recorded = index.setdefault("revoked_at", {})
        missing = [s for s in index["revoked"] if str(s) not in recorded]
        if missing:
            try:
                old = x509.load_pem_x509_crl(self.crl_path.read_bytes())
            except (OSError, ValueError):
                old = None
            for serial in missing:
                entry = old.get_revoked_certificate_by_serial_number(serial) if old is not None else None
                when = entry.revocation_date_utc if entry is not None else _now()
                recorded[str(serial)] = when.isoformat(timespec="seconds")
            self._write_index(index)
        return {s: dt.datetime.fromisoformat(recorded[str(s)]) for s in index["revoked"]}

    # operator commands ----------------------------------------------------------------
    def sign_command(self, device_id: str, cmd: str, args: dict[str, Any] | None = None,
                     seq: int | None = None, challenge: str | None = None) -> str:
        """An `SBD-CMD <payload> <signature>` line the device accepts (commands.py).

        The CA keeps one sequence counter per device, so every command it signs
        is newer than the last; `seq` overrides it (tests of replay use that).
        `challenge`: the nonce the device handed out (identity/commands.py asks for it),
        which `unlock_console` and `factory_reset` must carry."""
        with self._locked():
            entry = self.index()["devices"].get(device_id)
            if entry is None:
                raise PKIError(f"no certificate issued for {device_id}: not a device of this CA")
        if seq is None:
            seq = self.reserve_seq(device_id)
        body: dict[str, Any] = {"cmd": cmd, "device": device_id, "cert": entry["fingerprint"], "seq": seq}
        if args:
            body["args"] = args
        if challenge is not None:
            body["challenge"] = challenge
        return self.sign_payload(body)

    def reserve_seq(self, device_id: str) -> int:
        """The device's next command sequence number, taken: the CA never signs with it again. A check
        gives it to a command someone else signed (a forged one), so that a device that wrongly accepts
        it has not moved its counter past the CA's, and the CA's next commands are still fresh to it."""
        with self._locked():
            index = self.index()
            entry = index["devices"].get(device_id)
            if entry is None:
                raise PKIError(f"no certificate issued for {device_id}: not a device of this CA")
            seq = entry.get("cmd_seq", 0) + 1
            entry["cmd_seq"] = seq
            self._write_index(index)
        return seq

    def sign_payload(self, body: dict[str, Any]) -> str:
        """Signs any command body as it is (no checks, no counter): for tests and checks."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        der_sig = self._key().sign(payload, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_sig)
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return "SBD-CMD " + base64.b64encode(payload).decode() + " " + base64.b64encode(raw).decode()


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes `path` whole or not at all: a temporary file of its own beside it, then a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
