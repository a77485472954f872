# MicroPython unit tests of signed update manifests (sbd.manifest) and the
# boot-time slot check (sbd.slots), on the unix port's filesystem. The field
# rules are checked against the table the host is checked against too
# (manifest_cases.py, written by the host before MicroPython starts).
#
# mptest-vectors: manifest_cases
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
slots.COUNTER_FILE = slots.ROOT + "-floor"
slots.FACTORY_ROOT = slots.ROOT + "-factory"  # no factory files here: its fingerprint is the empty image's
slots.bind_to_factory()  # the slots these tests record belong to it


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


def test_fields_follow_the_one_specification_table():
    """Each case of manifest_cases.py: refused with its reason, or accepted."""
    wrong = []
    n = 0
    with open(os.getenv("SBD_MP_VECTORS") + "/manifest_cases.jsonl") as f:
        for line in f:
            if not line.strip():
                continue
            case = json.loads(line)
            n += 1
            try:
                manifest.parse(case["manifest"].encode())
                got = None
            except manifest.ManifestError as e:
                got = str(e)
            if got != case["reason"]:
                wrong.append("%s: %s, not %s" % (case["name"], got or "accepted", case["reason"] or "accepted"))
    assert n > 30, n
    assert not wrong, wrong


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


def _floor(value):
    """A device whose last committed release had counter `value`, no incident pending."""
    store.put_int(slots.COUNTER_KEY, value)
    try:
        os.remove(slots.COUNTER_FILE)
    except OSError:
        pass
    store.put(slots.INCIDENT_KEY, b"")


def _select():
    path = list(sys.path)
    chosen = slots.select()
    assert sys.path[0] == (slots.slot_dir(chosen) + "/lib" if chosen else path[0]), sys.path
    sys.path[:] = path
    return chosen


def test_select_falls_back_to_a_slot_that_verifies_and_reports():
    store.put(slots.KEYS_KEY, PK)
    _floor(2)
    committed, trial = build(2), build(3)
    _install("b", FILES, *committed)
    _install("a", FILES, *trial)
    _install("a", {"lib/sbd/extra.py": b"evil()\n"}, *trial, fresh=False)
    # 0.3.0 on trial in "a" holds an unlisted file: the committed "b" runs
    slots.save({"act": "b", "try": "a", "prev": "b", "boots": 0})
    chosen = _select()
    assert chosen == "b", chosen
    assert slots.state()["act"] == "b" and not slots.state()["try"]
    incident = slots.pending_incident()
    assert incident["event"] == "integrity" and incident["slot"] == "a", incident
    assert incident.get("runs") == "b" and "unlisted file" in incident["error"], incident
    assert slots.pending_incident() is None


def test_select_refuses_a_slot_below_the_rollback_floor():
    store.put(slots.KEYS_KEY, PK)
    _floor(2)
    _install("a", FILES, *build(2))
    _install("a", {"lib/sbd/extra.py": b"evil()\n"}, *build(2), fresh=False)
    _install("b", FILES, *build(1))  # the previous release: verifies, but is older than the floor
    slots.save({"act": "a", "try": "", "prev": "b", "boots": 0})
    chosen = _select()
    assert chosen == "", "ran slot %r, a release below the rollback floor" % chosen  # the factory image runs
    assert slots.state()["act"] == ""
    incident = slots.pending_incident()
    assert incident["slot"] == "a" and incident["runs"] == "", incident
    assert incident["other"] == "b: below the rollback floor", incident
    # the active slot itself below the floor (the record set back by hand, say); the
    # fallback to the factory image above removed the slots, so "b" is put back first
    _install("b", FILES, *build(1))
    slots.save({"act": "b", "try": "", "prev": "", "boots": 0})
    chosen = _select()
    assert chosen == "", chosen
    incident = slots.pending_incident()
    assert incident["slot"] == "b" and incident["error"] == "below the rollback floor", incident
    assert slots.state()["act"] == ""


def test_select_never_falls_back_to_a_reverted_trial():
    store.put(slots.KEYS_KEY, PK)
    _floor(2)
    _install("a", FILES, *build(3))  # 0.3.0, at its second trial boot: reverted
    _install("b", FILES, *build(2))
    _install("b", {"lib/sbd/extra.py": b"evil()\n"}, *build(2), fresh=False)
    slots.save({"act": "b", "try": "a", "prev": "b", "boots": 1})
    chosen = _select()
    assert chosen == "", "ran slot %r, a trial that was reverted" % chosen  # not "a": it never committed
    assert slots.state() == {"act": "", "try": "", "prev": "b", "boots": 0}, slots.state()
    incident = slots.pending_incident()  # the fallback, and the revert before it
    assert incident["slot"] == "b" and incident["runs"] == "", incident
    assert incident["other"] == "a: never committed", incident
    assert len(incident["earlier"]) == 1, incident
    assert incident["earlier"][0].startswith("reverted a: trial did not commit: "), incident


