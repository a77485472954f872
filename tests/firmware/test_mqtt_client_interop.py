"""The firmware's MQTT client (sbd.mqtt), run on MicroPython, against a real
mosquitto and against a hostile broker.

Plaintext on 127.0.0.1 only: TLS is the caller's job (the issue's mutual-TLS
tests cover it); here it is the MQTT encoding, the QoS 1 flow and the strict
parsing that are checked against other implementations.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from sbd_harness.emulator.micropython import micropython_command

ROOT = Path(__file__).resolve().parents[2]
LOCALHOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _mosquitto_binary() -> str:
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        pytest.fail("mosquitto is not installed: `make setup` installs it (apt-get install mosquitto)")
    return exe


@pytest.fixture
def mosquitto(tmp_path):
    """A plaintext mosquitto on 127.0.0.1 and a random port; killed afterwards."""
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} {LOCALHOST}\nallow_anonymous true\npersistence false\n"
                    "log_dest stderr\nlog_type error\nlog_type warning\n")
    log = open(tmp_path / "mosquitto.log", "wb")
    proc = subprocess.Popen([_mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited: {(tmp_path / 'mosquitto.log').read_text()[-500:]}")
            try:
                socket.create_connection((LOCALHOST, port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen on {LOCALHOST}:{port}")
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


class Device:
    """One MicroPython process running a script; its stdout is read as JSON
    lines, with a deadline. A context manager: the process ends with it."""

    def __init__(self, script: Path, *args: str, timeout: float = 60):
        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware" / "lib"))
        self.proc = subprocess.Popen(micropython_command() + [str(script), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: list[str] = []
        self._timer = threading.Timer(timeout, self.proc.kill)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def next(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise AssertionError("device exited (rc %s):\n%s\n%s" % (
                self.proc.returncode, "".join(self.lines), self.proc.stderr.read()[-3000:]))
        self.lines.append(line)
        try:
            return json.loads(line)
        except ValueError:  # a traceback: show all of it
            self.proc.kill()
            raise AssertionError("device said:\n" + "".join(self.lines) + self.proc.stdout.read()) from None

    def finish(self) -> int:
        """Waits for the script to end; its exit status."""
        return self.proc.wait(timeout=30)


DEVICE_SCRIPT = r"""
import gc, json, socket, sys, time
from sbd import mqtt

port, prefix, bulk = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def say(**kw):
    print(json.dumps(kw))


gc.collect()
heap_before = gc.mem_alloc()
c = mqtt.MQTTClient("sbd-" + prefix[-8:], keepalive=30, timeout_ms=5000)
got, acked = [], []
c.on_message = lambda topic, payload: got.append([topic, payload.decode()])
c.on_ack = acked.append
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
t0 = time.ticks_ms()
present = c.connect(s, will=(prefix + "/dev/status", b"offline", 1, False))
connect_ms = time.ticks_diff(time.ticks_ms(), t0)
granted = [c.subscribe(prefix + "/dev/#", 1), c.subscribe(prefix + "/host/#", 0)]
gc.collect()
say(event="ready", session_present=present, granted=granted, connect_ms=connect_ms,
    client_heap=gc.mem_alloc() - heap_before)

assert c.publish(prefix + "/dev/q0", b"zero") is None
pid = c.publish(prefix + "/dev/q1", "one", qos=1)
deadline = time.ticks_add(time.ticks_ms(), 10000)
while (len(got) < 3 or c.pending) and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    c.poll(100)
say(event="exchanged", got=got, pid=pid, acked=acked, pending=len(c.pending))

# Throughput: QoS 1 with up to 16 in flight, every PUBACK awaited.
gc.collect()
t0 = time.ticks_ms()
sent = 0
while (sent < bulk or c.pending) and time.ticks_diff(time.ticks_ms(), t0) < 30000:
    if sent < bulk and len(c.pending) < 16:
        c.publish(prefix + "/bulk", b'{"seq":%d,"t":21.5}' % sent, qos=1)
        sent += 1
    else:
        c.poll(100)
