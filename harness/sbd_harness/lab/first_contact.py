"""Stand-ins for the lab broker that record how the device opens a connection.

`FirstContact` listens where the broker does and, for the device's first
connection, keeps the ClientHello exactly as it came over the wire (read
with MSG_PEEK before the TLS library sees it), then either

- `mode="weak-suites"`: answers as the lab broker would (a lab-CA
  certificate for the broker's name and address) but accepts only cipher
  suites without forward secrecy or AEAD, at TLS 1.2 at most: a device that
  completes that handshake and sends its CONNECT accepted a weak suite; or
- `mode="mqtt"`: answers as the lab broker, client certificate required,
  and keeps the device's first MQTT packet (its CONNECT), then hangs up.

What the hostile broker of the resilience check sees first (it is a full
lab-CA broker too) is kept the same way (`remember`), so that a run that has
already had one such connection does not need another.
"""
from __future__ import annotations

import socket
import ssl
import struct
import tempfile
from pathlib import Path
from typing import Any

from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.broker import BROKER_HOSTNAME
from sbd_harness.lab.client_hello import peek_client_hello
from sbd_harness.lab.listener import Listener

MODES = ("weak-suites", "mqtt")
# Suites a best-practice client never offers (OpenSSL names): CBC with ECDHE, and static-RSA / PSK
# key exchange where the certificate allows it. TLS 1.3 is off, so its suites cannot be chosen.
WEAK_SUITES = ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
               "ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-DES-CBC3-SHA:@SECLEVEL=0")


def read_mqtt_packet(tls: ssl.SSLSocket, limit: int = 4096) -> tuple[int, bytes] | None:
    """The first MQTT packet (type, body) on a TLS stream, or None when none came whole."""
    buf = b""
    while True:
        try:
            chunk = tls.recv(limit)
        except (OSError, ssl.SSLError):
            return None
        if not chunk:
            return None
        buf += chunk
        if len(buf) < 2:
            continue
        n, shift, i = 0, 0, 1
        while i < len(buf):
            n |= (buf[i] & 0x7F) << shift
            i += 1
            if not buf[i - 1] & 0x80 or i > 4:
                break
            shift += 7
        if len(buf) >= i + n:
            return buf[0] >> 4, buf[i:i + n]
        if len(buf) > limit:
            return None


def connect_fields(body: bytes) -> dict[str, Any]:
    """What an MQTT 3.1.1 CONNECT (its variable header and payload, section 3.1) carries: protocol,
    flags, client ID, and whether a user name and a password are present (their values are not
    kept: a password would be a secret)."""
    def text(at: int) -> tuple[bytes, int]:
        n = struct.unpack("!H", body[at:at + 2])[0]
        return body[at + 2:at + 2 + n], at + 2 + n
    name, at = text(0)
    level, flags = body[at], body[at + 1]
    at += 4  # level, flags, keep-alive
    client_id, at = text(at)
    out: dict[str, Any] = {"protocol": name.decode(errors="replace"), "level": level,
                           "client_id": client_id.decode(errors="replace"),
                           "username_flag": bool(flags & 0x80), "password_flag": bool(flags & 0x40),
                           "will_flag": bool(flags & 0x04)}
    if flags & 0x04:
        _topic, at = text(at)
        _message, at = text(at)
    if flags & 0x80:
        user, at = text(at)
        out["username"] = user.decode(errors="replace")
    if flags & 0x40:
        password, at = text(at)
        out["password_length"] = len(password)
    out["bytes_after_fields"] = len(body) - at  # a password hidden without its flag would be here
    return out


def remember(broker: Any, device_id: str, client_hello: bytes | None, connect: bytes | None) -> None:
    """Keeps what a lab-CA stand-in saw of the device's first connection on the broker object, for
    the checks that read it (check_tls_client.py) later in the same run."""
    seen = getattr(broker, "first_contact", {})
    if client_hello or connect:
        seen[device_id] = {"client_hello": client_hello, "connect": connect}
    broker.first_contact = seen


def remembered(broker: Any, device_id: str) -> dict[str, bytes | None] | None:
    return getattr(broker, "first_contact", {}).get(device_id)


class FirstContact(Listener):
    """One of the MODES; the first connection of the device (`only_from`, where it has an address of
    its own) is recorded: `client_hello`, `handshake` (completed), `connect` (the CONNECT's body)."""

    join_s = 8.0

    def __init__(self, mode: str, ca: LabCA, address: str, port: int, only_from: str | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: {MODES}")
        self.mode = mode
        self.client_hello = b""
        self.handshake = False
        self.cipher: str | None = None
        self.connect: bytes | None = None
        self.received = b""
        self.attempts = 0
        self._tmp = tempfile.TemporaryDirectory()
        cert, key = ca.issue_server(BROKER_HOSTNAME, [address], days=2)
        cert_path, key_path = Path(self._tmp.name) / "c.pem", Path(self._tmp.name) / "k.pem"
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert_path, key_path)
        if mode == "weak-suites":
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            self.ctx.set_ciphers(WEAK_SUITES)
        else:
            self.ctx.load_verify_locations(str(ca.cert_path))
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        super().__init__(address, port, only_from)

    def finished(self) -> bool:
        return bool(self.client_hello)

    def handle(self, conn: socket.socket) -> None:
        self.attempts += 1
        hello = b""
        try:
            hello = peek_client_hello(conn)
            conn.settimeout(5)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                self.handshake = True
                self.cipher = (tls.cipher() or (None,))[0]
                packet = read_mqtt_packet(tls)
                if packet is not None:
                    kind, body = packet
                    self.received = body
                    if kind == 1:
                        self.connect = body
        except (ssl.SSLError, OSError):
            pass
        finally:
            conn.close()
        self.client_hello = self.client_hello or hello

    def cleanup(self) -> None:
        self._tmp.cleanup()
