# A/B application slots and the boot-time choice between them.
#
# The flashed application in /lib is the factory image and the root of
# trust: this module, sbd.manifest and sbd.p256 run from it at every boot.
# Updates live in /ota/slot_a and /ota/slot_b (an update arrives in
# /ota/incoming and becomes a slot only once it has verified, sbd.ota). One
# NVS record (written in one commit, so the switch is atomic) says which slot
# is active, which is on trial and which came before; that one record is also
# the commit point of an update (the rollback floor and a key rotation that
# follow it are finished at the next boot if a power cut stops them). At every
# boot, before any updated code runs, the chosen slot is verified against its
# signed manifest: signature by a trusted release key, every file's size and
# SHA-256, no file the manifest does not list, and a security counter not
# below the rollback floor. A slot that fails, for whatever reason, is not
# run: the device falls back to the other slot only if it holds the release
# committed last (its counter is the floor: an older one is below it, one
# above it never committed), else to the factory image, and reports every
# fallback (an incident, kept in NVS until it is published).
# A slot on trial that boots twice without committing is reverted.
# An update belongs to the factory image it was installed over: NVS keeps
# that image's fingerprint (IMAGE_NVS, written before the record names the
# slot), and a slot recorded over another one (files flashed anew by a tool
# that left /ota and NVS alone) does not run: the record is reset and a
# "foreign" incident reported. While the factory image runs, no update is
# kept in /ota (the record names none, so none could run).
# Provisions: ETSI EN 303 645 5.7-1, 5.7-2 (software integrity, report
# anomalies), 5.3-7, 5.3-10 (secure update mechanism, installation
# robust); NIST IR 8259A 5, 6; EU CRA Annex I (2)(c), (f); OWASP ISVS 3.4.4,
# 3.4.6, 3.4.7, 3.1.4.
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
IMAGE_TRIAL_KEY = "ota_img"  # an app image on trial (sbd.appimage): slot, version, counter, keys
IMAGE_COUNTER_KEY = "img_ctr"  # the security counter of the last app image committed (i32)
MAX_TRIAL_BOOTS = 1
EXIT_KEY = "exit"  # why the firmware reset itself last, when it did (sbd.app, sbd.link)
# In the slot record while a commit is not finished: the record names the new
# slot active (the commit point, one NVS write), its counter and key rotation
# still to be written (finish()).
FINISH = "fin"
# The anti-rollback floor also lives in this file, which a factory reset
# leaves alone: an erased device must not take back an old signed release
# (ESP-IDF keeps its secure_version in eFuse, which nothing lowers).
COUNTER_FILE = "/rollback_floor"
# The factory image: its files under this root (tests move it).
FACTORY_ROOT = ""
FACTORY = ("/boot.py", "/main.py", "/lib")
# One hashing buffer, made when this module is first imported (at boot, while
# the heap is still whole): a transfer or a day of TLS can fragment the heap so
# that no fresh 1 KiB block is left with tens of KiB free, and checking a slot
# (before the switch, at commit, at boot) must not fail for that.
_BUF = bytearray(1024)
IMAGE_NVS = "ota_fac"  # factory_id() of the image the slots were installed over


def slot_dir(slot):
    return ROOT + "/slot_" + slot


def incoming_dir():
    """Where an update is received and checked before it becomes a slot."""
    return ROOT + "/incoming"


def rmtree(path):
    try:
        mode = os.stat(path)[0]
    except OSError:
        return
    if mode & 0x4000:
        for name in os.listdir(path):
            rmtree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


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
    buf = _BUF
    n = 0
    with open(path, "rb") as f:
        while True:
            r = f.readinto(buf)
            if not r:
                break
            n += r
            if n > size:
                raise manifest.ManifestError("file larger than declared")
            h.update(buf if r == len(buf) else memoryview(buf)[:r])  # a slice would copy it
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
            self.h.update(buf if n == len(buf) else memoryview(buf)[:n])
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
    return verify_dir(slot_dir(slot))


def verify_dir(d):
    """The manifest in folder `d` if everything in it checks out; else ManifestError."""
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


def factory_id():
    """The fingerprint of the factory image: SHA-256 over every file's path,
    size and SHA-256, 16 hex digits. Another flash of other files changes it."""
    paths = []
    for p in FACTORY:
        p = FACTORY_ROOT + p
        try:
            mode = os.stat(p)[0]
        except OSError:
            continue
        if mode & 0x4000:
            _walk(p, paths)
        else:
            paths.append(p)
    h = hashlib.sha256()
    for p in sorted(paths):
        size = os.stat(p)[6]
        h.update(("%s %d\n" % (p[len(FACTORY_ROOT):], size)).encode())
        h.update(file_sha256(p, size))
    return binascii.hexlify(h.digest()[:8])


