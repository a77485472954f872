# Receiving a signed update over the device's MQTT connection (docs/ota.md).
#
# The stream is checked as it arrives: the manifest's signature, model,
# security counter (anti-rollback) and expiry before any file byte is
# accepted; then each file's size and SHA-256 as it is written; nothing past
# the declared total; and, once complete, everything again from flash (what
# will run is what was checked). It all goes to a folder of its own
# (slots.incoming_dir), not into a slot: anyone who can publish on the
# update topic can start one, and a refused update leaves both slots as they
# were. Only once the whole update has verified does the folder replace the
# inactive slot, and one NVS commit puts it on trial; the device restarts.
# The new version commits itself once it has reached the broker and had a
# message acknowledged (health check), or the next boot reverts it.
# Authenticity never depends on the transport: the broker could be hostile.
# Provisions: ETSI EN 303 645 5.3-1, 5.3-2, 5.3-7, 5.3-9, 5.3-10; NIST IR
# 8259A 5; EU CRA Annex I (2)(c), (f); OWASP ISVS 3.4.3, 3.4.4, 3.4.6, 3.4.7.
import binascii
import gc
import hashlib
import json
import os
from sbd import clock, manifest, slots, version

CHUNK_MAX = 1024
TRIAL_S = 90  # a trial that has not committed by then restarts (and reverts)
_HEAD = len(manifest.MAGIC) + 4


class Rejected(Exception):
    pass


def _makedirs(path):
    cur = ""
    for part in path.split("/")[1:-1]:
        cur += "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def _free_bytes():
    s = os.statvfs("/")
    return s[0] * s[4]


