"""Rogue brokers: TLS servers a device must refuse to talk to.

Each one impersonates the lab broker (same address and host name where the
attack allows it) with one flaw: a self-signed certificate, one from another
CA, one for another host name, an expired one, or a server that speaks only
TLS 1.1. It records whether a client completed the handshake and sent data.
"""
from __future__ import annotations

import datetime as dt
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .broker import BROKER_HOSTNAME
from .pki import LabCA

KINDS = ("self-signed", "other-ca", "wrong-host", "expired", "tls1.1")


def _peer(conn: socket.socket) -> str | None:
    try:
        return conn.getpeername()[0]
    except OSError:
        return None


def _cert(subject_cn: str, key, issuer_cn: str, issuer_key, not_after: dt.datetime, hosts: list[str]):
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(min(now - dt.timedelta(days=400), not_after - dt.timedelta(days=1)))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .sign(issuer_key, hashes.SHA256()))


class RogueBroker:
    def __init__(self, kind: str, ca: LabCA, address: str, port: int = 0, only_from: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown rogue broker {kind!r}: {KINDS}")
        self.kind = kind
        self.only_from = only_from  # the device under test; other boards of a class may share the lab
        self.attempts = 0  # TCP connections accepted: the device tried
        self.handshakes = 0
        self.received = b""
        self._tmp = tempfile.TemporaryDirectory()
        self.ctx = self._context(kind, ca)
        self.sock = socket.create_server((address, port))
        self.sock.settimeout(0.2)
        self.address, self.port = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _context(self, kind: str, ca: LabCA) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
        if kind == "self-signed":
            cert = _cert(BROKER_HOSTNAME, key, BROKER_HOSTNAME, key, later, [BROKER_HOSTNAME])
        elif kind == "other-ca":
            other = ec.generate_private_key(ec.SECP256R1())
            cert = _cert(BROKER_HOSTNAME, key, "sbd lab CA", other, later, [BROKER_HOSTNAME])
        else:
            ca_key = ca._key()
            ca_cn = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            host = "evil.example" if kind == "wrong-host" else BROKER_HOSTNAME
            not_after = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1) if kind == "expired" else later
            cert = _cert(host, key, str(ca_cn), ca_key, not_after, [host])
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

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            if self.only_from and _peer(conn) != self.only_from:
                conn.close()
                continue
            self.attempts += 1
            conn.settimeout(3)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    self.received += tls.recv(1024)
            except (ssl.SSLError, OSError):
                pass

    def __enter__(self) -> "RogueBroker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self._tmp.cleanup()


class HangUpListener:
    """Accepts every connection and closes it at once, noting when each came.

    It stands in for a broker host whose mosquitto is down, so the times of
    the device's reconnection attempts can be seen from the network side."""

    def __init__(self, address: str, port: int, only_from: str | None = None):
        self.only_from = only_from
        self.times: list[float] = []
        self.sock = socket.create_server((address, port))
        self.sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            if not self.only_from or _peer(conn) == self.only_from:
                self.times.append(time.monotonic())
            conn.close()

    def __enter__(self) -> "HangUpListener":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
