# A small MQTT 3.1.1 client: QoS 0 and 1, a last will, keep-alive. It speaks
# over a stream the caller has already connected (the caller wraps it in TLS;
# this module never does networking or TLS set-up itself).
# Everything the broker sends is parsed strictly: the remaining length is at
# most 4 bytes and at most max_packet, every field is bounded and must fill
# the packet exactly, received topics must be well-formed UTF-8 without
# wildcards or control characters, reserved flag bits must be as the spec
# says, and packet types a server never sends are refused. A violation raises
# MQTTProtocolError and nothing else; a peer that stalls mid-packet raises
# MQTTTimeout (an OSError). The caller then closes the connection and logs.
# The receive buffer (max_packet bytes) is allocated once, with the client:
# create one client at start-up and connect it again after a failure.
# Provisions: ETSI EN 303 645 5.5-1 (used over TLS by the caller), 5.13-1B
# (strict parsing of network input), 5.9-1/5.9-3 (with sbd.outbox and the
# caller's reconnect: QoS 1 acknowledgements, keep-alive detects a dead link);
# NIST IR 8259A 4; EU CRA Annex I (2)(h).
import errno
import select
import time
from micropython import const

_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBACK = const(9)
_PINGRESP = const(13)
_IN = select.POLLIN
MAX_TOPIC = const(256)    # longest topic accepted from the broker
MAX_INFLIGHT = const(32)  # QoS 1 publishes not yet acknowledged


class MQTTProtocolError(Exception):
    pass


class MQTTRefused(MQTTProtocolError):
    """The broker refused the connection (CONNACK) or a subscription (SUBACK)."""

    def __init__(self, what, code):
        super().__init__("%s refused, code %d" % (what, code))
        self.code = code


class MQTTTimeout(OSError):
    def __init__(self, what):
        super().__init__(errno.ETIMEDOUT, what)


# UTF-8 lead bytes up to `last`: continuation bytes, range of the first one.
# This rules out overlong forms, surrogates, code points past U+10FFFF and the
# C1 control characters (C2 80..C2 9F).
_UTF8 = ((0xC1, 0, 0, 0), (0xC2, 1, 0xA0, 0xBF), (0xDF, 1, 0x80, 0xBF),
         (0xE0, 2, 0xA0, 0xBF), (0xEC, 2, 0x80, 0xBF), (0xED, 2, 0x80, 0x9F),
         (0xEF, 2, 0x80, 0xBF), (0xF0, 3, 0x90, 0xBF), (0xF3, 3, 0x80, 0xBF),
         (0xF4, 3, 0x80, 0x8F))


def _topic(mv):
    # A received topic name: 1..MAX_TOPIC bytes of well-formed UTF-8, no
    # control characters, no wildcards. (MicroPython's decoder is not strict.)
    n = len(mv)
    if not 0 < n <= MAX_TOPIC:
        raise MQTTProtocolError("bad topic length")
    i = 0
    while i < n:
        c = mv[i]
        i += 1
        if c < 0x80:
            if c < 0x20 or c == 0x7F or c == 0x23 or c == 0x2B:  # '#', '+'
                raise MQTTProtocolError("bad character in topic")
            continue
        for last, k, lo, hi in _UTF8:
            if c <= last:
                break
        else:
            k = 0
        if not k or i + k > n or not lo <= mv[i] <= hi:
            raise MQTTProtocolError("bad UTF-8 in topic")
        for j in range(i + 1, i + k):
            if mv[j] & 0xC0 != 0x80:
                raise MQTTProtocolError("bad UTF-8 in topic")
        i += k
    try:
        return str(bytes(mv), "utf-8")
    except UnicodeError:  # not reached after the checks above
        raise MQTTProtocolError("bad UTF-8 in topic")


