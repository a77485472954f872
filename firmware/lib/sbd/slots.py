# A/B application slots and the boot-time choice between them.
#
# The flashed application in /lib is the factory image and the root of
# trust: this module, sbd.manifest and sbd.p256 run from it at every boot.
# Updates live in /ota/slot_a and /ota/slot_b. One NVS record (written in one
# commit, so the switch is atomic) says which slot is active, which is on
# trial and which came before; that one record is also the commit point of an
# update (the rollback floor and a key rotation that follow it are finished at
# the next boot if a power cut stops them). At every boot, before any updated code runs,
# the chosen slot is verified against its signed manifest: signature by a
# trusted release key, every file's size and SHA-256, and no file the
# manifest does not list. A slot that fails is not run: the device falls back
# to the other slot if it verifies, else to the factory image, and reports it.
# A slot on trial that boots twice without committing is reverted.
# Provisions: ETSI EN 303 645 5.7-1, 5.7-2 (software integrity, report
# anomalies), 5.3-7, 5.3-10 (secure update mechanism, installation
# robust); NIST IR 8259A 5; EU CRA Annex I (2)(c), (f); OWASP ISVS 3.4.4,
# 3.4.7, 3.1.4.
import binascii
import hashlib
import io
import json
import os
import sys
from sbd import manifest, store

ROOT = "/ota"
SLOTS = ("a", "b")
STATE_KEY = "ota"
KEYS_KEY = "relkeys"
COUNTER_KEY = "ota_ctr"
INCIDENT_KEY = "ota_inc"
MAX_TRIAL_BOOTS = 1
# In the slot record while a commit is not finished: the record names the new
# slot active (the commit point, one NVS write), its counter and key rotation
# still to be written (finish()).
FINISH = "fin"
# The anti-rollback floor also lives in this file, which a factory reset
# leaves alone: an erased device must not take back an old signed release
# (ESP-IDF keeps its secure_version in eFuse, which nothing lowers).
COUNTER_FILE = "/rollback_floor"


def slot_dir(slot):
    return ROOT + "/slot_" + slot


def state():
    raw = store.get(STATE_KEY)
    st = json.loads(raw) if raw else {}
    for k, default in (("act", ""), ("try", ""), ("prev", ""), ("boots", 0)):
        st.setdefault(k, default)
    return st


def save(st):
    store.put(STATE_KEY, json.dumps(st).encode())


def running(st=None):
    """The slot this boot runs ("" for the factory image)."""
    st = st or state()
    return st["try"] or st["act"]


def other(slot):
    return "b" if slot == "a" else "a"


def counter():
    """The highest security counter ever committed: updates must exceed it."""
    floor = store.get_int(COUNTER_KEY, 0)
    try:
        with open(COUNTER_FILE) as f:
            floor = max(floor, int(f.read()))
    except (OSError, ValueError):
        pass
    return floor


def raise_counter(value):
    """Raises the floor to `value`; never lowers it."""
    if value > counter():
        store.put_int(COUNTER_KEY, value)
        with open(COUNTER_FILE, "w") as f:
            f.write(str(value))


def trusted_keys():
    return manifest.trusted_keys(store.get(KEYS_KEY))


def finish(st, m):
    """The rest of a commit once the record `st` names the slot of manifest `m`
    active: the rollback floor, then a key rotation (signed by a key trusted
    until now). NVS writes are atomic one at a time, never together: each step
    here can be done twice, and the record keeps FINISH until all are done, so
    select() completes at the next boot a commit a power cut interrupted."""
    raise_counter(m["security_counter"])
    if m.get("release_keys"):
        store.put(KEYS_KEY, b"".join(binascii.unhexlify(k) for k in m["release_keys"]))
    del st[FINISH]
    save(st)


def _read(path, limit):
    size = os.stat(path)[6]
    if size > limit:
        raise manifest.ManifestError("file too large")
    with open(path, "rb") as f:
        return f.read(size)  # no bigger buffer than the file: the heap is fragmented


def _walk(path, out):
    for name in os.listdir(path):
        p = path + "/" + name
        if os.stat(p)[0] & 0x4000:
            _walk(p, out)
        else:
            out.append(p)
    return out


