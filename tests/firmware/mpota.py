# A device for the OTA MicroPython tests: littlefs (the ESP32 port's VfsLfs2)
# on a flash block device and a fake esp32.NVS, both behind one power switch
# that can go off at write number N. Used by mptest_ota_power_cuts.py and
# mptest_ota_refusals.py; the signed streams come from the host
# (ota_vectors.py, through SBD_MP_VECTORS).
#
# The flash has the geometry of the reference board's `vfs` partition (960 KiB
# in 4096-byte erase blocks, boards/esp32/partitions.csv) and VfsLfs2's
# default settings, as on the ESP32 port; its bytes live in a host file, so
# that the ESP32-sized heap holds only what the device would.
#
# What a power cut does, and why:
# - Flash: each program (writeblocks) and each block erase littlefs asks of
#   the block device is one write point. The one at which the power goes is
#   cut short part-way (a prefix of it reaches the chip; NOR flash programs by
#   clearing bits); every write before it is on the flash, none after it.
#   littlefs is what makes files survive that, as on the device.
# - NVS: ESP-IDF's nvs_set_* writes the entry to flash at once, and NVS's own
#   entry states make each set atomic: after a power loss the key holds its
#   old value or its new one, never a mix. nvs_commit() groups nothing (in
#   ESP-IDF's nvs_api.cpp it is "no-op for now, to be used when intermediate
#   cache is added"): two sets are two independent writes, whatever commits
#   are around them. So each set_blob/set_i32/erase_key is one write point
#   that happens whole or not at all, and commit() is a write point of its
#   own that makes nothing more durable. A set whose commit() never ran
#   counts as written: what the API documentation would allow in addition
#   (losing it) is the state of a cut at the set itself, which is tried too.
# - After the cut the code under test runs on to the end of the step the test
#   gave it, as in the instant the capacitors still hold, against a copy of
#   the device taken at the cut (the cut write whole in it): it sees its own
#   writes, so littlefs stays consistent to the end, but nothing it does after
#   the cut reaches the flash or the NVS the next boot finds. The test checks
#   `power.dead` after each step and stops there.
import binascii
import gc
import hashlib
import json
import os
import sys

VECTORS = os.getenv("SBD_MP_VECTORS")
MOUNT = "/flash"
NS_NOT_FOUND = -0x1102

LIVE, CUT, DEAD = 0, 1, 2


class Power:
    """Counts writes to flash and NVS together; write number `budget` is the
    one the power goes at (0: never). step() says what becomes of a write:
    LIVE (it persists), CUT (this is the one the power goes at), DEAD (after
    the cut: it reaches only the copy the code still runs against)."""

    def __init__(self, budget=0):
        self.budget = budget
        self.ops = 0
        self.dead = False
        self.at = None  # what was being written at the cut
        self.forks = []  # called at the cut: the flash and the NVS go on in copies

    def cut(self):
        for fork in self.forks:
            fork()

    def step(self, what):
        if self.dead:
            return DEAD
        self.ops += 1
        if self.ops == self.budget:
            self.dead = True
            self.at = what
            return CUT
        return LIVE


_ERASED = b"\xff" * 256  # made once, written as many times as a block needs
_BUF = bytearray(512)


