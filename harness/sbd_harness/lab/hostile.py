"""A hostile broker: it passes every TLS check, then sends malformed MQTT.

It holds a genuine lab-CA certificate for the broker's host name (an insider,
or a broker that was broken into), so the device's TLS client lets it in and
only the MQTT parser stands between its bytes and the firmware. One fuzz case
per connection: the device must close the connection, log it, reconnect and
keep working. Each case records whether the device closed the connection.
"""
from __future__ import annotations

import random
import socket
import ssl
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sbd_harness.lab.broker import BROKER_HOSTNAME
from sbd_harness.lab.client_hello import peek_client_hello
from sbd_harness.lab.listener import Listener
from sbd_harness.identity.pki import LabCA

CONNACK_OK = b"\x20\x02\x00\x00"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def publish(topic: bytes, payload: bytes, qos: int = 0, pid: int = 1) -> bytes:
    body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return bytes([0x30 | qos << 1]) + _varint(len(body)) + body


@dataclass
class FuzzCase:
    name: str
    data: bytes
    before_connack: bool = False  # sent instead of the CONNACK
    must_close: bool = True       # malformed: a strict client hangs up
    wait_s: float | None = None   # how long to watch for the hang-up (default: the broker's)


def designed_cases(device_id: str) -> list[FuzzCase]:
    """Malformed packets, each breaking one rule of MQTT 3.1.1 a parser must enforce."""
    cmd = f"devices/{device_id}/cmd".encode()
    pre = [
        FuzzCase("connack-refused-code", b"\x20\x02\x00\x05", True),
        FuzzCase("connack-too-long", b"\x20\x03\x00\x00\x00", True),
        FuzzCase("connack-flags-reserved", b"\x20\x02\x02\x00", True),
        FuzzCase("publish-before-connack", publish(cmd, b"x"), True),
        FuzzCase("remaining-length-5-bytes", b"\x20\xff\xff\xff\xff\x7f", True),
    ]
    post = [
        FuzzCase("remaining-length-max", b"\x30\xff\xff\xff\x7f" + b"A" * 64),
        FuzzCase("remaining-length-non-minimal", b"\xd0\x80\x00"),
        FuzzCase("publish-larger-than-buffer", publish(cmd, b"A" * 4000)),
        FuzzCase("publish-topic-longer-than-packet", b"\x30\x05\x00\x40abc"),
        FuzzCase("publish-qos3", bytes([0x36]) + _varint(len(cmd) + 4) + _str(cmd) + b"\x00\x01"),
        FuzzCase("publish-qos1-packet-id-0", publish(cmd, b"x", qos=1, pid=0)),
        FuzzCase("publish-topic-wildcard", publish(f"devices/{device_id}/#".encode(), b"x")),
        FuzzCase("publish-topic-nul", publish(b"devices/\x00/cmd", b"x")),
        FuzzCase("publish-topic-bad-utf8", publish(b"devices/\xc0\xaf/cmd", b"x")),
        FuzzCase("publish-topic-empty", publish(b"", b"x")),
        FuzzCase("second-connack", CONNACK_OK),
        FuzzCase("puback-packet-id-0", b"\x40\x02\x00\x00"),
        FuzzCase("puback-too-long", b"\x40\x03\x00\x01\x00"),
        FuzzCase("suback-bad-code", b"\x90\x03\x00\x05\x03"),
        FuzzCase("pingresp-with-body", b"\xd0\x01\x00"),
        FuzzCase("server-sends-connect", b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"),
        FuzzCase("server-sends-subscribe", b"\x82\x06\x00\x01\x00\x01#\x00"),
        FuzzCase("reserved-type-0", b"\x00\x00"),
        FuzzCase("reserved-type-15", b"\xf0\x00"),
        FuzzCase("reserved-flags-on-puback", b"\x42\x02\x00\x01"),
        FuzzCase("truncated-then-silent", b"\x30\x20\x00\x10dev", wait_s=8),
    ]
    # Alternate: a case that fails the connection before CONNACK raises the
    # device's backoff, one after a good CONNACK resets it; this keeps the run short.
    cases: list[FuzzCase] = []
    for i, case in enumerate(post):
        cases.append(case)
        if i < len(pre):
            cases.append(pre[i])
    return cases


# One designed case of each kind of malformation, for the default tier of the fuzzing check:
# a bad CONNACK, a bad remaining length, a PUBLISH that breaks its own structure, one with
# reserved flags, a packet only a client sends, and a reserved packet type.
REPRESENTATIVE = ("connack-too-long", "remaining-length-max", "publish-topic-longer-than-packet",
                  "publish-qos3", "server-sends-subscribe", "reserved-type-15")
FIXED_SEED = 20240601  # the default tier's random cases: the same on every run and every device


def representative_cases(device_id: str) -> list[FuzzCase]:
    """The designed cases of `REPRESENTATIVE`, in the designed order (a case before CONNACK between
    ones after it, so the device's backoff stays short)."""
    return [c for c in designed_cases(device_id) if c.name in REPRESENTATIVE]


def random_cases(device_id: str, count: int, seed: int, wait_s: float | None = None) -> list[FuzzCase]:
    """Valid server packets with random bytes flipped, cut short or spliced: survival only (the
    device may hang up or not; `wait_s`: how long each watches it, default: the broker's)."""
    rng = random.Random(seed)
    cmd = f"devices/{device_id}/cmd".encode()
    seeds = [publish(cmd, b"SBD-CMD AAAA AAAA", qos=1, pid=7), publish(cmd, b"{}"), b"\x40\x02\x00\x01",
             b"\x90\x03\x00\x02\x01", b"\xd0\x00", CONNACK_OK]
    out = []
    for i in range(count):
        data = bytearray(rng.choice(seeds))
        how = rng.choice(("flip", "cut", "splice", "noise"))
        if how == "flip":
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == "cut":
            data = data[:rng.randrange(1, len(data))]
        elif how == "splice":
            data += rng.choice(seeds)[rng.randrange(2):]
        else:
            data = bytearray(rng.randbytes(rng.randint(1, 64)))
        out.append(FuzzCase(f"random-{seed}-{i}-{how}", bytes(data), must_close=False, wait_s=wait_s))
    return out


@dataclass
class CaseResult:
    name: str
    connected: bool = False        # the device sent CONNECT
    device_closed: bool = False    # ...and hung up after the malformed bytes
    seconds: float = 0.0


@dataclass
class HostileBroker(Listener):
    ca: LabCA
    address: str
    port: int
    cases: list[FuzzCase]
    observe_s: float = 3.0  # how long a case watches the device after the strike (must_close: its hang-up)
    quiet_s: float = 0.25   # the device is connected and waiting once it sent nothing for this long
    results: list[CaseResult] = field(default_factory=list)
    # The device's first ClientHello and CONNECT, as first_contact.remember keeps them for later checks
    client_hello: bytes = b""
    connect: bytes | None = None
    join_s = 15.0  # leaving waits for the case under way (not a field)

    def __post_init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        cert, key = self.ca.issue_server(BROKER_HOSTNAME, [self.address], days=2)
        cert_path, key_path = Path(self._tmp.name) / "c.pem", Path(self._tmp.name) / "k.pem"
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert_path, key_path)
        self.ctx.load_verify_locations(str(self.ca.cert_path))
        self.ctx.verify_mode = ssl.CERT_REQUIRED  # only a device of this lab gets in
        Listener.__init__(self, self.address, self.port)

    @property
    def done(self) -> bool:
        return len(self.results) >= len(self.cases)

    def finished(self) -> bool:
        return self.done

    def wait(self, timeout: float, abort=None) -> bool:
        """True once every case ran; False after `timeout`, or as soon as `abort()` is true
        (a failure already visible, such as the device restarting)."""
        deadline = time.monotonic() + timeout
        while not self.done and time.monotonic() < deadline:
            if abort is not None and abort():
                return False
            time.sleep(0.05)
        return self.done

    def handle(self, conn: socket.socket) -> None:
        case = self.cases[len(self.results)]
        result = CaseResult(case.name)
        start = time.monotonic()
        struck = False
        try:
            if not self.client_hello:
                self.client_hello = peek_client_hello(conn)
            conn.settimeout(10)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                struck = self._run_case(tls, case, result)
        except (ssl.SSLError, OSError, _Closed):
            pass  # the device went away before the case was sent: it is tried again
        result.seconds = round(time.monotonic() - start, 2)
        if struck:
            self.results.append(result)

    def _run_case(self, tls: ssl.SSLSocket, case: FuzzCase, result: CaseResult) -> bool:
        """True once the case's bytes went out; result says what the device did."""
        reader = _PacketReader(tls)
        kind, body = reader.next(10)
        if kind != 1:
            return False
        if self.connect is None:
            self.connect = body
        result.connected = True
        if not case.before_connack:
            tls.sendall(CONNACK_OK)
            # Serve the device's birth message and subscriptions until it falls
            # quiet (connected and waiting), then strike.
            deadline = time.monotonic() + 5
            subscribed = False
            while time.monotonic() < deadline:
                kind, body = reader.next(self.quiet_s if subscribed else deadline - time.monotonic())
                if kind is None:
                    if subscribed:
                        break
                    return False
                self._answer(tls, kind, body)
                subscribed = subscribed or kind == 8
        tls.sendall(case.data)
        deadline = time.monotonic() + (case.wait_s or self.observe_s)
        while time.monotonic() < deadline:
            try:
                kind, body = reader.next(deadline - time.monotonic())
            except _Closed:
                result.device_closed = True
                return True
            if kind is None:
                return True
            if case.must_close is False:
                self._answer(tls, kind, body)
        return True

    @staticmethod
    def _answer(tls: ssl.SSLSocket, kind: int, body: bytes) -> None:
        if kind == 3 and len(body) >= 2:  # PUBLISH: acknowledge QoS 1
            tlen = struct.unpack("!H", body[:2])[0]
            if len(body) >= 4 + tlen:
                tls.sendall(b"\x40\x02" + body[2 + tlen:4 + tlen])
        elif kind == 8 and len(body) >= 2:  # SUBSCRIBE: grant QoS 1
            tls.sendall(b"\x90\x03" + body[:2] + b"\x01")
        elif kind == 12:
            tls.sendall(b"\xd0\x00")

    def cleanup(self) -> None:
        self._tmp.cleanup()


class _Closed(Exception):
    pass


class _PacketReader:
    """Reads the device's packets (fixed header, remaining length, body)."""

    def __init__(self, tls: ssl.SSLSocket):
        self.tls = tls
        self.buf = b""

    def _need(self, n: int, deadline: float) -> bool:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.tls.settimeout(left)
            try:
                chunk = self.tls.recv(4096)
            except (socket.timeout, TimeoutError):
                return False
            except (ssl.SSLError, ConnectionError) as exc:
                raise _Closed() from exc
            if not chunk:
                raise _Closed()
            self.buf += chunk
        return True

    def next(self, timeout: float) -> tuple[int | None, bytes]:
        deadline = time.monotonic() + max(timeout, 0)
        if not self._need(2, deadline):
            return None, b""
        n, shift, i = 0, 0, 1
        while True:
            if not self._need(i + 1, deadline):
                return None, b""
            byte = self.buf[i]
            n |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80 or i > 4:
                break
            shift += 7
        if not self._need(i + n, deadline):
            return None, b""
        kind, body = self.buf[0] >> 4, self.buf[i:i + n]
        self.buf = self.buf[i + n:]
        return kind, body
