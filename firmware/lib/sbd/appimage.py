# Whole-firmware updates (docs/ota.md): a signed update that carries an ESP32
# app image (MicroPython, ESP-IDF, lwIP and mbedTLS, and a firmware frozen into
# it) goes into the app slot that is not running, through esp32.Partition, as
# ESP-IDF's native OTA does. The manifest's signature has been checked before
# the first byte gets here (sbd.ota), so nothing is erased for an unsigned
# stream. Each chunk is hashed as it is written, straight from its packet (no
# block, let alone the image, is held in RAM); the image is hashed again as
# read back from flash, and its
# app descriptor must be what the manifest says, before set_boot() points the
# bootloader at it. The new image boots on trial (ESP-IDF's PENDING_VERIFY):
# only after its health check does it call mark_app_valid_cancel_rollback();
# any reset before that makes the bootloader roll back, and the old image then
# reports the version that failed.
# Provisions: ETSI EN 303 645 5.3-1 (all software updatable, MicroPython and
# ESP-IDF included), 5.3-2, 5.3-9, 5.3-10; NIST IR 8259A 5; EU CRA Annex I
# (2)(c); OWASP ISVS 3.4.3, 3.4.4 (what is booted is what was checked), 3.4.6
# (secure version against the running app's), 3.4.7 (rollback on failure).
import binascii
import hashlib
import json
import esp32
from sbd import slots, store

BLOCK = 4096  # the flash's erase block
READ = 1024   # the read-back's buffer: divides BLOCK, so no read crosses a block
TRIAL_KEY = slots.IMAGE_TRIAL_KEY


DESC_AT = 0x20  # esp_app_desc_t: after the image header (24 bytes) and the first segment header (8)


class ImageRejected(Exception):
    pass


def descriptor(part):
    """project, version and secure_version of the app image in `part` (an esp32.Partition), or None."""
    d = bytearray(80)
    part.readblocks(0, d, DESC_AT)
    if d[0:4] != b"\x32\x54\xcd\xab":  # 0xABCD5432, little-endian
        return None
    return {"project": _cstr(d[48:80]), "version": _cstr(d[16:48]),
            "secure_version": int.from_bytes(d[4:8], "little")}


def _cstr(b):
    return bytes(b).split(b"\0")[0].decode()


def running_app():
    """The app image the bootloader booted: its slot and descriptor (None without app slots)."""
    try:
        run = running()
        found = descriptor(run) or {}
        found["slot"] = run.info()[4]
        return found
    except OSError:
        return None


def running():
    return esp32.Partition(esp32.Partition.RUNNING)


def room():
    """The largest image an update may declare: the next app slot's size; 0 on a
    build without OTA app slots (a factory partition only: ENOENT)."""
    try:
        return running().get_next_update().info()[3]
    except OSError:
        return 0


def check(im):
    """Refuses an image the running app must not install: another project (a foreign
    image), or a secure version below its own (the bootloader's anti-rollback would
    refuse to boot it, and the device would lose its fallback for nothing)."""
    own = descriptor(running())
    if own is not None:
        if im["project"] != own["project"]:
            raise ImageRejected("foreign image: project %s, not %s" % (im["project"], own["project"]))
        if im["secure_version"] < own["secure_version"]:
            raise ImageRejected("rollback: secure version below the running app's")
    target = running().get_next_update()
    if im["size"] > target.info()[3]:
        raise ImageRejected("image larger than the app slot")
    return target