class Flash:
    """A block device with the extended interface the ESP32 port's partitions
    have (writes at an offset inside a block, erase by ioctl). Its bytes are
    in the host file `path`, not on the heap, which is ESP32-sized; after the
    cut, in a copy of it (`path`.after-cut)."""

    def __init__(self, path, blocks, block_size, power):
        self.path = path
        self.f = open(path, "r+b")
        self.blocks = blocks
        self.bs = block_size
        self.power = power

    def close(self):
        self.f.close()

    def fork(self):
        """From now on, a copy of the flash as it is: what persists stays as it is."""
        self.f.close()
        _copy(self.path, self.path + ".after-cut")
        self.f = open(self.path + ".after-cut", "r+b")

    def _put(self, start, new, n):
        self.f.seek(start)
        if new is None:  # erase
            while n > 0:
                self.f.write(_ERASED if n >= len(_ERASED) else _ERASED[:n])
                n -= len(_ERASED)
        else:
            self.f.write(new if n == len(new) else new[:n])

    def _store(self, start, new, what, size=0):
        """Writes `new` at `start`, or erases `size` bytes there when `new` is None."""
        n = size if new is None else len(new)
        if self.power.step(what) == CUT:
            self._put(start, new, (self.power.ops * 7919) % (n + 1))  # a prefix of it reaches the flash
            self.power.cut()
        self._put(start, new, n)

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        start = block * self.bs + off
        try:
            new = bytearray(len(buf))
        except MemoryError:  # the heap locked: a finaliser closing a file the cut left open
            if not self.power.dead:
                raise
            self.f.seek(start)  # into the copy after the cut
            self.f.write(buf)
            return
        self.f.seek(start)
        self.f.readinto(new)
        for i in range(len(new)):  # programming only clears bits
            new[i] &= buf[i]
        self._store(start, new, "flash")

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.bs
        if op == 6:
            self._store(arg * self.bs, None, "erase", self.bs)
            return 0
        return None