def _out(s, what, wild=False):
    # An outgoing string as bytes; a caller's mistake is a ValueError.
    b = s.encode() if isinstance(s, str) else bytes(s)
    if not 0 < len(b) <= 65535 or b"\x00" in b or (not wild and (b"#" in b or b"+" in b)):
        raise ValueError("bad " + what)
    return b


def _packet(first, n, *fields):
    # A packet: fixed header, then each field: an int is a 16-bit number, a
    # tuple (bytes,) a length-prefixed string, bytes as they are.
    size = 2 if n < 0x80 else 3 if n < 0x4000 else 4 if n < 0x200000 else 5
    pkt = bytearray(size + n)
    pkt[0] = first
    i = 1
    while True:
        pkt[i] = (n & 0x7F) | (0x80 if n > 0x7F else 0)
        n >>= 7
        i += 1
        if not n:
            break
    for f in fields:
        if isinstance(f, int):
            pkt[i], pkt[i + 1] = f >> 8, f & 0xFF
            i += 2
        else:
            if isinstance(f, tuple):
                f = f[0]
                pkt[i], pkt[i + 1] = len(f) >> 8, len(f) & 0xFF
                i += 2
            pkt[i:i + len(f)] = f
            i += len(f)
    return pkt


class MQTTClient:
    def __init__(self, client_id, keepalive=60, max_packet=4096, timeout_ms=5000):
        if not 0 <= keepalive <= 65535 or not 16 <= max_packet <= 268435455:
            raise ValueError("bad keepalive or max_packet")
        self.client_id = client_id
        self.keepalive = keepalive
        self.max_packet = max_packet
        self.timeout_ms = timeout_ms  # for the rest of a packet once it has started
        self.on_message = None  # on_message(topic: str, payload: bytes)
        self.on_ack = None      # on_ack(pid) when a QoS 1 publish is acknowledged
        self.pending = set()    # packet ids of QoS 1 publishes not yet acknowledged
        self.connected = False
        self.sock = None
        self._mv = memoryview(bytearray(max_packet))
        self._pid = self._sub_pid = 0
        self._ping_at = None

    # -- transport --------------------------------------------------------
    def _wait(self, mask, ms):
        p = self._poller
        if mask != _IN:
            p.modify(self.sock, mask)
        try:
            for _ in p.ipoll(ms):
                return True  # ready, or an error/hang-up the next call reports
            return False
        finally:
            if mask != _IN:
                p.modify(self.sock, _IN)

    def _io(self, fn, mv):
        try:
            return fn(mv)
        except OSError as e:
            if e.errno == errno.EAGAIN:  # non-blocking TLS: nothing ready yet
                return None
            raise

    def _xfer(self, mv, mask):
        # All of mv read (POLLIN) or written, in as many short transfers as it
        # takes; a peer that does not move for timeout_ms raises MQTTTimeout.
        fn = self.sock.readinto if mask == _IN else self.sock.write
        got = 0
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while got < len(mv):
            r = self._io(fn, mv[got:])
            if r:
                got += r
            elif r == 0 and mask == _IN:
                raise MQTTProtocolError("truncated packet")
            else:
                left = time.ticks_diff(deadline, time.ticks_ms())
                if left < 0 or not self._wait(mask, left):
                    raise MQTTTimeout("peer stalled")

    def _send(self, pkt):
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        self._xfer(memoryview(pkt), select.POLLOUT)
        self._last_tx = time.ticks_ms()

    def _next_pid(self):
        if len(self.pending) >= MAX_INFLIGHT:
            raise OSError(errno.ENOBUFS, "too many in flight")
        pid = self._pid
        while True:
            pid = pid % 65535 + 1
            if pid not in self.pending and pid != self._sub_pid:
                self._pid = pid
                return pid

    def _until(self, done, what):
        # Handles packets (any packets) until done() or timeout_ms.
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        while not done():
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left < 0:
                raise MQTTTimeout("no " + what)
            self.poll(left)

    # -- API --------------------------------------------------------------
    def connect(self, stream, clean_session=True, will=None):
        """Sends CONNECT, waits for CONNACK; returns the session-present flag.
        `will` is (topic, payload, qos, retain). Puts the stream in
        non-blocking mode. QoS 1 publishes of an earlier connection are
        forgotten (the caller's outbox sends them again)."""
        cid = _out(self.client_id, "client id") if self.client_id or not clean_session else b""
        flags = 0x02 if clean_session else 0
        fields = [b"\x00\x04MQTT\x04", bytes((flags,)), self.keepalive, (cid,)]
        if will:
            wt, wp, wq, wr = will
            if wq not in (0, 1, 2) or len(wp) > 65535:
                raise ValueError("bad will")
            fields[1] = bytes((flags | 0x04 | wq << 3 | (0x20 if wr else 0),))
            fields += [(_out(wt, "will topic"),), (bytes(wp),)]
        n = sum(len(f[0]) + 2 if isinstance(f, tuple) else 2 if isinstance(f, int) else len(f)
                for f in fields)
        if self.sock is not stream:
            self.close()  # a stream of an earlier connection
        self.sock = stream
        if hasattr(stream, "setblocking"):
            stream.setblocking(False)
        self._poller = select.poll()
        self._poller.register(stream, _IN)
        self.pending = set()
        self.connected = False
        self._clean = clean_session
        self._sub_pid = 0
        self._ping_at = None
        self._last_rx = time.ticks_ms()
        self._send(_packet(0x10, n, *fields))
        self._until(lambda: self.connected, "CONNACK")
        return self._session

    def publish(self, topic, payload, qos=0, retain=False):
        """Returns the packet id of a QoS 1 publish (see `pending`), else None."""
        t = _out(topic, "topic")
        if isinstance(payload, str):
            payload = payload.encode()
        if qos not in (0, 1):
            raise ValueError("qos")
        n = 2 + len(t) + 2 * qos + len(payload)
        if n > self.max_packet:
            raise ValueError("payload too large")
        first = _PUBLISH << 4 | qos << 1 | (1 if retain else 0)
        if not qos:
            self._send(_packet(first, n, (t,), payload))
            return None
        pid = self._next_pid()
        self.pending.add(pid)
        self._send(_packet(first, n, (t,), pid, payload))
        return pid

    def subscribe(self, topic, qos=0):
        """Subscribes to one topic filter and waits for the SUBACK; returns the
        granted QoS. A refusal raises MQTTRefused."""
        t = _out(topic, "topic filter", wild=True)
        if qos not in (0, 1):
            raise ValueError("qos")
        pid = self._next_pid()
        self._send(_packet(0x82, 5 + len(t), pid, (t,), bytes((qos,))))
        self._sub_pid, self._sub_qos = pid, qos
        self._until(lambda: not self._sub_pid, "SUBACK")
        return self._granted

    def ping(self):
        self._send(b"\xc0\x00")
        if self._ping_at is None:
            self._ping_at = time.ticks_ms()

    def disconnect(self):
        try:
            self._send(b"\xe0\x00")
        except OSError:
            pass
        self.close()

    def close(self):
        """Closes the stream without DISCONNECT (the broker sends the will)."""
        self.connected = False
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def keepalive_due(self):
        if not self.keepalive or self._ping_at is not None or not self.connected:
            return False
        now = time.ticks_ms()
        idle = max(time.ticks_diff(now, self._last_tx), time.ticks_diff(now, self._last_rx))
        return idle >= self.keepalive * 750

    def poll(self, timeout_ms=0):
        """Handles at most one packet, waiting up to timeout_ms for it to start;
        pings when the keep-alive is due. Returns the packet type, or None."""
        if self._ping_at is not None and time.ticks_diff(
                time.ticks_ms(), self._ping_at) > max(self.keepalive * 500, self.timeout_ms):
            raise MQTTTimeout("no PINGRESP")
        if self.sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        if self.keepalive_due():
            self.ping()
        mv = self._mv
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        r = None
        while r is None:  # None: e.g. a TLS record without application data
            left = time.ticks_diff(deadline, time.ticks_ms())
            if not self._wait(_IN, max(left, 0)):
                return None
            r = self._io(self.sock.readinto, mv[:1])
            if r is None and left <= 0:
                return None
        if not r:
            raise OSError(errno.ECONNRESET, "closed by broker")
        kind, flags = mv[0] >> 4, mv[0] & 0x0F
        if kind == _PUBLISH:
            if (flags >> 1) & 3 > 1 or (flags & 8 and not flags & 6):
                raise MQTTProtocolError("bad PUBLISH flags")  # QoS 2/3; DUP on QoS 0
        elif kind not in (_CONNACK, _PUBACK, _SUBACK, _PINGRESP):
            raise MQTTProtocolError("unexpected packet type %d" % kind)
        elif flags:
            raise MQTTProtocolError("reserved flags set")
        if (kind == _CONNACK) == self.connected:
            raise MQTTProtocolError("unexpected CONNACK" if self.connected else "expected CONNACK")
        n = shift = 0
        for k in range(4):
            self._xfer(mv[:1], _IN)
            n |= (mv[0] & 0x7F) << shift
            if not mv[0] & 0x80:
                if k and not mv[0]:
                    raise MQTTProtocolError("remaining length not minimal")
                break
            shift += 7
        else:
            raise MQTTProtocolError("remaining length over 4 bytes")
        if n > self.max_packet:
            raise MQTTProtocolError("packet too large")
        if kind == _PUBLISH:
            if n < 3 + (flags & 2):
                raise MQTTProtocolError("short PUBLISH")
        elif n != (0 if kind == _PINGRESP else 3 if kind == _SUBACK else 2):
            raise MQTTProtocolError("bad length for type %d" % kind)
        self._xfer(mv[:n], _IN)
        self._last_rx = time.ticks_ms()
        self._handle(kind, flags, n)
        return kind

    def _handle(self, kind, flags, n):
        mv = self._mv
        pid = mv[0] << 8 | mv[1]  # PUBACK, SUBACK
        if kind == _PUBLISH:
            qos = (flags >> 1) & 1
            end = 2 + pid
            if end + 2 * qos > n:
                raise MQTTProtocolError("topic longer than packet")
            topic = _topic(mv[2:end])
            if qos:
                pid = mv[end] << 8 | mv[end + 1]
                if not pid:
                    raise MQTTProtocolError("packet id 0")
                end += 2
            if self.on_message:
                self.on_message(topic, bytes(mv[end:n]))
            if qos:
                self._send(bytes((_PUBACK << 4, 2, pid >> 8, pid & 0xFF)))
        elif kind == _PUBACK:
            if not pid:
                raise MQTTProtocolError("packet id 0")
            if pid in self.pending:  # an unknown id acknowledges nothing
                self.pending.discard(pid)
                if self.on_ack:
                    self.on_ack(pid)
        elif kind == _SUBACK:
            if not self._sub_pid or pid != self._sub_pid:
                raise MQTTProtocolError("unexpected SUBACK")
            self._sub_pid = 0
            if mv[2] == 0x80:
                raise MQTTRefused("subscription", 0x80)
            if mv[2] > self._sub_qos:
                raise MQTTProtocolError("bad SUBACK code")
            self._granted = mv[2]
        elif kind == _PINGRESP:
            self._ping_at = None
        else:  # CONNACK
            if mv[0] & 0xFE or mv[1] > 5:
                raise MQTTProtocolError("bad CONNACK")
            if mv[1]:
                raise MQTTRefused("connection", mv[1])
            if mv[0] and self._clean:
                raise MQTTProtocolError("session present on a clean session")
            self._session = bool(mv[0])
            self.connected = True
