# Whole-firmware updates on the device (sbd.ota, sbd.appimage), under MicroPython
# with an ESP32-sized heap: a signed app image streamed into the next app slot,
# booted on trial by ESP-IDF's bootloader, committed after the health check or
# rolled back. The esp32 module and the bootloader are the emulated board's own
# (harness/sbd_harness/emulator/rom: esp32.py, _idfboot.py, _bootloader.py) over a
# flash image in a host file, the real formats on both sides; the streams and the
# flash come from the host (image_vectors.py).
# mptest-vectors: image_vectors
# mptest-heap: board
# mptest-firmware: mpy
import binascii
import gc
import hashlib
import json
import os
import sys

VEC = os.getenv("SBD_MP_VECTORS")
V = json.loads(open(VEC + "/vectors.json").read())
sys.path.append(V["rom"])
MOUNT = "/flash"
SECTOR = 4096
_BLANK = b"\xff" * SECTOR  # allocated once, as the emulator's silicon does (_board.py)
_BUF = bytearray(SECTOR)   # the tests' own scratch block


class _Board:
    """The emulated board's `_board` over a copy of the vectors' flash."""
    def __init__(self):
        _copy(VEC + "/flash.bin", VEC + "/t.bin")
        _copy(VEC + "/efuse", VEC + "/t.efuse")
        self.f = open(VEC + "/t.bin", "r+b")
        self.e = open(VEC + "/t.efuse", "r+b")
        self.conf = {"table_offset": 0x8000, "booted": 0}
        self.writes = 0

    def flash_read(self, off, buf):
        self.f.seek(off)
        self.f.readinto(buf)

    def flash_write(self, off, buf):
        self.writes += 1
        self.f.seek(off)
        self.f.write(buf)

    def flash_erase(self, off, size):
        self.writes += 1
        self.f.seek(off)
        while size > 0:
            self.f.write(_BLANK)
            size -= SECTOR

    def tell_supervisor(self, line):
        pass

    def efuse_secure_version(self):
        self.e.seek(0)
        bits = int.from_bytes(self.e.read(4), "little")
        n = 0
        while bits:
            n += bits & 1
            bits >>= 1
        return n

    def efuse_burn_secure_version(self, v):
        bits = (1 << v) - 1
        self.e.seek(0)
        old = int.from_bytes(self.e.read(4), "little")
        self.e.seek(0)
        self.e.write((old | bits).to_bytes(4, "little"))


def _copy(a, b):
    with open(a, "rb") as src, open(b, "wb") as dst:
        while True:
            n = src.readinto(_BUF)
            if not n:
                break
            dst.write(memoryview(_BUF)[:n])


B = None


class _Flash:
    def read(self, off, buf):
        B.flash_read(off, buf)

    def write(self, off, buf):
        B.flash_write(off, buf)

    def erase(self, off, size):
        B.flash_erase(off, size)


class _Efuse:
    def secure_version(self):
        return B.efuse_secure_version()

    def burn_secure_version(self, v):
        B.efuse_burn_secure_version(v)


def _forget(rom=False):
    """A reboot's fresh interpreter: the firmware's modules go; the ROM's stay loaded
    (imported once, as the board's process has them from its start), their NVS cache
    dropped so that it is read again from flash."""
    for name in list(sys.modules):
        if name == "sbd" or name.startswith("sbd.") or (rom and name in ("esp32", "_idfboot")):
            del sys.modules[name]
    if "esp32" in sys.modules:
        sys.modules["esp32"]._store = None
    gc.collect()


def boot():
    """A cold boot: the bootloader picks the slot, then the firmware's modules start
    afresh (the filesystem mounted from the flash's vfs partition)."""
    try:
        os.umount(MOUNT)
    except OSError:
        pass
    _forget()
    import _idfboot
    import _bootloader
    import esp32
    got = _bootloader.boot(_Flash(), _idfboot.Layout(esp32._read_table()), _Efuse(), lambda *a: None)
    B.conf["booted"] = got[0]
    del sys.modules["_bootloader"]
    os.mount(os.VfsLfs2(esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]), MOUNT)
    from sbd import ota, slots, store
    slots.ROOT = MOUNT + "/ota"
    slots.COUNTER_FILE = MOUNT + "/rollback_floor"
    slots.FACTORY_ROOT = MOUNT
    return got[0], ota, slots, store


def new_device():
    """The vectors' flash: MicroPython v1.29.0 (secure version 1) in ota_0, a fresh
    filesystem, the test release key trusted."""
    global B
    if B is not None:
        B.f.close()
        B.e.close()
    B = None
    gc.collect()
    B = _Board()
    sys.modules["_board"] = B
    _forget(rom=True)
    import esp32
    os.VfsLfs2.mkfs(esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0])
    slot, ota, slots, store = boot()
    store.put(slots.KEYS_KEY, binascii.unhexlify(V["key"]))
    return slot, ota, slots, store


def stream(name):
    return VEC + "/" + name + ".sbdota"