class Writer:
    """Streams one image into `target` as it arrives, hashing as it writes: each 4 KiB
    erase block is erased before its first byte (ioctl BLOCK_ERASE), and the chunks
    are written straight from the packet that carried them (writeblocks with an offset).
    No copy of a block is held: a heap fragmented by a day of TLS may have tens of KiB
    free and no 4 KiB piece. `buf` is the small buffer of the read-back."""

    def __init__(self, target, im, buf=None):
        self.part, self.im = target, im
        self.buf = buf if buf is not None else bytearray(READ)
        self.at = 0
        self.left = im["size"]
        self.h = hashlib.sha256()

    def write(self, mv):
        block, off = self.at // BLOCK, self.at % BLOCK
        take = min(self.left, len(mv), BLOCK - off)
        if off == 0:
            self.part.ioctl(6, block)  # erase the block before its first byte
        piece = mv[:take]
        self.part.writeblocks(block, piece, off)
        self.h.update(piece)
        self.at += take
        self.left -= take
        return take

    def done(self):
        return self.left == 0

    def finish(self):
        """The written slot, checked again as read back from flash, and its app descriptor."""
        want = binascii.unhexlify(self.im["sha256"])
        if self.h.digest() != want:
            raise ImageRejected("image hash mismatch")
        self.h = None
        if _flash_sha256(self.part, self.im["size"], self.buf) != want:
            raise ImageRejected("image changed on flash")
        got = descriptor(self.part)
        for k in ("project", "version", "secure_version"):
            if got is None or got[k] != self.im[k]:
                raise ImageRejected("app descriptor does not match the manifest")


def _flash_sha256(part, size, buf):
    h = hashlib.sha256()
    at = 0
    n = len(buf)
    while at < size:
        if size - at < n:
            buf = memoryview(buf)[:size - at]
            n = size - at
        part.readblocks(at // BLOCK, buf, at % BLOCK)
        h.update(buf)
        at += n
    return h.digest()


def install(writer, m):
    """The end of an image update (sbd.ota's `end`): the written slot checked again, the trial
    recorded, the bootloader pointed at it. Returns the slot's label; ImageRejected or OSError."""
    writer.finish()  # the slot as read back from flash, and its app descriptor
    switch(writer.part, m, running().info()[4])
    return writer.part.info()[4]


def switch(part, m, prev):
    """Records the trial, then points the bootloader at `part`. A power cut between
    the two leaves the record with the old image running: reported as not taken."""
    trial = {"slot": part.info()[4], "prev": prev, "version": m["image"]["version"],
             "counter": m["security_counter"]}
    if m.get("release_keys"):
        trial["keys"] = m["release_keys"]
    store.put(TRIAL_KEY, json.dumps(trial).encode())
    try:
        part.set_boot()  # the bootloader's own check of the image (ESP_ERR_OTA_VALIDATE_FAILED...)
    except OSError as e:
        store.put(TRIAL_KEY, b"")
        raise ImageRejected("bootloader refused the image: %s" % (e.args[-1],))


def trial():
    """The image on trial, when this boot runs it; None otherwise. An image recorded
    as on trial that is not what runs was rolled back by the bootloader (a reset before
    its health check passed, or it did not verify at boot): reported once, and forgotten."""
    raw = store.get(TRIAL_KEY)
    if not raw:
        return None
    t = json.loads(raw)
    runs = running().info()[4]
    if runs == t["slot"]:
        return t
    store.put(TRIAL_KEY, b"")
    slots.incident("reverted", t["slot"], "image %s rolled back by the bootloader" % t["version"], runs=runs)
    return None


def commit(t):
    """The health check passed: the image is valid for the bootloader from now on, then
    the rollback floor and a key rotation; the record goes last, so a power cut in
    between makes the next boot commit again (each step can be done twice)."""
    esp32.Partition.mark_app_valid_cancel_rollback()
    if t["counter"] > store.get_int(slots.IMAGE_COUNTER_KEY, 0):  # the images' floor, not the files'
        store.put_int(slots.IMAGE_COUNTER_KEY, t["counter"])
    if t.get("keys"):
        store.put(slots.KEYS_KEY, b"".join(binascii.unhexlify(k) for k in t["keys"]))
    store.put(TRIAL_KEY, b"")
    return {"sbd": "ota", "event": "committed", "kind": "image", "version": t["version"],
            "slot": t["slot"], "counter": t["counter"]}