class Receiver:
    def __init__(self, reply):
        self.reply = reply      # publishes a result dict
        self.restart = False    # set once an update is installed
        self._clear()

    def _clear(self):
        self.sha = None
        self.size = 0
        self.next = 0
        self.head = b""         # magic and manifest length
        self.mf = None          # the manifest's file in the incoming folder, while it arrives
        self.mleft = -1         # manifest bytes still to come (-1: length not known yet)
        self.sig = None         # key ID and signature, as they arrive
        self.filled = 0
        self.m = None
        self.target = None
        self.factory = None     # the factory image's fingerprint, when it runs (slots.IMAGE_NVS)
        self.fi = -1
        self.left = 0
        self.h = None
        self.f = None
        self.img = None         # an app image's writer (sbd.appimage), for a whole-firmware update
        self.block = None       # its read-back buffer, set aside at `begin` (the host says "kind": "image")

    def streaming(self):
        """True while an accepted update has bytes still to come."""
        return self.sha is not None and self.next < self.size

    def _event(self, event, **fields):
        fields["sbd"] = "ota"
        fields["event"] = event
        self.reply(fields)

    def _reject(self, error):
        if self.mf:
            self.mf.close()
        if self.f:
            self.f.close()
        if self.target:
            slots.rmtree(slots.incoming_dir())  # the slots stay as they were
        self._clear()
        self._event("rejected", error=error)

    # control messages -------------------------------------------------------------
    def control(self, payload):
        try:
            msg = json.loads(payload)
            op = msg.get("op") if isinstance(msg, dict) else None
        except ValueError:
            op = None
        if op == "status":
            self._event("status", next=self.next, active=slots.running(), counter=slots.counter(),
                        image_counter=slots.store.get_int(slots.IMAGE_COUNTER_KEY, 0),
                        keys=[binascii.hexlify(manifest.key_id(k)).decode() for k in slots.trusted_keys()])
        elif op == "abort":
            self._reject("aborted")
        elif op == "begin":
            self._begin(msg)
        elif op == "end":
            self._end()
        else:
            self._event("rejected", error="bad control message")

    def _begin(self, msg):
        size, sha = msg.get("size"), msg.get("sha256")
        if self.sha is not None and sha == self.sha and size == self.size:
            self._event("ready", next=self.next)  # resume
            return
        if self.sha is not None:
            self._reject("superseded")
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(sha, str) or len(sha) != 64:
            self._event("rejected", error="bad begin")
            return
        st = slots.state()
        if st["try"] or slots.store.get(slots.IMAGE_TRIAL_KEY):
            self._event("rejected", error="busy: a trial is running")
            return
        if not slots.trusted_keys():
            self._event("rejected", error="no release keys")
            return
        if size < _HEAD + manifest.SIG_LEN:  # not even a header and a signature
            self._event("rejected", error="bad size")
            return
        # What an earlier transfer cut short left behind; never a slot.
        slots.rmtree(slots.incoming_dir())
        if size > _free_bytes() - 8192 and size > _HEAD + manifest.MAX_MANIFEST + manifest.SIG_LEN + _image_room():
            # files: beside both slots, which stay until it has verified; an image: its app slot
            self._event("rejected", error="too large for flash")
            return
        # The update will belong to the factory image in place (slots.IMAGE_NVS). While a
        # slot runs, NVS names that image already: this boot ran the slot only because it
        # did (slots.select refuses a slot recorded over another image). Under the factory
        # image its fingerprint, a pass over every file of /lib, is taken now, before the
        # transfer fragments the heap (taken at the end, it ran out of heap and refused
        # updates that had verified), and written only at the switch.
        factory = None if slots.running(st) else slots.factory_id()
        self.sha, self.size, self.factory = sha, size, factory
        self.target = slots.other(slots.running(st)) if slots.running(st) else "a"
        if msg.get("kind") == "image":
            # Taken now, before the signature check fragments the heap. Only a buffer:
            # nothing is trusted yet.
            self.block = bytearray(1024)
        self._event("ready", next=0)

    # data ---------------------------------------------------------------------------
    def data(self, payload):
        if self.sha is None or len(payload) < 5:
            return
        off = int.from_bytes(payload[:4], "big")
        if off != self.next:
            self._event("resume", next=self.next)
            return
        chunk = memoryview(payload)[4:]
        if len(chunk) > CHUNK_MAX or self.next + len(chunk) > self.size:
            self._reject("larger than declared")
            return
        try:
            self._take(chunk)
        except Rejected as e:
            self._reject(str(e))
            return
        except (manifest.ManifestError, ValueError) as e:
            self._reject(str(e))
            return
        except OSError as e:
            self._reject("flash: %s" % e)
            return
        self.next += len(chunk)
        if self.next % 32768 < len(chunk):
            self._event("progress", next=self.next)

    def _take(self, chunk):
        i = 0
        while i < len(chunk):
            if self.m is None:
                i += self._header(chunk[i:])
            elif self.img is not None:
                if self.img.done():
                    raise Rejected("larger than declared")
                i += self.img.write(chunk[i:])
            else:
                i += self._file_bytes(chunk[i:])

    def _header(self, mv):
        # The manifest goes straight to manifest.json in the incoming folder
        # as it arrives: no buffer of its size, which a fragmented heap may
        # lack. Nothing in it is trusted until its signature has been checked.
        if self.mleft < 0:  # magic and manifest length
            take = min(_HEAD - len(self.head), len(mv))
            self.head += bytes(mv[:take])
            if len(self.head) == _HEAD:
                if self.head[:len(manifest.MAGIC)] != manifest.MAGIC:
                    raise Rejected("not an update")
                self.mleft = int.from_bytes(self.head[len(manifest.MAGIC):_HEAD], "big")
                if self.mleft > manifest.MAX_MANIFEST:
                    raise Rejected("manifest too large")
                d = slots.incoming_dir()
                _makedirs(d + "/manifest.json")
                self.mf = open(d + "/manifest.json", "wb")
                self.sig, self.filled = bytearray(manifest.SIG_LEN), 0
            return take
        if self.mleft:
            take = min(self.mleft, len(mv))
            self.mf.write(mv[:take])
            self.mleft -= take
            return take
        take = min(manifest.SIG_LEN - self.filled, len(mv))
        self.sig[self.filled:self.filled + take] = mv[:take]
        self.filled += take
        if self.filled == manifest.SIG_LEN:
            self._check_manifest()
        return take

    def _check_manifest(self):
        self.mf.close()
        self.mf = None
        d = slots.incoming_dir()
        sig = bytes(self.sig)
        with open(d + "/manifest.sig", "wb") as f:
            f.write(sig)
        head_len = _HEAD + os.stat(d + "/manifest.json")[6] + manifest.SIG_LEN
        gc.collect()
        m = slots.load_manifest(d)
        if m["model"] != version.MODEL:
            raise Rejected("wrong model")
        if m["security_counter"] <= _floor(m):
            raise Rejected("rollback: security counter not higher")
        if m.get("expires") and clock.is_set() and clock.asn1_now() > m["expires"]:
            raise Rejected("expired")
        if head_len + m["total_size"] != self.size:
            raise Rejected("size does not match the manifest")
        if "image" not in m and self.size > _free_bytes() - 8192:
            raise Rejected("too large for flash")
        if m.get("release_keys"):  # a rotation must keep the key that signed it, or this
            kept = [binascii.unhexlify(k) for k in m["release_keys"]]  # slot fails its boot check
            if sig[:8] not in [manifest.key_id(k) for k in kept]:
                raise Rejected("key rotation drops its own signing key")
        if "image" in m:  # a whole-firmware update: to the next app slot, not to files
            from sbd import appimage
            try:
                self.img = appimage.Writer(appimage.check(m["image"]), m["image"], self.block)
            except appimage.ImageRejected as e:
                raise Rejected(str(e))
        self.m, self.sig = m, sig
        self._event("manifest-ok", version=m["version"], counter=m["security_counter"])
        if self.img is None:
            self._open_next()

    def _open_next(self):
        if self.f:
            self.f.close()
            self.f = None
            if self.h.digest() != binascii.unhexlify(self.m["files"][self.fi]["sha256"]):
                raise Rejected("hash mismatch " + self.m["files"][self.fi]["path"])
        self.fi += 1
        while self.fi < len(self.m["files"]):
            entry = self.m["files"][self.fi]
            path = slots.incoming_dir() + "/" + entry["path"]
            _makedirs(path)
            self.f = open(path, "wb")
            self.h = hashlib.sha256()
            self.left = entry["size"]
            if self.left:
                return
            self.f.close()  # an empty file: check it now
            self.f = None
            if self.h.digest() != binascii.unhexlify(entry["sha256"]):
                raise Rejected("hash mismatch " + entry["path"])
            self.fi += 1

    def _file_bytes(self, mv):
        if self.f is None:
            raise Rejected("larger than declared")
        take = min(self.left, len(mv))
        part = mv[:take]
        self.f.write(part)
        self.h.update(part)
        self.left -= take
        if not self.left:
            self._open_next()
        return take

    # the end ------------------------------------------------------------------------
    def _end(self):
        if self.sha is None:
            self._event("rejected", error="no transfer")
            return
        if self.m is None or self.next != self.size or self.f is not None:
            self._reject("truncated")
            return
        if self.img is not None:
            self._end_image()
            return
        self.m = None  # its file on flash is what counts now, and the heap needs the room
        gc.collect()
        d = slots.incoming_dir()
        try:
            written = slots.verify_dir(d)  # as written to flash, not as received
            # Verified: only now is the inactive slot replaced (a power cut
            # in between leaves the running slot and the record as they were).
            slots.rmtree(slots.slot_dir(self.target))
            os.rename(d, slots.slot_dir(self.target))
        except (manifest.ManifestError, OSError, ValueError) as e:
            self._reject("verify after write: %s" % e)
            return
        if self.factory:
            slots.bind_to_factory(self.factory)  # the image this update was installed over
        st = slots.state()
        st["prev"], st["try"], st["boots"] = slots.running(st), self.target, 0
        slots.save(st)  # the switch: one NVS commit
        version_ = written["version"]
        self._clear()
        self.restart = True
        self._event("installed", version=version_, slot=st["try"])


    def _end_image(self):
        from sbd import appimage
        version = self.m["image"]["version"]
        try:
            slot = appimage.install(self.img, self.m)
        except appimage.ImageRejected as e:
            self._reject(str(e))
            return
        except OSError as e:
            self._reject("flash: %s" % e)
            return
        slots.rmtree(slots.incoming_dir())  # the manifest's spool: the image is in its slot
        self._clear()
        self.restart = True
        self._event("installed", kind="image", version=version, slot=slot)