def bind_to_factory(fid=None):
    """Before a slot is recorded: the slots in /ota belong to this factory image
    (`fid`: its factory_id(), when already known)."""
    fid = fid or factory_id()
    if store.get(IMAGE_NVS, 16) != fid:
        store.put(IMAGE_NVS, fid)


def incident(event, slot, error, runs=None, other=None):
    """Reported at once on the serial line, and kept for the broker (sbd.link
    publishes it). `runs`: the slot this boot runs instead ("": the factory
    image); `other`: why the other slot did not run either. An incident not
    yet published is kept in the new one's `earlier` (the last 3), so a
    device that reports only once it is online again reports every one."""
    report = {"sbd": "ota", "event": event, "slot": slot, "error": str(error)[:64]}
    if runs is not None:
        report["runs"] = runs
    if other:
        report["other"] = other[:64]
    print(json.dumps(report))
    raw = store.get(INCIDENT_KEY)
    if raw:  # one not published yet
        try:
            old = json.loads(raw)
            report["earlier"] = old.get("earlier", [])[-2:] + ["%s %s: %s" % (old["event"], old["slot"], old["error"])]
        except Exception:  # not one of ours: the new one replaces it
            pass
    store.put(INCIDENT_KEY, json.dumps(report).encode())


def _why(e):
    return str(e) if isinstance(e, manifest.ManifestError) else "%s: %s" % (type(e).__name__, e)


def _runnable(slot, floor, fallback):
    """The manifest of `slot` if it may run; else an exception saying why.
    A fallback must hold the release committed last: its counter is the floor."""
    m = verify_slot(slot)
    if m["security_counter"] < floor:
        raise manifest.ManifestError("below the rollback floor")
    if fallback and m["security_counter"] > floor:
        raise manifest.ManifestError("never committed")
    return m


def note_exit(why):
    """Records why the firmware is about to reset itself: a reverted trial's
    report says it (a crash's exception, the trial's time limit)."""
    try:
        store.put(EXIT_KEY, why.encode()[:24])
    except Exception:  # noqa: the reset goes ahead; only the report is poorer
        pass


def _last_exit():
    """Why the previous boot ended: what it recorded, else the chip's reset cause."""
    try:
        why = store.get(EXIT_KEY, 32)
        if why is None:
            from sbd import device
            return device.reset_cause() + " reset"
        store.erase(EXIT_KEY)
        return why.decode()
    except Exception as e:  # noqa: only a report's detail: never a reason not to boot
        return type(e).__name__


def _choose():
    st = state()
    ended = _last_exit()
    if running(st) and store.get(IMAGE_NVS, 16) != factory_id():
        incident("foreign", running(st), "installed over another factory image", "")
        st = {"act": "", "try": "", "prev": "", "boots": 0}
        save(st)
    if st["try"]:
        st["boots"] += 1
        if st["boots"] > MAX_TRIAL_BOOTS:  # the trial never committed: go back
            incident("reverted", st["try"], "trial did not commit: " + ended)
            st["try"], st["boots"] = "", 0
        save(st)
    choice = running(st)
    floor = counter()
    chosen = ""
    m = why = why_other = None
    for slot in (choice, other(choice) if choice else ""):
        if not slot:
            break
        try:
            m = _runnable(slot, floor, slot != choice)
            chosen = slot
            break
        except Exception as e:  # whatever the reason, a slot that did not verify does not run
            if slot == choice:
                why = _why(e)
            else:
                why_other = slot + ": " + _why(e)
    if why:  # a fallback: reported before the record stops pointing at it
        incident("integrity", choice, why, chosen, why_other)
    if chosen != choice:  # fell back: the record follows what really runs
        st["act"], st["try"], st["boots"] = chosen, "", 0
        st.pop(FINISH, None)  # a commit of a slot that fails its check is not finished
        save(st)
    elif st.get(FINISH) and chosen and not st["try"]:  # a commit a power cut interrupted
        try:
            finish(st, m)
        except Exception:
            pass  # still pending: the next boot tries again, this one runs the slot
    return chosen


def select():
    """Chooses the slot to run, verifies it, and puts it first on the import path.
    Never raises: what goes wrong makes a fallback, and every fallback is reported."""
    try:
        chosen = _choose()
    except Exception as e:  # the slot record or NVS itself: no slot can be trusted
        chosen = ""
        try:
            incident("integrity", "", "slot record: " + _why(e), "")
            save({"act": "", "try": "", "prev": "", "boots": 0})  # it follows what runs
        except Exception:
            pass  # NVS unusable: the line on the console is all there is
    try:
        # An update a reset cut short is never resumed; under the factory image
        # no slot can run (the record names none): none is kept.
        rmtree(incoming_dir() if chosen else ROOT)
    except OSError:
        pass
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
