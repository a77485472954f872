# MicroPython unit tests of signed update manifests (sbd.manifest) and the
# boot-time slot check (sbd.slots), on the unix port's filesystem.
import binascii
import hashlib
import json
import os
import sys
import mphelpers


mphelpers.install_fake_nvs()
from sbd import manifest, p256, slots, store  # noqa: E402

SK = binascii.unhexlify("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721")
PK = p256.public_key(SK)
OTHER_SK = binascii.unhexlify("519b423d715f8b581f4fa8ee59f4771a5b44c8130b4e3eacca54a56dda72b464")
FILES = {"lib/sbd/a.py": b"print('a')\n", "lib/sbd/b.py": b"B = 2\n"}
slots.ROOT = "/tmp/mptest-ota-%d" % (hashlib.sha256(os.urandom(8)).digest()[0] * 1000 + os.urandom(1)[0])


def build(counter=1, files=FILES, sk=SK, **extra):
    m = {"format": 1, "version": "0.2.0", "security_counter": counter, "model": "sbd-reference-esp32",
         "files": [{"path": p, "size": len(d), "sha256": binascii.hexlify(hashlib.sha256(d).digest()).decode()}
                   for p, d in sorted(files.items())],
         "total_size": sum(len(d) for d in files.values())}
    m.update(extra)
    mb = json.dumps(m).encode()
    sig = manifest.key_id(p256.public_key(sk)) + p256.sign(sk, hashlib.sha256(mb).digest())
    return mb, sig


def refused(fn, reason, *args):
    try:
        fn(*args)
    except manifest.ManifestError as e:
        assert str(e).startswith(reason), (str(e), reason)
        return
    raise AssertionError("accepted")


def test_a_signed_manifest_verifies_and_parses():
    mb, sig = build()
    assert manifest.verify(mb, sig, [PK])["security_counter"] == 1


def test_signature_and_key_are_checked_before_anything_else():
    mb, sig = build()
    refused(manifest.verify, "unknown release key", mb, sig, [p256.public_key(OTHER_SK)])
    refused(manifest.verify, "bad signature", mb.replace(b"0.2.0", b"0.2.1"), sig, [PK])
    refused(manifest.verify, "bad signature", mb, sig[:8] + bytes(64), [PK])
    refused(manifest.verify, "bad signature block", mb, sig[:-1], [PK])


def test_fields_are_validated():
    for extra, reason in (({"format": 2}, "unknown format"), ({"security_counter": 0}, "bad security counter"),
                          ({"total_size": 1}, "total size"), ({"expires": 5}, "bad expiry"),
                          ({"surprise": 1}, "unknown field"), ({"release_keys": ["04ab"]}, "bad release keys")):
        refused(manifest.parse, reason, build(**extra)[0])
    for path in ("boot.py", "lib/../boot.py", "lib//x.py", "lib/x y.py", "lib/" + "x" * 100):
        refused(manifest.parse, "bad path", build(files={path: b"x"})[0])


def _rmtree(path):
    try:
        mode = os.stat(path)[0]
    except OSError:
        return
    if mode & 0x4000:
        for name in os.listdir(path):
            _rmtree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


def _install(slot, files, mb, sig, fresh=True):
    d = slots.slot_dir(slot)
    if fresh:
        _rmtree(d)
    for path, data in files.items():
        full = d + "/" + path
        cur = ""
        for part in full.split("/")[1:-1]:
            cur += "/" + part
            try:
                os.mkdir(cur)
            except OSError:
                pass
        with open(full, "wb") as f:
            f.write(data)
    with open(d + "/manifest.json", "wb") as f:
        f.write(mb)
    with open(d + "/manifest.sig", "wb") as f:
        f.write(sig)


def test_a_slot_is_checked_file_by_file():
    store.put(slots.KEYS_KEY, PK)
    mb, sig = build()
    _install("a", FILES, mb, sig)
    assert slots.verify_slot("a")["version"] == "0.2.0"
    _install("a", {"lib/sbd/a.py": b"print('A')\n"}, mb, sig, fresh=False)  # same size, other bytes
    refused(slots.verify_slot, "hash mismatch", "a")
    _install("a", dict(FILES, **{"lib/sbd/a.py": b"print('a')\n#"}), mb, sig)
    refused(slots.verify_slot, "file larger", "a")
    _install("a", FILES, mb, sig)
    _install("a", {"lib/sbd/extra.py": b"evil()\n"}, mb, sig, fresh=False)
    refused(slots.verify_slot, "unlisted file", "a")


def test_select_falls_back_to_a_slot_that_verifies_and_reports():
    store.put(slots.KEYS_KEY, PK)
    mb, sig = build()
    _install("a", FILES, mb, sig)
    _install("a", {"lib/sbd/extra.py": b"evil()\n"}, mb, sig, fresh=False)
    _install("b", FILES, mb, sig)
    slots.save({"act": "a", "try": "", "prev": "b", "boots": 0})  # "a" holds an unlisted file
    path = list(sys.path)
    assert slots.select() == "b"
    assert sys.path[0] == slots.slot_dir("b") + "/lib"
    sys.path[:] = path
    assert slots.state()["act"] == "b"
    incident = slots.pending_incident()
    assert incident["event"] == "integrity" and incident["slot"] == "a", incident
    assert slots.pending_incident() is None


def test_a_trial_that_boots_twice_without_committing_is_reverted():
    store.put(slots.KEYS_KEY, PK)
    mb, sig = build()
    _install("a", FILES, mb, sig)
    _install("b", FILES, mb, sig)
    slots.save({"act": "b", "try": "a", "prev": "b", "boots": 0})
    path = list(sys.path)
    assert slots.select() == "a"  # the first trial boot runs the new slot
    sys.path[:] = path
    assert slots.state()["boots"] == 1
    assert slots.select() == "b"  # it restarted without committing: back to the previous one
    sys.path[:] = path
    assert slots.state()["try"] == "" and slots.state()["act"] == "b"
    assert slots.pending_incident()["event"] == "reverted"


def test_the_rollback_floor_only_rises_and_outlives_an_nvs_erase():
    slots.COUNTER_FILE = slots.ROOT + "-floor"
    store.put_int(slots.COUNTER_KEY, 0)
    assert slots.counter() == 0
    slots.raise_counter(5)
    slots.raise_counter(3)  # never lowered
    assert slots.counter() == 5 and store.get_int(slots.COUNTER_KEY, 0) == 5
    store.put_int(slots.COUNTER_KEY, 0)  # what a factory reset's NVS erase leaves
    assert slots.counter() == 5
    os.remove(slots.COUNTER_FILE)
    assert slots.counter() == 0
