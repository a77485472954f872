"""Broker certificates for mptest_tls.py, made by `cryptography` on the host: DER
files valid now, expired, not yet valid, and bytes that do not parse as one."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID


def _cert(not_before: dt.datetime, not_after: dt.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker.sbd.lab")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def write(folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    day = dt.timedelta(days=1)
    valid = _cert(now - day, now + 30 * day)
    (folder / "valid.der").write_bytes(valid)
    (folder / "expired.der").write_bytes(_cert(now - 30 * day, now - day))
    (folder / "future.der").write_bytes(_cert(now + day, now + 30 * day))
    (folder / "truncated.der").write_bytes(valid[:len(valid) // 2])  # a DER parser's ValueError
    (folder / "not_der.der").write_bytes(b"\x30\x03\x02\x01")