def _floor(m):
    """The counter an update must exceed: the files' (slots.counter), or for an app image the
    images' own (the two are separate components, each with its own sequence of releases)."""
    if "image" not in m:
        return slots.counter()
    return slots.store.get_int(slots.IMAGE_COUNTER_KEY, 0)


def _image_room():
    from sbd import appimage
    return appimage.room()


def trial():
    """True while this boot runs an update that has not committed yet: files on
    trial, or an app image the bootloader booted on trial (sbd.appimage)."""
    if slots.state()["try"]:
        return True
    if not slots.store.get(slots.IMAGE_TRIAL_KEY):
        return False
    from sbd import appimage
    return appimage.trial() is not None


def commit():
    """The health check passed: make the trial slot the active one for good."""
    st = slots.state()
    slot = st["try"]
    if not slot:
        if not slots.store.get(slots.IMAGE_TRIAL_KEY):
            return None
        from sbd import appimage
        t = appimage.trial()
        return appimage.commit(t) if t else None
    m = slots.verify_slot(slot)  # a MemoryError here leaves everything as it was
    st["act"], st["try"], st["boots"], st[slots.FINISH] = slot, "", 0, 1
    slots.save(st)  # the commit: one NVS write
    slots.finish(st, m)  # counter, then keys; a power cut in between: the next boot finishes it
    return {"sbd": "ota", "event": "committed", "version": m["version"], "slot": slot,
            "counter": m["security_counter"]}