def push(ota, name, stop_short=0):
    """Begin, 1024-byte chunks at their offsets (read from the file, never the whole
    stream in RAM), end; returns the events published."""
    gc.collect()
    events = []
    r = ota.Receiver(events.append)
    path = stream(name)
    size = os.stat(path)[6]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            n = f.readinto(_BUF)
            if not n:
                break
            h.update(memoryview(_BUF)[:n])
    r.control(json.dumps({"op": "begin", "size": size, "sha256": binascii.hexlify(h.digest()).decode(),
                          "kind": "image"}))
    off = 0
    payload = bytearray(4 + 1024)
    with open(path, "rb") as f:
        while off < size - stop_short and not any(e["event"] == "rejected" for e in events):
            n = f.readinto(memoryview(payload)[4:])
            payload[0:4] = off.to_bytes(4, "big")
            r.data(memoryview(payload)[:4 + n])
            off += n
    if not any(e["event"] == "rejected" for e in events):
        r.control(b'{"op": "end"}')
    restart = r.restart
    r = None
    gc.collect()
    return restart, events


def slot_sha(label, size=0x180000):
    import esp32
    part = esp32.Partition(label)
    h = hashlib.sha256()
    for b in range(size // SECTOR):
        part.readblocks(b, _BUF)
        h.update(_BUF)
    return h.digest()


def otadata():
    h = hashlib.sha256()
    for at in (0xD000, 0xE000):
        B.flash_read(at, _BUF)
        h.update(_BUF)
    return h.digest()


def running_version():
    from sbd import appimage
    return appimage.descriptor(appimage.running())["version"]


def test_an_image_update_boots_on_trial_and_commits_after_the_health_check():
    slot, ota, slots, store = new_device()
    assert slot == 0 and running_version() == "v1.29.0"
    ota0 = slot_sha("ota_0")
    restart, events = push(ota, "good")
    assert [e["event"] for e in events if e["event"] != "progress"] == ["ready", "manifest-ok", "installed"], events
    assert events[-1]["kind"] == "image" and events[-1]["slot"] == "ota_1" and restart
    assert slot_sha("ota_0") == ota0, "the running slot is never written"
    slot, ota, slots, store = boot()
    assert slot == 1 and running_version() == "v1.29.0-sbd.2"
    assert ota.trial()
    reply = ota.commit()
    assert reply["event"] == "committed" and reply["kind"] == "image" and reply["version"] == "v1.29.0-sbd.2"
    assert store.get_int(slots.IMAGE_COUNTER_KEY, 0) == 2 and B.efuse_secure_version() == 1
    assert slots.counter() == 0, "the files' floor is their own: a committed file slot stays runnable"
    slot, ota, slots, store = boot()
    assert slot == 1 and not ota.trial(), "a committed image stays"


def test_an_image_not_committed_is_rolled_back_and_reported_by_the_old_one():
    slot, ota, slots, store = new_device()
    push(ota, "good")
    slot, ota, slots, store = boot()
    assert slot == 1 and ota.trial()
    slot, ota, slots, store = boot()  # reset before the health check passed
    assert slot == 0 and running_version() == "v1.29.0"
    assert not ota.trial()
    incident = slots.pending_incident()
    assert incident["event"] == "reverted" and incident["slot"] == "ota_1", incident
    assert "v1.29.0-sbd.2 rolled back by the bootloader" in incident["error"] and incident["runs"] == "ota_0"
    assert store.get_int(slots.IMAGE_COUNTER_KEY, 0) == 0, "nothing of the failed update is kept"


def test_bad_images_are_refused_without_touching_the_running_slot_or_otadata():
    for name, reason in V["refusals"] + [["good-truncated", "truncated"]]:
        slot, ota, slots, store = new_device()
        ota0, od = slot_sha("ota_0"), otadata()
        if name == "counter-not-higher":
            store.put_int(slots.IMAGE_COUNTER_KEY, 2)  # image 2 committed already: its replay is refused
        if name == "good-truncated":
            restart, events = push(ota, "good", stop_short=8192)
        else:
            restart, events = push(ota, name)
        got = [e.get("error") for e in events if e["event"] == "rejected"]
        assert got == [reason], (name, got)
        assert not restart
        assert slot_sha("ota_0") == ota0 and otadata() == od, name
        slot, ota, slots, store = boot()
        assert slot == 0 and running_version() == "v1.29.0", name


def test_nothing_is_erased_before_the_signature_is_checked():
    slot, ota, slots, store = new_device()
    ota1 = slot_sha("ota_1")
    writes = B.writes
    restart, events = push(ota, "unknown-key")
    assert events[-1]["error"] == "unknown release key"
    assert slot_sha("ota_1") == ota1, "the next slot was not erased for an unsigned stream"
    assert B.writes - writes < 40, "only the manifest's spool on the filesystem was written"


def test_the_image_streams_through_one_block_a_heap_smaller_than_it():
    slot, ota, slots, store = new_device()
    gc.collect()
    assert V["good_size"] > gc.mem_free(), "the image is larger than the heap: no way to hold it whole"
    restart, events = push(ota, "good")
    assert events[-1]["event"] == "installed", events[-1]