def file_sha256(path, size):
    """SHA-256 of a file that must be exactly `size` bytes."""
    h = hashlib.sha256()
    buf = bytearray(1024)
    n = 0
    with open(path, "rb") as f:
        while True:
            r = f.readinto(buf)
            if not r:
                break
            n += r
            if n > size:
                raise manifest.ManifestError("file larger than declared")
            h.update(buf[:r] if r < len(buf) else buf)
    if n != size:
        raise manifest.ManifestError("file smaller than declared")
    return h.digest()


class _Hashing(io.IOBase):
    """A file read through SHA-256: what the JSON parser reads is what is hashed."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()

    def readinto(self, buf):
        n = self.f.readinto(buf)
        if n:
            self.h.update(buf[:n] if n < len(buf) else buf)
        return n


def load_manifest(d):
    """The manifest in folder `d`, parsed and checked against its signature in
    one pass over the file: no buffer of its size (the heap may be too
    fragmented for one) and no second read for the file to change between."""
    path = d + "/manifest.json"
    try:
        sig = _read(d + "/manifest.sig", manifest.SIG_LEN)
        if os.stat(path)[6] > manifest.MAX_MANIFEST:
            raise manifest.ManifestError("manifest too large")
        f = open(path, "rb")
    except OSError:
        raise manifest.ManifestError("no manifest")
    with f:
        s = _Hashing(f)
        try:
            m = json.load(s)
        except ValueError:
            m = None  # said after the signature check: a forgery is the likelier fault
        rest = bytearray(64)
        while s.readinto(rest):
            pass
    manifest.check_signature(s.h.digest(), sig, trusted_keys())
    if m is None:
        raise manifest.ManifestError("bad json")
    return manifest.check(m)


def verify_slot(slot):
    """The slot's manifest if everything in it checks out; else ManifestError."""
    d = slot_dir(slot)
    m = load_manifest(d)
    listed = {d + "/manifest.json", d + "/manifest.sig"}
    for f in m["files"]:
        p = d + "/" + f["path"]
        listed.add(p)
        try:
            digest = file_sha256(p, f["size"])
        except OSError:
            raise manifest.ManifestError("missing " + f["path"])
        except manifest.ManifestError as e:
            raise manifest.ManifestError("%s %s" % (e, f["path"]))
        if digest != binascii.unhexlify(f["sha256"]):
            raise manifest.ManifestError("hash mismatch " + f["path"])
    for p in _walk(d, []):
        if p not in listed:
            raise manifest.ManifestError("unlisted file " + p[len(d) + 1:])
    return m


def incident(event, slot, error):
    """Reported at once on the serial line, and kept for the broker (sbd.ota reports it)."""
    report = {"sbd": "ota", "event": event, "slot": slot, "error": str(error)[:64]}
    print(json.dumps(report))
    store.put(INCIDENT_KEY, json.dumps(report).encode())


def select():
    """Chooses the slot to run, verifies it, and puts it first on the import path."""
    st = state()
    if st["try"]:
        st["boots"] += 1
        if st["boots"] > MAX_TRIAL_BOOTS:  # the trial never committed: go back
            incident("reverted", st["try"], "trial did not commit")
            st["try"], st["boots"] = "", 0
        save(st)
    choice = running(st)
    chosen = ""
    m = None
    for slot in (choice, other(choice) if choice else ""):
        if not slot:
            break
        try:
            m = verify_slot(slot)
            chosen = slot
            break
        except (manifest.ManifestError, OSError, ValueError) as e:
            incident("integrity", slot, e)
    if chosen != choice:  # fell back: the record follows what really runs
        st["act"], st["try"], st["boots"] = chosen, "", 0
        st.pop(FINISH, None)  # a commit of a slot that fails its check is not finished
        save(st)
    elif st.get(FINISH) and chosen and not st["try"]:  # a commit a power cut interrupted
        try:
            finish(st, m)
        except OSError:
            pass  # still pending: the next boot tries again, this one runs the slot
    if chosen:
        sys.path.insert(0, slot_dir(chosen) + "/lib")
    # Forget this boot's modules: the chosen image imports its own.
    for name in list(sys.modules):
        if name == "sbd" or name.startswith("sbd."):
            del sys.modules[name]
    return chosen


def pending_incident():
    """An integrity or revert incident from boot, once, for the broker."""
    raw = store.get(INCIDENT_KEY)
    if not raw:
        return None
    store.put(INCIDENT_KEY, b"")
    try:
        return json.loads(raw)
    except ValueError:
        return None
