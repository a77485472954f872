"""Rogue brokers: TLS servers a device must refuse to talk to.

Each one impersonates the lab broker (same address and host name where the
attack allows it) with one flaw: a self-signed certificate, one from another
CA, one for another host name, an expired one, a server that speaks only
TLS 1.1, a lab-CA certificate for the broker's name made for clients (extended
key usage clientAuth only: what a stolen host-side client certificate would
be), or a broker certificate of the lab CA that the lab CA has revoked (on
its CRL: what a leaked broker key leads to). It records whether a client
completed the handshake and sent data.
"""
from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sbd_harness.lab.broker import BROKER_HOSTNAME
from sbd_harness.lab.listener import Listener
from sbd_harness.identity.pki import LabCA

# Each must be refused. A revoked broker certificate is not among them: the device cannot check
# revocation (MicroPython's ssl has no CRL or OCSP), so the lab issues broker certificates that
# live a day (pki.BROKER_CERT_DAYS) and the check holds the broker to that; RogueBroker("revoked")
# shows the device accepting one (tests/checks/test_mqtt_checks.py, docs/mqtt.md).
KINDS = ("self-signed", "other-ca", "wrong-host", "expired", "tls1.1", "client-cert")
LIMITATIONS = ("revoked",)


def _cert(subject_cn: str, key, issuer_cn: str, issuer_key, not_after: dt.datetime, hosts: list[str],
          eku: list | None = None):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(min(now - dt.timedelta(days=400), not_after - dt.timedelta(days=1)))
               .not_valid_after(not_after)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class RogueBroker(Listener):
    def __init__(self, kind: str, ca: LabCA, address: str, port: int = 0, only_from: str | None = None):
        if kind not in KINDS + LIMITATIONS:
            raise ValueError(f"unknown rogue broker {kind!r}: {KINDS + LIMITATIONS}")
        self.kind = kind
        self.attempts = 0  # TCP connections accepted: the device tried
        self.handled = 0   # ...and each one over: the handshake failed, or the device's bytes were read
        self.handshakes = 0
        self.received = b""
        self.revoked_serial: int | None = None
        self._tmp = tempfile.TemporaryDirectory()
        self.ctx = self._context(kind, ca)
        super().__init__(address, port, only_from)

    def _context(self, kind: str, ca: LabCA) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
        if kind == "self-signed":
            cert = _cert(BROKER_HOSTNAME, key, BROKER_HOSTNAME, key, later, [BROKER_HOSTNAME])
        elif kind == "revoked":  # the lab CA's own broker certificate, then revoked by the lab CA
            cert_pem, key_pem = ca.issue_server(BROKER_HOSTNAME, [])
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, None)
            ca.revoke_serial(cert.serial_number)
            self.revoked_serial = cert.serial_number
        elif kind == "other-ca":
            other = ec.generate_private_key(ec.SECP256R1())
            cert = _cert(BROKER_HOSTNAME, key, "sbd lab CA", other, later, [BROKER_HOSTNAME])
        else:
            ca_key = ca._key()
            ca_cn = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            host = "evil.example" if kind == "wrong-host" else BROKER_HOSTNAME
            not_after = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1) if kind == "expired" else later
            eku = [ExtendedKeyUsageOID.CLIENT_AUTH] if kind == "client-cert" else None
            cert = _cert(host, key, str(ca_cn), ca_key, not_after, [host], eku)
        cert_path, key_path = Path(self._tmp.name) / "c.pem", Path(self._tmp.name) / "k.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if kind == "tls1.1":
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.load_cert_chain(cert_path, key_path)
        return ctx

    def handle(self, conn: socket.socket) -> None:
        self.attempts += 1
        conn.settimeout(3)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                self.received += tls.recv(1024)
        except (ssl.SSLError, OSError):
            pass
        finally:
            self.handled += 1

    def cleanup(self) -> None:
        self._tmp.cleanup()


class HangUpListener(Listener):
    """Accepts every connection and closes it at once, noting when each came.

    It stands in for a broker host whose mosquitto is down, so the times of
    the device's reconnection attempts can be seen from the network side."""

    accept_poll_s = 0.05

    def __init__(self, address: str, port: int, only_from: str | None = None):
        self.times: list[float] = []
        super().__init__(address, port, only_from)

    def handle(self, conn: socket.socket) -> None:
        self.times.append(time.monotonic())
        conn.close()