class _NVS:
    """esp32.NVS over the device's NVS: (namespace, key) -> (type, value) in
    `Device.nvs`, what persists; the code reads and writes `Device.live`,
    which is that same dict until the cut and a copy taken at the cut after it."""
    device = None

    def __init__(self, ns):
        self.ns = ns

    def _write(self, key, entry):
        d = _NVS.device
        if d.power.step("nvs " + key) == CUT:
            d.power.cut()  # this set and what follows reach only the copies
        if entry is None:
            d.live.pop((self.ns, key), None)
        else:
            d.live[(self.ns, key)] = entry

    def _get(self, key, kind):
        entry = _NVS.device.live.get((self.ns, key))
        if entry is None or entry[0] != kind:  # NVS looks items up by key and type
            raise OSError(NS_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        return entry[1]

    def set_blob(self, key, value):
        self._write(key, ("blob", bytes(value)))

    def get_blob(self, key, buf):
        v = self._get(key, "blob")
        if len(v) > len(buf):
            raise OSError(-0x110C, "ESP_ERR_NVS_INVALID_LENGTH")
        buf[:len(v)] = v
        return len(v)

    def set_i32(self, key, value):
        self._write(key, ("i32", value))

    def get_i32(self, key):
        return self._get(key, "i32")

    def erase_key(self, key):
        if (self.ns, key) not in _NVS.device.live:
            raise OSError(NS_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        self._write(key, None)

    def commit(self):
        if _NVS.device.power.step("nvs commit") == CUT:
            _NVS.device.power.cut()


class _NoAppSlots:
    """esp32.Partition of a build without OTA app slots (a factory partition only):
    Partition(RUNNING).get_next_update() raises ENOENT, as esp32_partition_new does."""
    RUNNING = 1

    def __init__(self, id):
        pass

    def get_next_update(self):
        raise OSError(2)


class _Esp32:
    NVS = _NVS
    Partition = _NoAppSlots


def forget_modules():
    """A reboot's fresh interpreter: the firmware's modules are imported again."""
    for name in list(sys.modules):
        if name == "sbd" or name.startswith("sbd."):
            del sys.modules[name]
    gc.collect()


def fw():
    """The firmware's modules (imported again after forget_modules()), with the
    slot folders and the rollback floor file on this device's flash."""
    from sbd import ota, slots, store
    slots.ROOT = MOUNT + "/ota"
    slots.COUNTER_FILE = MOUNT + "/rollback_floor"
    slots.FACTORY_ROOT = MOUNT
    return ota, slots, store


class Device:
    """The flash and the NVS of one board, and its power. The flash is the
    host file `path`; snapshots are host files too."""

    def __init__(self, path, blocks=240, block_size=4096):
        self.path = path
        self.blocks = blocks
        self.bs = block_size
        self.nvs = self.live = {}
        self.saved = {}
        self.power = Power()
        self.flash = None
        self.mounted = False
        sys.modules["esp32"] = _Esp32
        _NVS.device = self
        with open(path, "wb") as f:
            for _ in range(blocks * block_size // len(_ERASED)):  # a whole number of them
                f.write(_ERASED)
        flash = Flash(path, blocks, block_size, self.power)
        os.VfsLfs2.mkfs(flash)
        flash.close()

    def power_on(self, budget=0):
        """Boots: the filesystem mounted from what is on the flash, fresh
        modules, and the power going at write number `budget` (0: never)."""
        self.power_off()
        try:  # a mount a test that failed half-way left behind
            os.umount(MOUNT)
        except OSError:
            pass
        self.power = Power(budget)
        self.live = self.nvs
        self.flash = Flash(self.path, self.blocks, self.bs, self.power)
        self.power.forks = [self.flash.fork, self._fork_nvs]
        os.mount(os.VfsLfs2(self.flash), MOUNT)
        self.mounted = True
        forget_modules()

    def _fork_nvs(self):
        self.live = dict(self.nvs)

    def power_off(self):
        """Nothing more reaches the flash or the NVS, and the RAM is gone: the
        firmware's modules too (so that the test's own allocations between
        boots do not land among them and fragment the heap the next boot gets)."""
        self.power.dead = True
        if self.mounted:
            try:
                os.umount(MOUNT)
            except OSError:
                pass
            self.mounted = False
        forget_modules()  # and collects: the finalisers of files left open run now
        if self.flash:
            self.flash.close()
            self.flash = None

    def save(self, name):
        """Powers off and keeps the flash (in a host file) and the NVS as state `name`."""
        self.power_off()
        _copy(self.path, self.path + "." + name)
        self.saved[name] = dict(self.nvs)

    def load(self, name):
        """Powered off, with the flash and the NVS of state `name` (save())."""
        self.power_off()
        _copy(self.path + "." + name, self.path)
        self.nvs = self.live = dict(self.saved[name])
        gc.collect()

    def boot(self, budget=0):
        """Power on and run the boot-time slot choice, as firmware/boot.py does;
        returns the slot chosen ("" for the factory image)."""
        self.power_on(budget)
        return select()


def two_releases():
    """A device that has committed release 0.1.0 (slot a), then 0.2.0 (slot b,
    running, counter 2), trusting one release key; made by the firmware itself
    with the power on: provisioning's key, then for each release the install,
    the trial boot and the commit. Saved as state "old"."""
    dev = Device(VECTORS + "/flash.img")
    dev.power_on()
    ota, slots, store = fw()
    store.put(slots.KEYS_KEY, key("trusted"))  # what provisioning installs
    for name, slot in (("r1", "a"), ("r2", "b")):
        dev.power_off()
        stream = release(name, keep=False)[0]
        dev.power_on()
        restart, events = push(fw()[0], stream)
        assert events[-1]["event"] == "installed", events
        assert dev.boot() == slot
        assert fw()[0].commit()["event"] == "committed"
    dev.save("old")
    return dev


def select():
    """slots.select(), as firmware/boot.py runs it. It puts the chosen slot's
    lib first on sys.path and forgets the factory's modules, for the slot's
    own to be imported; here sys.path and the factory's modules are put back
    instead, for the test's checks to query (its slots hold test data, not
    code), rather than a second import of them in the same boot."""
    ota, slots, store = fw()
    from sbd import p256  # noqa: F401 (what select() imports to verify a slot)
    modules = [(k, v) for k, v in sys.modules.items() if k == "sbd" or k.startswith("sbd.")]
    path = list(sys.path)
    try:
        return slots.select()
    finally:
        sys.path[:] = path
        for k, v in modules:
            sys.modules[k] = v


def _copy(src, dst):
    with open(src, "rb") as a, open(dst, "wb") as b:
        while True:
            n = a.readinto(_BUF)
            if not n:
                break
            b.write(_BUF if n == len(_BUF) else _BUF[:n])


# the vectors ------------------------------------------------------------------------------
_doc = None


def vectors():
    global _doc
    if _doc is None:
        assert VECTORS, "SBD_MP_VECTORS is not set: run through pytest (tests/firmware/conftest.py)"
        with open(VECTORS + "/vectors.json") as f:
            _doc = json.load(f)
    return _doc


def refusal_cases():
    """The host's refusal cases, one at a time: dicts with name, stream, reason."""
    with open(VECTORS + "/refusals.jsonl") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def key(name):
    return binascii.unhexlify(vectors()["keys"][name])


_streams = {}


def read_stream(name, keep=True):
    """A stream file's bytes; kept for the next call unless `keep` is False."""
    if name in _streams:
        return _streams[name]
    with open(VECTORS + "/" + name, "rb") as f:
        data = f.read()
    if keep:
        _streams[name] = data
    return data


def release(name, keep=True):
    """(stream bytes, version, security counter) of a release."""
    r = vectors()["releases"][name]
    return read_stream(r["stream"], keep), r["version"], r["counter"]


def _sha(data):
    return hashlib.sha256(data).digest()


_expected = {}


def slot_files(name):
    """What a slot holding release `name` must contain, path -> SHA-256: the
    manifest's exact bytes, the key ID and signature, and each file, cut from
    the stream's payload by the sizes the manifest lists (the host checked
    every hash when it wrote the vectors). Worked out once."""
    if name in _expected:
        return _expected[name]
    stream = release(name, keep=False)[0]
    mv = memoryview(stream)
    mlen = int.from_bytes(stream[8:12], "big")
    mbytes = mv[12:12 + mlen]
    out = {"manifest.json": _sha(mbytes), "manifest.sig": _sha(mv[12 + mlen:12 + mlen + 72])}
    at = 12 + mlen + 72
    for f in json.loads(bytes(mbytes))["files"]:
        out[f["path"]] = _sha(mv[at:at + f["size"]])
        at += f["size"]
    assert at == len(stream)
    _expected[name] = out
    return out


_READ = bytearray(256)


def tree(path):
    """Every file under `path`, relative path -> SHA-256 of its bytes ({} when
    there is no such folder). Read in small pieces: the heap is device-sized."""
    out = {}
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return out
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            for k, v in tree(p).items():
                out[e[0] + "/" + k] = v
        else:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while True:
                    n = f.readinto(_READ)
                    if not n:
                        break
                    h.update(memoryview(_READ)[:n])
            out[e[0]] = h.digest()
    return out


def file_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


# driving the receiver -----------------------------------------------------------------------
def push(ota, stream, size=None, sha=None, chunk=1024, end=True, power=None):
    """Feeds `stream` to a Receiver as the MQTT link would (begin, chunks at
    their offsets, end). Stops at the first rejection, as `sbd ota push` does,
    or once `power` is gone. Returns (restart, events): whether the receiver
    asks for a restart, and what it published. The receiver itself is not
    returned: it holds this boot's modules, which must not outlive it."""
    events = []
    r = ota.Receiver(events.append)
    size = len(stream) if size is None else size
    sha = binascii.hexlify(hashlib.sha256(stream).digest()).decode() if sha is None else sha
    r.control(json.dumps({"op": "begin", "size": size, "sha256": sha}))

    def over():
        return (power is not None and power.dead) or any(e["event"] == "rejected" for e in events)

    off = 0
    while off < len(stream) and not over():
        piece = stream[off:off + chunk]
        r.data(off.to_bytes(4, "big") + piece)
        off += len(piece)
    if end and not over():
        r.control(b'{"op": "end"}')
    restart = r.restart
    # After a cut the transfer dies with the power: the files the receiver
    # still has open are closed by their finalisers now, while the flash (its
    # copy after the cut) is still there to close them on.
    r = None
    gc.collect()
    return restart, events


def rejection(events):
    for e in events:
        if e["event"] == "rejected":
            return e["error"]
    return None