ms = max(1, time.ticks_diff(time.ticks_ms(), t0))
say(event="bulk", sent=sent, pending=len(c.pending), ms=ms, msgs_per_s=sent * 1000 // ms)
c.ping()
c.poll(2000)
c.close()  # no DISCONNECT: the broker publishes the will
say(event="closed")
"""


def test_client_against_mosquitto(mosquitto, tmp_path):
    port = mosquitto
    prefix = "sbdtest/" + uuid.uuid4().hex
    bulk = 300
    script = tmp_path / "device.py"
    script.write_text(DEVICE_SCRIPT)

    received: list[tuple[str, bytes, int]] = []
    subscribed = threading.Event()
    done = threading.Event()
    host = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="host-" + prefix[-8:])

    def on_message(client, userdata, msg):
        received.append((msg.topic, msg.payload, msg.qos))
        if msg.topic.endswith("/dev/status"):
            done.set()

    host.on_message = on_message
    host.on_subscribe = lambda *a: subscribed.set()
    host.connect(LOCALHOST, port)
    host.loop_start()
    try:
        host.subscribe(prefix + "/#", qos=1)
        assert subscribed.wait(10)
        with Device(script, str(port), prefix, str(bulk)) as device:
            ready = device.next()
            assert ready["event"] == "ready" and ready["session_present"] is False
            assert ready["granted"] == [1, 0]
            host.publish(prefix + "/host/cmd", b"hello device", qos=1).wait_for_publish(10)
            exchanged = device.next()
            assert exchanged["event"] == "exchanged", exchanged
            # The device received its own QoS 0 and QoS 1 messages and the host's.
            assert sorted(map(tuple, exchanged["got"])) == sorted([
                (prefix + "/dev/q0", "zero"), (prefix + "/dev/q1", "one"),
                (prefix + "/host/cmd", "hello device")]), exchanged
            assert exchanged["acked"] == [exchanged["pid"]] and exchanged["pending"] == 0
            stats = device.next()
            assert stats["event"] == "bulk" and stats["sent"] == bulk and stats["pending"] == 0, stats
            assert device.next()["event"] == "closed"
            assert device.finish() == 0, device.proc.stderr.read()
        assert done.wait(10), "no last will"
    finally:
        host.loop_stop()
        host.disconnect()

    topics = list(received)
    assert (prefix + "/dev/q0", b"zero", 0) in topics
    assert (prefix + "/dev/q1", b"one", 1) in topics
    assert (prefix + "/dev/status", b"offline", 1) in topics
    seqs = [json.loads(p)["seq"] for t, p, q in topics if t == prefix + "/bulk"]
    assert seqs == list(range(bulk))  # every one, in order, once
    print(f"\nmqtt connect {ready['connect_ms']} ms, client heap {ready['client_heap']} B, "
          f"{stats['msgs_per_s']} QoS 1 msgs/s")


HOSTILE_SCRIPT = r"""
import gc, json, socket, sys, time
from sbd import mqtt

port, cases = int(sys.argv[1]), int(sys.argv[2])
addr = socket.getaddrinfo("127.0.0.1", port)[0][-1]
# One client for all cases, as the firmware keeps one (its receive buffer is
# allocated once) and connects it again after each failure.
c = mqtt.MQTTClient("hostile", keepalive=0, max_packet=1024, timeout_ms=500)
messages = [0]


def on_message(topic, payload):
    messages[0] += 1


c.on_message = on_message
for i in range(cases):
    messages[0] = 0
    s = socket.socket()
    s.connect(addr)
    try:
        c.connect(s)
        deadline = time.ticks_add(time.ticks_ms(), 2000)
        while time.ticks_diff(deadline, time.ticks_ms()) > 0:
            c.poll(100)
        outcome = "no error"
    except mqtt.MQTTRefused as e:
        outcome = "refused %d" % e.code
    except mqtt.MQTTProtocolError as e:
        outcome = "protocol: " + str(e)
    except mqtt.MQTTTimeout as e:
        outcome = "timeout"
    except OSError as e:
        outcome = "oserror %s" % e
    except Exception as e:
        outcome = "OTHER %s %s" % (type(e).__name__, e)
    c.close()
    gc.collect()
    print(json.dumps({"case": i, "outcome": outcome, "messages": messages[0],
                      "mem_free": gc.mem_free()}))
gc.collect()
print(json.dumps({"alive": True, "mem_free": gc.mem_free()}))
"""

CONNACK = b"\x20\x02\x00\x00"
GOOD = b"\x32\x0b\x00\x07sbd/cmd\x00\x01"  # QoS 1, pid 1, empty payload

# (name, what the hostile broker answers CONNECT with, outcome expected on the device)
HOSTILE = [
    ("CONNACK with a 5-byte remaining length", b"\x20\xff\xff\xff\xff\x01",
     "protocol: remaining length over 4 bytes"),
    ("CONNACK refused", b"\x20\x02\x00\x05", "refused 5"),
    ("CONNACK with trailing bytes", b"\x20\x03\x00\x00\x00", "protocol: bad length for type 2"),
    ("CONNECT from the server", b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
     "protocol: unexpected packet type 1"),
    ("PUBLISH before CONNACK", GOOD, "protocol: expected CONNACK"),
    ("oversized PUBLISH, then 256 KiB", CONNACK + b"\x30\xff\xff\xff\x7f" + b"A" * 262144,
     "protocol: packet too large"),
    ("just over max_packet", CONNACK + b"\x30\x81\x08" + b"\x00\x01a" + b"B" * 1022,
     "protocol: packet too large"),
    ("wildcard topic", CONNACK + b"\x30\x06\x00\x04a/#x", "protocol: bad character in topic"),
    ("invalid UTF-8 topic", CONNACK + b"\x30\x05\x00\x03a\xff\xfe", "protocol: bad UTF-8 in topic"),
    ("overlong UTF-8 NUL", CONNACK + b"\x30\x05\x00\x03a\xc0\x80", "protocol: bad UTF-8 in topic"),
    ("topic longer than the packet", CONNACK + b"\x30\x04\x00\x40ab", "protocol: topic longer than packet"),
    ("QoS 1 PUBLISH with packet id 0", CONNACK + b"\x32\x07\x00\x03a/b\x00\x00", "protocol: packet id 0"),
    ("QoS 2 PUBLISH", CONNACK + b"\x34\x07\x00\x03a/b\x00\x01", "protocol: bad PUBLISH flags"),
    ("unsolicited SUBACK", CONNACK + b"\x90\x03\x00\x01\x00", "protocol: unexpected SUBACK"),
    ("second CONNACK", CONNACK + CONNACK, "protocol: unexpected CONNACK"),
    ("PINGREQ from the server", CONNACK + b"\xc0\x00", "protocol: unexpected packet type 12"),
    ("flood of 0xFF", CONNACK + b"\xff" * 1048576, "protocol: unexpected packet type 15"),
    ("truncated, then closed", CONNACK + b"\x30\x0a\x00\x03a/b", "protocol: truncated packet"),
    ("stalled mid-packet", CONNACK + b"\x30\x64\x00\x03a/b", "timeout"),
    ("200 good messages, then a bad one", CONNACK + GOOD * 200 + b"\x30\x03\x00\x01#",
     "protocol: bad character in topic"),
    ("closed after CONNACK", CONNACK, "oserror [Errno 104] ECONNRESET: closed by broker"),
]
STALL = {"stalled mid-packet"}


def _read_connect(conn: socket.socket) -> bytes:
    def exact(n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    first = exact(1)
    n, shift = 0, 0
    while True:
        d = exact(1)[0]
        n |= (d & 0x7F) << shift
        shift += 7
        if not d & 0x80:
            break
    return first + exact(n)


def _answer(conn: socket.socket, name: str, answer: bytes, report: list):
    with conn:
        conn.settimeout(10)
        try:
            connect = _read_connect(conn)
            report.append((name, connect[:1] == b"\x10" and b"MQTT\x04" in connect))
            conn.sendall(answer)
            if name in STALL:
                time.sleep(1.5)  # longer than the device's timeout_ms
            else:
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):  # until the device closes (PUBACKs drained)
                    pass
        except OSError:
            pass  # the device closed the connection first: what it should do


def _hostile_broker(server: socket.socket, report: list):
    # The device connects once per case, in order; each gets its own answer.
    for name, answer, _ in HOSTILE:
        conn, _ = server.accept()
        threading.Thread(target=_answer, args=(conn, name, answer, report), daemon=True).start()


def test_client_survives_a_hostile_broker(tmp_path):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((LOCALHOST, 0))
    server.listen(1)
    server.settimeout(60)
    report: list = []
    broker = threading.Thread(target=_hostile_broker, args=(server, report), daemon=True)
    broker.start()
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE_SCRIPT)
    try:
        with Device(script, str(server.getsockname()[1]), str(len(HOSTILE)), timeout=120) as device:
            results = [device.next() for _ in HOSTILE]
            alive = device.next()
            assert device.finish() == 0, device.proc.stderr.read()
    finally:
        server.close()
    assert alive["alive"] is True
    for (name, _, expected), result in zip(HOSTILE, results):
        assert result["outcome"] == expected, (name, result)
    assert results[-2]["messages"] == 200  # good messages before the bad one were handled
    assert all(ok for _, ok in report), report