def test_a_reverted_trial_says_how_its_boot_ended():
    """A trial that crashed (or ran out its time) says so when it is reverted, and the
    record is read once: the next revert names the chip's reset cause instead."""
    store.put(slots.KEYS_KEY, PK)
    _floor(2)
    _install("b", FILES, *build(2))
    _install("a", FILES, *build(3))
    class Chip:  # the unix port's machine has no reset_cause(); the ESP32's says WDT_RESET
        @staticmethod
        def reset_cause():
            return 3

    real_machine = sys.modules.get("machine")
    sys.modules["machine"] = Chip
    sys.modules.pop("sbd.device", None)  # imported afresh, with this machine
    try:
        for noted, said in (("MemoryError", "MemoryError"), (None, "watchdog reset")):
            if noted:
                slots.note_exit(noted)
            slots.save({"act": "b", "try": "a", "prev": "b", "boots": 1})
            store.put(slots.INCIDENT_KEY, b"")
            assert _select() == "b"
            incident = slots.pending_incident()
            assert incident["event"] == "reverted" and incident["slot"] == "a", incident
            assert incident["error"] == "trial did not commit: " + said, incident
    finally:
        sys.modules.pop("sbd.device", None)
        if real_machine is None:
            sys.modules.pop("machine", None)
        else:
            sys.modules["machine"] = real_machine
    assert store.get(slots.EXIT_KEY) is None


def test_select_reports_a_slot_whose_check_fails_in_any_way():
    store.put(slots.KEYS_KEY, PK)
    _floor(2)
    _install("a", FILES, *build(3))
    _install("b", FILES, *build(2))
    slots.save({"act": "b", "try": "a", "prev": "b", "boots": 0})
    verify = slots.verify_slot

    def out_of_heap(slot):
        if slot == "a":
            raise MemoryError("memory allocation failed")
        return verify(slot)
    slots.verify_slot = out_of_heap
    try:
        chosen = _select()
    finally:
        slots.verify_slot = verify
    assert chosen == "b"
    assert slots.state()["act"] == "b" and not slots.state()["try"]
    incident = slots.pending_incident()
    assert incident["slot"] == "a" and incident["runs"] == "b", incident
    assert incident["error"].startswith("MemoryError"), incident


def test_select_runs_the_factory_image_and_reports_an_unreadable_record():
    store.put(slots.KEYS_KEY, PK)
    _floor(2)
    _install("b", FILES, *build(2))
    store.put(slots.STATE_KEY, b'{"act": "b", "tr')
    assert _select() == ""
    incident = slots.pending_incident()
    assert incident["slot"] == "" and incident["runs"] == "", incident
    assert incident["error"].startswith("slot record: ValueError"), incident
    assert slots.state()["act"] == ""  # readable again: the factory image runs


def test_a_trial_that_boots_twice_without_committing_is_reverted():
    store.put(slots.KEYS_KEY, PK)
    _floor(1)
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


def test_select_refuses_a_slot_installed_over_another_factory_image():
    # The update in "a" was installed over the factory image as it is now: it runs.
    store.put(slots.KEYS_KEY, PK)
    _floor(2)
    _install("a", FILES, *build(2))
    slots.save({"act": "a", "try": "", "prev": "", "boots": 0})
    assert _select() == "a"
    # The factory image is flashed anew (other files): the slot and its record are
    # left over from the old one, and an old update must not run over the new image.
    factory = slots.FACTORY_ROOT + "/lib"
    os.mkdir(slots.FACTORY_ROOT)
    os.mkdir(factory)
    try:
        with open(factory + "/new.py", "w") as f:
            f.write("NEW = 1\n")
        chosen = _select()
        assert chosen == "", "ran slot %r, installed over another factory image" % chosen
        assert slots.state()["act"] == "" and not slots.state()["try"]
        incident = slots.pending_incident()
        assert incident["event"] == "foreign" and incident["slot"] == "a" and incident["runs"] == "", incident
        try:
            os.stat(slots.ROOT)
            raise AssertionError("the foreign slot is still in " + slots.ROOT)
        except OSError:
            pass
        # an update installed from now on belongs to the new image, and runs
        slots.bind_to_factory()
        _install("a", FILES, *build(2))
        slots.save({"act": "a", "try": "", "prev": "", "boots": 0})
        assert _select() == "a"
    finally:
        _rmtree(slots.FACTORY_ROOT)
        slots.bind_to_factory()
