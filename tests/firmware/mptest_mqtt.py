# MicroPython unit tests of the MQTT client (sbd.mqtt) over an in-memory
# stream: exact encodings, the QoS 1 flow, keep-alive, and strict parsing of
# everything a broker can send (a table of malformed packets and a fuzz loop).
import binascii
import io
import select
import time


class _OnFirstUse:
    # `from sbd import mqtt` when a test first uses it, after the runner has
    # let go of this file's source: compiling sbd/mqtt.py from source takes
    # some 60 KB of the device-sized heap for a moment (the device itself
    # gets it precompiled, as .mpy).
    def __getattr__(self, name):
        global mqtt
        from sbd import mqtt
        return getattr(mqtt, name)


mqtt = _OnFirstUse()

CONNACK_OK = b"\x20\x02\x00\x00"
SMALL = 512  # max_packet here: tests make many clients, each with its own buffer


class Fake(io.IOBase):
    """A stream as the client sees a TLS socket: reads come back short (at
    most `chunk` bytes), and with `stutter` every other read has nothing ready
    yet (None). Without `eof` an exhausted stream just has no data (a stalled
    peer); with it, reads return 0 (closed)."""

    def __init__(self, data=b"", chunk=3, stutter=False, eof=False):
        self.data = bytes(data)
        self.pos = 0
        self.chunk = chunk
        self.stutter = stutter
        self.eof = eof
        self.out = bytearray()
        self.closed = False
        self._tick = False

    def feed(self, data):
        self.data = self.data[self.pos:] + data
        self.pos = 0

    def left(self):
        return len(self.data) - self.pos

    def readinto(self, buf):
        if not self.left():
            return 0 if self.eof else None
        self._tick = not self._tick
        if self.stutter and self._tick:
            return None
        n = min(len(buf), self.chunk, self.left())
        buf[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n

    def write(self, buf):
        self.out += buf
        return len(buf)

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL
            ready = arg & select.POLLOUT
            if arg & select.POLLIN and (self.left() or self.eof):
                ready |= select.POLLIN
            return ready
        return 0

    def close(self):
        self.closed = True


def connected(data=b"", max_packet=SMALL, **kw):
    f = Fake(CONNACK_OK + data, **kw)
    c = mqtt.MQTTClient("dev1", timeout_ms=30, max_packet=max_packet)
    c.connect(f)
    f.out = bytearray()
    return c, f


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("did not raise %s" % exc.__name__)


def test_connect_bytes_with_will():
    f = Fake(CONNACK_OK)
    c = mqtt.MQTTClient("dev1", keepalive=60, max_packet=SMALL)
    assert c.connect(f, will=("devices/dev1/status", b"offline", 1, True)) is False
    assert c.connected
    assert bytes(f.out) == (b"\x10\x2e\x00\x04MQTT\x04\x2e\x00\x3c\x00\x04dev1"
                            b"\x00\x13devices/dev1/status\x00\x07offline"), f.out


def test_connect_bytes_persistent_session():
    f = Fake(b"\x20\x02\x01\x00")
    c = mqtt.MQTTClient("dev1", keepalive=300, max_packet=SMALL)
    assert c.connect(f, clean_session=False) is True  # session present
    assert bytes(f.out) == b"\x10\x10\x00\x04MQTT\x04\x00\x01\x2c\x00\x04dev1", f.out


def test_connack_refused_raises_with_code():
    for code in range(1, 6):
        c = mqtt.MQTTClient("dev1", timeout_ms=30, max_packet=SMALL)
        e = raises(mqtt.MQTTProtocolError, c.connect, Fake(b"\x20\x02\x00" + bytes([code])))
        assert isinstance(e, mqtt.MQTTRefused) and e.code == code, e
        assert not c.connected


def test_no_connack_times_out():
    c = mqtt.MQTTClient("dev1", timeout_ms=30, max_packet=SMALL)
    raises(mqtt.MQTTTimeout, c.connect, Fake(b""))
    c.timeout_ms = 30
    e = raises(OSError, c.connect, Fake(b"\x20\x02\x00"))
    assert isinstance(e, mqtt.MQTTTimeout) and e.errno == 110  # stalled mid-CONNACK


def test_publish_encodings():
    c, f = connected()
    assert c.publish("a/b", b"hi") is None
    assert bytes(f.out) == b"\x30\x07\x00\x03a/bhi"
    f.out = bytearray()
    assert c.publish("a/b", "hi", qos=1, retain=True) == 1
    assert bytes(f.out) == b"\x33\x09\x00\x03a/b\x00\x01hi"
    f.out = bytearray()
    c.publish("t", b"x" * 200)  # two-byte remaining length: 2 + 1 + 200 = 203
    assert bytes(f.out[:5]) == b"\x30\xcb\x01\x00\x01" and len(f.out) == 206
    for bad in ("", "a/#", "a/+/b", "a\x00b"):
        raises(ValueError, c.publish, bad, b"x")
    raises(ValueError, c.publish, "t", b"x" * SMALL)  # over max_packet
    raises(ValueError, c.publish, "t", b"x", 2)


def test_publish_round_trip_through_parser():
    # What one client encodes, another parses back, in 1-byte stuttering reads.
    for payload in (b"", b"hello", bytes(range(256)) + bytes(200)):
        for qos in (0, 1):
            a, fa = connected()
            a.publish("devices/dev1/t\u00e9l\u00e9m\u00e9trie", payload, qos)
            got = []
            b, fb = connected(bytes(fa.out), chunk=1, stutter=True)
            b.on_message = lambda t, p: got.append((t, p))
            assert b.poll(100) == 3
            assert got == [("devices/dev1/t\u00e9l\u00e9m\u00e9trie", payload)], got
            # A QoS 1 message is acknowledged with its packet id.
            assert bytes(fb.out) == (b"\x40\x02\x00\x01" if qos else b""), fb.out


def test_qos1_publish_and_puback_flow():
    c, f = connected()
    acked = []
    c.on_ack = acked.append
    p1 = c.publish("t", b"1", qos=1)
    p2 = c.publish("t", b"2", qos=1)
    assert (p1, p2) == (1, 2) and c.pending == {1, 2}
    f.feed(b"\x40\x02\x00\x02" + b"\x40\x02\x00\x07" + b"\x40\x02\x00\x01")
    assert c.poll(0) == 4 and c.pending == {1}
    assert c.poll(0) == 4 and c.pending == {1}  # unknown id: acknowledges nothing
    assert c.poll(0) == 4 and c.pending == set()
    assert acked == [2, 1]
    assert c.poll(0) is None  # nothing more


def test_packet_ids_wrap_and_skip_pending():
    c, f = connected()
    c._pid = 65534
    assert c.publish("t", b"", 1) == 65535
    assert c.publish("t", b"", 1) == 1
    c._pid = 0
    assert c.publish("t", b"", 1) == 2  # 1 still in flight
    while len(c.pending) < mqtt.MAX_INFLIGHT:
        c.publish("t", b"", 1)
    raises(OSError, c.publish, "t", b"", 1)


def test_subscribe_and_suback():
    c, f = connected(b"\x90\x03\x00\x01\x01")
    assert c.subscribe("devices/dev1/cmd/#", 1) == 1
    assert bytes(f.out) == b"\x82\x17\x00\x01\x00\x12devices/dev1/cmd/#\x01", f.out
    c, f = connected(b"\x90\x03\x00\x01\x80")
    e = raises(mqtt.MQTTRefused, c.subscribe, "x/#", 1)
    assert e.code == 0x80
    c, f = connected(b"\x90\x03\x00\x01\x02")  # granted more than asked
    raises(mqtt.MQTTProtocolError, c.subscribe, "x", 1)
    c, f = connected(b"\x90\x03\x00\x09\x00")  # another packet id
    raises(mqtt.MQTTProtocolError, c.subscribe, "x", 0)
    c, f = connected()
    raises(mqtt.MQTTTimeout, c.subscribe, "x", 0)


def test_messages_before_suback_are_delivered():
    got = []
    c, f = connected(b"\x30\x05\x00\x01xab" + b"\x90\x03\x00\x01\x00")
    c.on_message = lambda t, p: got.append((t, p))
    assert c.subscribe("x", 0) == 0
    assert got == [("x", b"ab")]


def test_keepalive_ping_and_dead_link():
    c, f = connected(chunk=64)
    c.keepalive = 1
    assert not c.keepalive_due()
    time.sleep_ms(800)
    assert c.keepalive_due()
    assert c.poll(0) is None and bytes(f.out) == b"\xc0\x00"
    assert not c.keepalive_due()  # one ping at a time
    f.feed(b"\xd0\x00")
    assert c.poll(0) == 13 and not c.keepalive_due()
    time.sleep_ms(800)
    c.poll(0)
    time.sleep_ms(600)  # no PINGRESP within keepalive/2
    raises(mqtt.MQTTTimeout, c.poll, 0)


def test_disconnect():
    c, f = connected()
    c.disconnect()
    assert bytes(f.out) == b"\xe0\x00" and f.closed and not c.connected
    raises(OSError, c.publish, "t", b"x")


def test_closed_and_stalled_streams():
    c, f = connected(eof=True)
    raises(OSError, c.poll, 0)  # closed between packets: a network error
    c, f = connected(b"\x30\x0a\x00\x03a/b")
    raises(mqtt.MQTTTimeout, c.poll, 0)  # stalled mid-packet


# Malformed input, as `name | packet | the reason MQTTProtocolError gives`.
# A packet is hex bytes and 'text' (no spaces; 'a'*3 repeats). (Data in a
# string, not literals: the test file is compiled in the device-sized heap.)
MALFORMED_AFTER_CONNACK = """
remaining length of 5 bytes        | 30 ffffffff01           | remaining length over 4 bytes
remaining length not minimal       | d0 8000                 | remaining length not minimal
over max_packet (body never sent)  | 30 8920                 | packet too large
largest remaining length           | 30 ffffff7f             | packet too large
truncated PUBLISH                  | 30 0a 0003 'a/bxy'      | truncated packet
truncated header                   | 30                      | truncated packet
truncated remaining length         | 30 80                   | truncated packet
PUBACK with trailing byte          | 40 03 0001 00           | bad length for type 4
short PUBACK                       | 40 01 00                | bad length for type 4
PINGRESP with trailing byte        | d0 01 00                | bad length for type 13
SUBACK unasked                     | 90 03 0001 00           | unexpected SUBACK
PUBACK flags                       | 42 02 0001              | reserved flags set
PINGRESP flags                     | d1 00                   | reserved flags set
PUBLISH QoS 2                      | 34 07 0003 'a/b' 0001   | bad PUBLISH flags
PUBLISH QoS 3                      | 36 07 0003 'a/b' 0001   | bad PUBLISH flags
DUP on QoS 0                       | 38 05 0003 'a/b'        | bad PUBLISH flags
wildcard # in topic                | 30 05 0003 'a/#'        | bad character in topic
wildcard + in topic                | 30 05 0003 'a+b'        | bad character in topic
empty topic                        | 30 04 0000 'ab'         | bad topic length
topic longer than packet           | 30 04 0009 'ab'         | topic longer than packet
short PUBLISH                      | 30 01 00                | short PUBLISH
QoS 1 PUBLISH, no room for the id  | 32 05 0003 'a/b'        | topic longer than packet
invalid UTF-8                      | 30 04 0002 c328         | bad UTF-8 in topic
overlong UTF-8                     | 30 04 0002 c0af         | bad UTF-8 in topic
UTF-16 surrogate                   | 30 05 0003 eda080       | bad UTF-8 in topic
past U+10FFFF                      | 30 06 0004 f4908080     | bad UTF-8 in topic
cut UTF-8 sequence                 | 30 04 0002 'a' e2       | bad UTF-8 in topic
NUL in topic                       | 30 05 0003 'a' 00 'b'   | bad character in topic
C1 control in topic                | 30 04 0002 c285         | bad UTF-8 in topic
topic over MAX_TOPIC               | 30 8302 0101 'a'*257    | bad topic length
reserved type 0                    | 00 00                   | unexpected packet type 0
reserved type 15                   | f0 00                   | unexpected packet type 15
server-sent CONNECT                | 10 0c 0004 'MQTT' 04 02 003c 0000 | unexpected packet type 1
server-sent SUBSCRIBE              | 82 06 0001 0001 'a' 00  | unexpected packet type 8
server-sent UNSUBSCRIBE            | a2 05 0001 0001 'a'     | unexpected packet type 10
server-sent PINGREQ                | c0 00                   | unexpected packet type 12
server-sent DISCONNECT             | e0 00                   | unexpected packet type 14
PUBREC (QoS 2 never used)          | 50 02 0001              | unexpected packet type 5
PUBREL                             | 62 02 0001              | unexpected packet type 6
PUBCOMP                            | 70 02 0001              | unexpected packet type 7
UNSUBACK (never unsubscribed)      | b0 02 0001              | unexpected packet type 11
QoS 1 PUBLISH with packet id 0     | 32 07 0003 'a/b' 0000   | packet id 0
PUBACK with packet id 0            | 40 02 0000              | packet id 0
second CONNACK                     | 20 02 0000              | unexpected CONNACK
"""

MALFORMED_CONNACK = """
CONNACK with trailing byte         | 20 03 0000 00           | bad length for type 2
short CONNACK                      | 20 01 00                | bad length for type 2
CONNACK flags                      | 21 02 0000              | reserved flags set
CONNACK reserved ack flags         | 20 02 0200              | bad CONNACK
CONNACK unknown return code        | 20 02 0006              | bad CONNACK
session present on a clean session | 20 02 0100              | session present on a clean session
PUBLISH before CONNACK             | 30 05 0003 'a/b' 20020000 | expected CONNACK
PINGRESP before CONNACK            | d0 00 20020000          | expected CONNACK
server-sent CONNECT                | 10 0c 0004 'MQTT' 04 02 003c 0000 | unexpected packet type 1
"""


def _bytes(spec):
    out = b""
    for tok in spec.split():
        if tok[0] == "'":
            text, _, times = tok[1:].partition("'")
            out += text.encode() * (int(times[1:]) if times else 1)
        else:
            out += binascii.unhexlify(tok)
    return out


def _table(text):
    for line in text.strip().split("\n"):
        name, spec, reason = line.split(" | ")
        yield name.strip(), _bytes(spec), reason.strip()


def _drain(c, f):
    while f.left():
        c.poll(0)


def _only_protocol_error(name, fn, *args):
    try:
        fn(*args)
    except mqtt.MQTTProtocolError as e:
        return str(e)
    except Exception as e:
        raise AssertionError("%s: %s %s" % (name, type(e).__name__, e))
    raise AssertionError("%s: accepted" % name)


def _refused_for(name, reason, fn, *args):
    got = _only_protocol_error(name, fn, *args)
    assert got == reason, (name, got, reason)


def test_malformed_packets_raise_protocol_error_only():
    for chunk in (1, 3, 1000):
        for name, data, reason in _table(MALFORMED_AFTER_CONNACK):
            c, f = connected(data, chunk=chunk, stutter=chunk == 1, eof=True)
            _refused_for(name, reason, _drain, c, f)
        for name, data, reason in _table(MALFORMED_CONNACK):
            c = mqtt.MQTTClient("dev1", timeout_ms=30, max_packet=SMALL)
            _refused_for(name, reason, c.connect, Fake(data, chunk=chunk, eof=True))


def test_oversized_packet_rejected_before_reading_body():
    c, f = connected(b"\x30\xff\xff\xff\x7f" + b"x" * 100, max_packet=64)
    assert _only_protocol_error("huge", c.poll, 0) == "packet too large"
    assert f.left() == 100
    c, f = connected(b"\x30\x41" + b"x" * 65, max_packet=64)
    assert _only_protocol_error("65 > 64", c.poll, 0) == "packet too large"
    c, f = connected(b"\x30\x40\x00\x01t" + b"x" * 61, max_packet=64)
    assert c.poll(0) == 3  # exactly max_packet is fine


def _xorshift(state):
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


SEEDS = [
    b"\x30\x07\x00\x03a/bhi", b"\x32\x09\x00\x03a/b\x00\x05hi", b"\x40\x02\x00\x01",
    b"\x90\x03\x00\x01\x00", b"\xd0\x00", b"\x31\x0a\x00\x04\xc3\xa9/x\x00\x09",
    b"\x30\x82\x01\x00\x01x" + b"p" * 127,
]


def test_fuzz_only_protocol_errors_or_timeouts_escape():
    rnd = [0x2545F491]

    def r(n):
        rnd[0] = _xorshift(rnd[0])
        return rnd[0] % n

    c = mqtt.MQTTClient("dev1", max_packet=256)
    outcomes = {}
    messages = 0

    def on_message(topic, payload):
        assert isinstance(topic, str) and "#" not in topic and "+" not in topic
        assert isinstance(payload, bytes) and len(payload) <= 256

    c.on_message = on_message
    for case in range(3000):
        kind = r(4)
        if kind == 0:  # random bytes
            data = bytes(r(256) for _ in range(r(24)))
        else:
            data = bytearray(SEEDS[r(len(SEEDS))] + SEEDS[r(len(SEEDS))])
            for _ in range(1 + r(4)):
                op = r(3) if kind != 3 else 0
                i = r(len(data))
                if op == 0:
                    data[i] = r(256)  # replace a byte
                elif op == 1:
                    data = data[:i]  # truncate
                else:
                    data = data[:i] + bytes(r(256) for _ in range(r(6))) + data[i:]
                if not data:
                    break
        f = Fake(CONNACK_OK + bytes(data), chunk=1 + r(8), stutter=bool(r(2)))
        c.timeout_ms = 50
        c.connect(f)
        c.timeout_ms = 2  # a truncated packet soon times out
        c.pending = set(range(1, 10))
        if r(2):
            c._sub_pid, c._sub_qos = 1, 1
        try:
            while f.left():
                if c.poll(0) == 3:
                    messages += 1
            outcome = "ok"
        except mqtt.MQTTProtocolError as e:
            outcome = str(e)
        except mqtt.MQTTTimeout:
            outcome = "timeout"
        except Exception as e:
            raise AssertionError("case %d %r: %s %s" % (case, bytes(data), type(e).__name__, e))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # The generator reached the parser's accept and reject paths alike.
    assert messages > 100 and outcomes.get("ok", 0) > 100, (messages, outcomes)
    assert outcomes.get("timeout", 0) > 50 and len(outcomes) > 12, outcomes
    print("fuzz outcomes", messages, "messages", sorted(outcomes.items()))
