# MicroPython side of the heap measurement (sbd_harness.tools.heap32): runs
# one workload of the firmware's own modules (/lib, compiled .mpy as on the
# device) on a MicroPython that is not an ESP32, with stand-ins for what the
# chip's ROM and ESP-IDF provide: machine, esp32.NVS (a dict), network
# (associated), socket and ssl (the broker is an in-memory stream; mbedTLS's
# memory is outside the Python heap on the chip too), and a broker that
# answers CONNECT, SUBSCRIBE and QoS 1 PUBLISH and pushes an update.
# The same code runs on the 64-bit unix port and on the 32-bit WebAssembly
# port, both with this file compiled by mpy-cross; the "idle" workload sets up
# the stand-ins and nothing else, and is subtracted by the host.
# The host decides whether the workload fitted: "HEAP32 OK" at the end, and
# micropython.mem_info()'s "GC: total" unchanged (a port whose heap grows on
# demand, as the ESP32's and the WebAssembly port's do, adds an area only
# after a collection failed to make room).
import binascii
import gc
import io
import json
import micropython
import select
import sys
import time

DEVICE_ID = b"\x02\xbd\x00\x00\x12\x34"
NVS = {}  # (namespace, key) -> value: what provisioning left
_NOT_FOUND = -0x1102


class _NVS:
    def __init__(self, ns):
        self.ns = ns

    def get_blob(self, key, buf):
        v = NVS.get((self.ns, key))
        if not isinstance(v, bytes):
            raise OSError(_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        if len(v) > len(buf):
            raise OSError(-0x110C, "ESP_ERR_NVS_INVALID_LENGTH")
        buf[:len(v)] = v
        return len(v)

    def set_blob(self, key, value):
        NVS[(self.ns, key)] = bytes(value)

    def get_i32(self, key):
        v = NVS.get((self.ns, key))
        if not isinstance(v, int):
            raise OSError(_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        return v

    def set_i32(self, key, value):
        NVS[(self.ns, key)] = value

    def erase_key(self, key):
        NVS.pop((self.ns, key))

    def commit(self):
        pass


class _Module:
    pass


def _machine():
    m = _Module()
    m.unique_id = lambda: DEVICE_ID
    m.reset_cause = lambda: 1

    def reset():
        raise SystemExit("machine.reset")
    m.reset = reset
    return m


class _WLAN:
    def __init__(self, _if):
        pass

    def isconnected(self):
        return True

    def active(self, *a):
        return True

    def status(self, *a):
        return 1010


class _Socket:
    def settimeout(self, t):
        pass

    def connect(self, addr):
        pass

    def close(self):
        pass


class _Context:
    def __init__(self, proto):
        self.verify_mode = 0

    def load_verify_locations(self, cadata=None):
        pass

    def set_ciphers(self, ciphers):
        pass

    def load_cert_chain(self, cert, key):
        pass

    def wrap_socket(self, sock, server_hostname=None):
        return BROKER


# Emscripten's errno numbers, which the WebAssembly port's VfsPosix raises
# as they are, and the numbers MicroPython's errno module (and the chip) use.
_EMSCRIPTEN_ERRNO = {20: 17, 44: 2, 54: 20, 31: 21, 55: 39}


def _os():
    # The unix and WebAssembly ports' VfsPosix, mounted with a root folder,
    # builds both paths of a rename in one buffer (the second overwrites the
    # first): renames go by relative paths from "/", which it handles.
    import os
    m = _Module()
    for name in dir(os):
        setattr(m, name, getattr(os, name))
    if sys.platform == "webassembly":
        def mkdir(path):
            try:
                os.mkdir(path)
            except OSError as e:
                raise OSError(_EMSCRIPTEN_ERRNO.get(e.errno, e.errno))
        m.mkdir = mkdir

    def rename(old, new):
        here = os.getcwd()
        os.chdir("/")
        try:
            os.rename(old.lstrip("/"), new.lstrip("/"))
        finally:
            os.chdir(here)
    m.rename = rename
    if not hasattr(os, "urandom"):  # the WebAssembly port has none: the chip's RNG, stood in for
        import random

        def urandom(n):
            out = bytearray(n)  # small ints only: no big-integer garbage per byte
            for i in range(n):
                out[i] = random.getrandbits(8)
            return bytes(out)
        m.urandom = urandom
    return m


_ERASED = b"\xff" * 256  # made with the stand-ins (the idle run has it too): an erase allocates nothing


class _Partition:
    """esp32.Partition for the app slots, as the port gives it (ports/esp32/esp32_partition.c):
    RUNNING is ota_0, holding the app image the host wrote; get_next_update() is ota_1. The
    slots are files (/inputs/ota_0.bin, /data/ota_1.bin), outside the Python heap as the chip's
    flash is; each block operation opens its file, as the chip's calls allocate nothing that stays."""
    RUNNING = 1
    SLOTS = {"ota_0": ("/inputs/ota_0.bin", 0x10000), "ota_1": ("/data/ota_1.bin", 0x190000)}
    SIZE = 0x180000
    booted = None  # what set_boot() chose

    def __init__(self, which):
        self.label = "ota_0" if which == _Partition.RUNNING else which

    def info(self):
        return (0, 0x10 + int(self.label[-1]), self.SLOTS[self.label][1], self.SIZE, self.label, False)

    def get_next_update(self):
        return _Partition("ota_1" if self.label == "ota_0" else "ota_0")

    def readblocks(self, block, buf, off=0):
        with open(self.SLOTS[self.label][0], "rb") as f:
            f.seek(block * 4096 + off)
            n = f.readinto(buf)
        if n < len(buf):  # past what the file holds: erased flash
            for i in range(n, len(buf)):
                buf[i] = 0xFF

    def writeblocks(self, block, buf, off=0):
        with open(self.SLOTS[self.label][0], "r+b") as f:
            f.seek(block * 4096 + off)
            f.write(buf)

    def ioctl(self, op, arg):
        if op == 6:  # BLOCK_ERASE
            with open(self.SLOTS[self.label][0], "r+b") as f:
                f.seek(arg * 4096)
                for _ in range(4096 // len(_ERASED)):
                    f.write(_ERASED)
            return 0
        return {4: self.SIZE // 4096, 5: 4096}.get(op, 0)

    def set_boot(self):
        _Partition.booted = self.label

    @staticmethod
    def mark_app_valid_cancel_rollback():
        pass


def _stand_ins():
    esp32 = _Module()
    esp32.NVS = _NVS
    esp32.Partition = _Partition
    network = _Module()
    network.WLAN = _WLAN
    network.STA_IF = 0
    network.AP_IF = 1
    network.hostname = lambda *name: None  # the port's mDNS/DHCP hostname, set before the interface
    network.STAT_CONNECTING = 1001
    network.STAT_GOT_IP = 1010
    socket = _Module()
    socket.socket = _Socket
    socket.getaddrinfo = lambda host, port: [(2, 1, 0, "", ("127.0.0.1", port))]
    ssl = _Module()
    ssl.SSLContext = _Context
    ssl.PROTOCOL_TLS_CLIENT = 16
    ssl.CERT_REQUIRED = 2
    for name, mod in (("machine", _machine()), ("esp32", esp32), ("network", network),
                      ("socket", socket), ("ssl", ssl)):
        sys.modules[name] = mod


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def publish_packet(topic, payload):
    t = topic.encode()
    return b"\x30" + _varint(2 + len(t) + len(payload)) + len(t).to_bytes(2, "big") + t + payload


class Broker(io.IOBase):
    """The broker end of the TLS stream: reads what the device writes,
    answers it, and hands the device what `feed()` queued."""

    def __init__(self):
        self.out = b""     # to the device
        self.pos = 0
        self.inp = bytearray()  # from the device
        self.results = []  # events the device published on .../result

    def feed(self, data):
        self.out = self.out[self.pos:] + data
        self.pos = 0

    def idle(self):
        return self.pos >= len(self.out)

    def readinto(self, buf):
        n = min(len(buf), len(self.out) - self.pos, 700)  # a TLS record's worth at most
        if n <= 0:
            return None
        buf[:n] = self.out[self.pos:self.pos + n]
        self.pos += n
        return n

    def write(self, buf):
        self.inp += buf
        while self._packet():
            pass
        return len(buf)

    def _packet(self):
        i, n, shift = 1, 0, 0
        while True:
            if i >= len(self.inp):
                return False
            b = self.inp[i]
            n |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if not b & 0x80:
                break
        if len(self.inp) < i + n:
            return False
        kind, body = self.inp[0], bytes(self.inp[i:i + n])
        self.inp = self.inp[i + n:]
        if kind >> 4 == 1:
            self.feed(b"\x20\x02\x00\x00")
        elif kind >> 4 == 3:
            tl = int.from_bytes(body[:2], "big")
            topic = body[2:2 + tl]
            at = 2 + tl
            if kind & 0x06:
                self.feed(b"\x40\x02" + body[at:at + 2])
                at += 2
            if topic.endswith(b"/result"):
                event = json.loads(body[at:].decode())
                self.results.append(event.get("event"))
                if event.get("error"):
                    print("RESULT", event)
        elif kind >> 4 == 8:
            self.feed(b"\x90\x03" + body[:2] + b"\x01")
        elif kind >> 4 == 12:
            self.feed(b"\xd0\x00")
        return True

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL
            return (arg & select.POLLOUT) | (arg & select.POLLIN if not self.idle() else 0)
        return 0

    def close(self):
        pass


BROKER = None
SETTINGS = {"wifi_ssid": "lab", "wifi_psk": "k" * 16, "broker_addr": "127.0.0.1", "broker_port": 8883,
            "broker_host": "broker.sbd.lab", "telemetry_s": 60}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _ticks(link, done, limit=20000):
    # One pass of the device's main loop per step.
    for _ in range(limit):
        if done():
            return
        link.tick()
        yield
    raise AssertionError("workload did not finish")


# -- workloads: each gets the inputs the host wrote, runs the firmware, checks it worked --
def w_idle():
    yield


def w_p256():
    from sbd import p256
    v = json.loads(_read("/inputs/p256.json"))
    pk, digest, sig = (binascii.unhexlify(v[k]) for k in ("pk", "digest", "sig"))
    yield
    assert p256.verify(pk, digest, sig)


def w_manifest():
    from sbd import manifest, slots
    with open("/inputs/update.sbdota", "rb") as f:
        data = f.read(12 + 8192 + 72)
    n = int.from_bytes(data[8:12], "big")
    body, sig = data[12:12 + n], data[12 + n:12 + n + 72]
    data = None
    yield
    m = manifest.verify(body, sig, slots.trusted_keys())
    manifest.check(m)


def w_outbox():
    from sbd.outbox import Outbox
    o = Outbox("/data/outbox")
    for i in range(40):
        o.put(json.dumps({"uptime_s": i, "heap_free": 100000 + i}).encode())
        yield
    for seq, payload in o.pending(16):
        o.ack(seq)
    assert len(o.pending(16)) == 16


def w_mqtt():
    from sbd.mqtt import MQTTClient
    got = []
    c = MQTTClient("02bd00001234", keepalive=30, max_packet=1536)
    c.on_message = lambda topic, payload: got.append(len(payload))
    c.connect(BROKER)
    for i in range(20):
        BROKER.feed(publish_packet("devices/02bd00001234/cmd", b"x" * (1000 + i)))
        while not BROKER.idle():
            c.poll(0)
        yield
    assert len(got) == 20, got


def _online():
    from sbd.link import Link
    link = Link(SETTINGS, lambda line: {"sbd": "cmd", "ok": False})
    yield from _ticks(link, lambda: link.client is not None and link.inflight is None and link.outbox.pending(1) == [])
    return link


def w_connect():
    # Wi-Fi up, clock set, TLS, CONNECT with its will, the birth message,
    # two subscriptions, one telemetry message through the outbox (QoS 1)
    # until its PUBACK.
    yield from _online()


def w_ota():
    # Online as above, then an update over MQTT as `sbd ota push` sends it:
    # begin, 1024-byte chunks at their offsets, end; until "installed".
    yield from _update("/inputs/update.sbdota")


def w_ota_image():
    # The same for a whole-firmware update: an app image streamed into the next app
    # slot (the _Partition stand-in), checked again from it, set_boot(); until "installed".
    yield from _update("/inputs/image.sbdota", image=True)
    assert _Partition.booted == "ota_1", _Partition.booted


def _update(path, image=False):
    import hashlib
    link = yield from _online()
    base = "devices/" + binascii.hexlify(DEVICE_ID).decode() + "/ota/"
    size, h = 0, hashlib.sha256()
    chunk = bytearray(1024)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(chunk)
            if not n:
                break
            h.update(memoryview(chunk)[:n])
            size += n
        begin = {"op": "begin", "size": size, "sha256": binascii.hexlify(h.digest()).decode()}
        if image:
            begin["kind"] = "image"  # as `sbd ota push` says it: the device sets aside its one block
        begin = json.dumps(begin)
        BROKER.feed(publish_packet(base + "ctl", begin.encode()))
        yield from _ticks(link, lambda: "ready" in BROKER.results)
        f.seek(0)
        off = 0
        while True:
            n = f.readinto(chunk)
            if not n:
                break
            BROKER.feed(publish_packet(base + "data", off.to_bytes(4, "big") + memoryview(chunk)[:n]))
            off += n
            yield from _ticks(link, lambda: BROKER.idle() and "rejected" not in BROKER.results)
    chunk = None
    BROKER.feed(publish_packet(base + "ctl", b'{"op": "end"}'))
    yield from _ticks(link, lambda: "installed" in BROKER.results or "rejected" in BROKER.results)
    assert "installed" in BROKER.results, BROKER.results


_work = None


def begin(workload, root):
    """Stand-ins, inputs and the filesystem; the workload made ready to step."""
    global BROKER, _work
    import vfs
    _stand_ins()
    for line in _read(root + "/inputs/nvs.txt").decode().split("\n"):
        if line:
            ns, key, kind, value = line.split(" ")
            NVS[(ns, key)] = int(value) if kind == "i" else binascii.unhexlify(value)
    vfs.umount("/")
    vfs.mount(vfs.VfsPosix(root), "/")
    sys.modules["os"] = _os()
    sys.path[:] = ["/lib"]
    BROKER = Broker()
    _work = globals()["w_" + workload]()
    print("HEAP32 PORT", sys.platform, sys.maxsize)
    gc.collect()
    micropython.mem_info()


def step():
    """One step of the workload; False once it is over. Prints the heap in
    use when the step began (after a collection) and when it ended (before
    one). The WebAssembly port (PyScript variant) collects only between calls
    from JavaScript, so there the second figure is the step's peak bound."""
    global _work
    gc.collect()
    live = gc.mem_alloc()
    try:
        next(_work)
    except StopIteration:
        _work = None
        print("STEP", live, gc.mem_alloc())
        gc.collect()
        micropython.mem_info()
        print("HEAP32 OK")
        return False
    except Exception as e:
        _work = None
        print("HEAP32 FAIL", type(e).__name__, e)
        return False
    print("STEP", live, gc.mem_alloc())
    gc.collect()  # on the WebAssembly port: at the return to JavaScript
    return True


def main(workload, root):
    begin(workload, root)
    while step():
        pass
