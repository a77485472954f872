# MicroPython unit tests: every bad update is refused by the device's update
# receiver (sbd.ota.Receiver), fed to it directly as the MQTT link would:
# each with the reason the device gives, and with nothing the device runs on
# changed: not the running slot, not the slot record, the security counter or
# the release keys (NVS is compared whole: a refusal writes nothing there),
# and the device still boots the version it ran. And the other slot (the
# previous release; during a trial, the committed one the device falls back
# to) must be as it was, and nothing left in the incoming folder: an update
# that is refused, above all one refused before its manifest is verified
# (anyone who can publish on the device's update topic can send one), must
# not touch the slots (Receiver receives into slots.incoming_dir()).
#
# The cases: every stream tests/test_ota.py pushes over MQTT to an emulated
# board, the refusals tests/test_ota_host.py makes on the host that a device
# makes too, validly signed but malformed manifests (so that only the
# device's own field rules stand in the way), and the transfer's own
# refusals (begin, chunks, end, abort). The signed streams are made on the
# host (ota_vectors.py, with `cryptography`); the rest here.
#
# mptest-vectors: ota_vectors
# mptest-firmware: mpy
import binascii
import hashlib
import json
import mpota
from mpota import fw, release, rejection, slot_files, tree

_done = {}


def _sha(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def _device():
    """State "old": 0.2.0 running from slot b (counter 2), 0.1.0 in slot a, one
    trusted key; and state "trial": 0.3.0 installed from there and booted on
    trial, not committed."""
    if "dev" in _done:
        return _done["dev"]
    for name in ("r1", "r2", "r3plain"):
        slot_files(name)
    dev = mpota.two_releases()
    dev.power_on()
    restart, events = mpota.push(fw()[0], release("r3plain", keep=False)[0])
    assert events[-1]["event"] == "installed", events
    assert dev.boot() == "a"
    dev.save("trial")
    _done["dev"] = dev
    return dev


# the transfer's own refusals: (name, reason, state, how to send it) ----------------------------
def _truncated_at_end(ota, good):
    return mpota.push(ota, good[:-700], size=len(good), sha=_sha(good))


def _chunk_past_declared(ota, good):
    return mpota.push(ota, good + b"\0" * 100, size=len(good), sha=_sha(good))


def _chunk_over_1024(ota, good):
    return mpota.push(ota, good, chunk=1025)


def _too_large(ota, good):
    return mpota.push(ota, good, size=1 << 40)


def _shorter_than_a_header(ota, good):
    return mpota.push(ota, good[:6])


def _control(*messages):
    def send(ota, good):
        events = []
        r = ota.Receiver(events.append)
        for m in messages:
            if isinstance(m, int):  # a chunk of the good stream at this offset
                r.data(m.to_bytes(4, "big") + good[m:m + 1024])
            else:
                r.control(m.replace("SIZE", str(len(good))).replace("SHA", _sha(good)))
        return r.restart, events
    return send


BEGIN = '{"op": "begin", "size": SIZE, "sha256": "SHA"}'
TRANSFER = [
    ("truncated-at-end", "truncated", "old", _truncated_at_end),
    ("chunk-past-declared-size", "larger than declared", "old", _chunk_past_declared),
    ("chunk-over-1024-bytes", "larger than declared", "old", _chunk_over_1024),
    ("too-large-for-flash", "too large for flash", "old", _too_large),
    ("shorter-than-a-header", "bad size", "old", _shorter_than_a_header),
    ("begin-size-83", "bad size", "old", _control('{"op": "begin", "size": 83, "sha256": "SHA"}')),
    ("begin-size-negative", "bad size", "old", _control('{"op": "begin", "size": -5, "sha256": "SHA"}')),
    ("begin-size-0", "bad size", "old", _control('{"op": "begin", "size": 0, "sha256": "SHA"}')),
    ("begin-size-not-a-number", "bad begin", "old", _control('{"op": "begin", "size": "SIZE", "sha256": "SHA"}')),
    ("begin-size-true", "bad begin", "old", _control('{"op": "begin", "size": true, "sha256": "SHA"}')),
    ("begin-sha-short", "bad begin", "old", _control('{"op": "begin", "size": SIZE, "sha256": "abc"}')),
    ("aborted-half-way", "aborted", "old", _control(BEGIN, 0, 1024, 2048, '{"op": "abort"}')),
    ("superseded-half-way", "superseded", "old",
     _control(BEGIN, 0, 1024, '{"op": "begin", "size": 99, "sha256": "%s"}' % ("0" * 64))),
    ("end-without-begin", "no transfer", "old", _control('{"op": "end"}')),
    ("not-a-control-message", "bad control message", "old", _control('{"op": "reboot"}', "not json")),
    ("while-a-trial-runs", "busy: a trial is running", "trial", _control(BEGIN)),
    ("no-release-keys", "no release keys", "no keys", _control(BEGIN)),
]


def _cases():
    """(name, reason, state, send) for every case; send(ota, good) -> (restart, events)."""
    for case in mpota.refusal_cases():
        def send(ota, good, stream=case["stream"]):
            return mpota.push(ota, mpota.read_stream(stream, keep=False))
        yield case["name"], case["reason"], "old", send
    for case in TRANSFER:
        yield case


# Per starting state: the running slot and its release, the fallback slot and
# its release, and what the next boot must run with what record: "old" boots
# 0.2.0 again; "trial" (0.3.0 booted once, not committed) reverts to 0.2.0,
# as it would had no update been offered.
RUNS = {"old": ("b", "r2", "a", "r1", "b", {"act": "b", "try": "", "prev": "a", "boots": 0}),
        "trial": ("a", "r3plain", "b", "r2", "b", {"act": "b", "try": "", "prev": "b", "boots": 0})}


def _record(dev):
    """The slot record as it is in NVS."""
    return json.loads(dev.nvs[("sbd", "ota")][1])


def _results():
    """Every case run once: (names, wrong, intact). wrong[i]: what was wrong
    with the refusal of case i (reason, running slot, record, counter, keys,
    NVS, the boot after it), None if nothing; intact[i]: 1 if the fallback
    slot is as it was. Both tests read it. Kept in lists made before the
    first case, so that what the cases leave behind does not scatter across
    the heap the next case's firmware is loaded into."""
    if "results" in _done:
        return _done["results"]
    dev = _device()
    good = release("r3plain")[0]
    n = 0
    for _ in _cases():
        n += 1
    wrongs, intact = [None] * n, bytearray(n)
    dev.power_on()
    from sbd import clock
    # The "expired" case needs a trusted clock: the unix port's reads the host's.
    assert clock.is_set(), "the clock reads before 2025: the expired case would prove nothing"
    i = -1
    for name, reason, state, send in _cases():
        i += 1
        dev.load("trial" if state == "trial" else "old")
        if state == "no keys":  # a device provisioned before its release key existed
            dev.nvs.pop(("sbd", "relkeys"))
        nvs = dict(dev.nvs)
        running, running_rel, fallback, fallback_rel, boots, record = RUNS["trial" if state == "trial" else "old"]
        dev.power_on()
        ota, slots, store = fw()
        floor = mpota.file_text(slots.COUNTER_FILE)
        restart, events = send(ota, good)
        wrong = []
        got = rejection(events)
        if got is None or not got.startswith(reason):
            wrong.append("refused with %r, not %r; events %s" % (got, reason, [e["event"] for e in events]))
        if restart or any(e["event"] == "installed" for e in events):
            wrong.append("installed")
        events = None
        ota, slots, store = fw()
        if dev.nvs != nvs:
            wrong.append("NVS written: %s" % sorted(k[1] for k in dev.nvs if dev.nvs.get(k) != nvs.get(k)))
        if mpota.file_text(slots.COUNTER_FILE) != floor:
            wrong.append("/rollback_floor %r, was %r" % (mpota.file_text(slots.COUNTER_FILE), floor))
        if tree(slots.slot_dir(running)) != slot_files(running_rel):
            wrong.append("running slot %s changed" % running)
        intact[i] = tree(slots.slot_dir(fallback)) == slot_files(fallback_rel)
        if tree(slots.incoming_dir()):
            wrong.append("the refused update left files in %s" % slots.incoming_dir())
        ota = slots = store = None
        if state != "no keys":  # without a release key no slot verifies: the factory image runs
            chosen = dev.boot()
            if chosen != boots or _record(dev) != record:
                wrong.append("boots %r with record %s" % (chosen, _record(dev)))
        dev.power_off()
        if wrong:
            wrongs[i] = wrong
    names = [name for name, _, _, _ in _cases()]
    print("refusal cases:", n)
    _done["results"] = (names, wrongs, intact)
    return _done["results"]


def test_every_bad_update_is_refused_and_the_running_version_untouched():
    names, wrongs, _ = _results()
    for case in ("bit-in-file", "bit-in-manifest", "bit-in-signature", "unknown-key", "no-signature",
                 "downgrade", "replay-of-current", "wrong-board", "expired", "truncated",
                 "larger-than-declared", "extra-unlisted-file", "mix-and-match"):  # tests/test_ota.py's
        assert case in names, case
    assert len(names) > 50, len(names)
    failures = ["%s: %s" % (name, "; ".join(wrong)) for name, wrong in zip(names, wrongs) if wrong]
    assert not failures, failures


def test_a_refused_update_leaves_the_fallback_slot_as_it_was():
    names, _, intact = _results()
    lost = [name for name, ok in zip(names, intact) if not ok]
    assert not lost, "the fallback slot was emptied or changed by %d refused updates: %s" % (len(lost), lost)
