# MicroPython unit tests: a power cut at every flash write and every NVS write
# of an update (sbd.ota.Receiver), of its trial boot and commit (sbd.slots.select,
# sbd.ota.commit) and of the revert of a trial that never committed. After each
# cut the device boots (fresh modules, the filesystem mounted again from the
# flash, NVS as it persisted), runs the boot-time slot choice, and must run a
# slot that verifies (signature and every file) and holds exactly the old
# release or the new one, in the state the record says, with the counter and
# the release keys that go with it; and the update must still go through.
#
# The device's power is cut, not the emulated board's process: what reaches
# the flash and the NVS at each cut is modelled in mpota.py, one write at a
# time, so every cut point is tried, not a random sample.
#
# mptest-vectors: ota_vectors
# mptest-firmware: mpy
import json
import mpota
from mpota import fw, release, slot_files, tree

_dev = []


def _device():
    """The device of mpota.two_releases() (state "old": 0.2.0 running from slot
    b, 0.1.0 in slot a, counter 2), with two more states saved: 0.3.0 installed
    ("installed": on trial from its next boot), and after that trial's first
    boot ("trial"). Each state is made by the firmware itself, with the power on."""
    if _dev:
        return _dev[0]
    # Read now, while the heap is in one piece, and kept: the update's stream,
    # and what a slot holding each release must contain.
    release("r3")
    for name in ("r2", "r3"):
        slot_files(name)
    dev = mpota.two_releases()
    dev.power_on()
    restart, events = mpota.push(fw()[0], release("r3")[0])
    assert events[-1]["event"] == "installed", events
    dev.save("installed")
    assert dev.boot() == "a"
    dev.save("trial")
    _dev.append(dev)
    return dev


def _restore(name):
    dev = _device()
    dev.load(name)
    return dev


OLD = {"act": "b", "try": "", "prev": "a", "boots": 0}
TRIAL = {"act": "b", "try": "a", "prev": "b", "boots": 1}     # 0.3.0 at its first boot
COMMITTED = {"act": "a", "try": "", "prev": "b", "boots": 0}  # 0.3.0 for good
REVERTED = {"act": "b", "try": "", "prev": "b", "boots": 0}   # back on 0.2.0


def _boots(chosen, name, record, cut):
    """This boot runs release `name` from slot `chosen`, which verifies and holds
    exactly that release's files, in the state `record` says."""
    ota, slots, store = fw()
    where = "cut %s: " % cut
    assert slots.state() == record, (where, chosen, slots.state(), record)
    assert chosen == slots.running(), (where, chosen, slots.state())
    m = slots.verify_slot(chosen)  # signature, every file's size and hash, nothing unlisted
    assert m["version"] == mpota.vectors()["releases"][name]["version"], (where, m["version"], name)
    got, want = tree(slots.slot_dir(chosen)), slot_files(name)
    assert got == want, (where, "slot " + chosen, sorted(got), sorted(want))


def _guards(counter, keys, incident=None):
    """What does not match: the rollback floor (NVS and /rollback_floor), the
    trusted release keys, the incident kept for the broker. None if all do."""
    ota, slots, store = fw()
    raw = store.get(slots.INCIDENT_KEY)
    got = (slots.counter(), [k for k in ("trusted", "rotated") if mpota.key(k) in slots.trusted_keys()],
           json.loads(raw)["event"] if raw else None)
    if got != (counter, keys, incident) or len(slots.trusted_keys()) != len(keys):
        return "counter %d, keys %s, incident %s (want %d, %s, %s)" % (got + (counter, keys, incident))
    return None


def _runs(chosen, name, record, counter, keys, incident=None, cut=""):
    """_boots, and the counter, keys and incident that go with that state."""
    _boots(chosen, name, record, cut)
    wrong = _guards(counter, keys, incident)
    assert wrong is None, ("cut %s: " % cut, name, wrong)


def test_power_cut_at_every_write_of_an_install():
    stream = release("r3")[0]
    n = 0
    outcomes = {}
    while True:
        n += 1
        dev = _restore("old")
        dev.power_on(budget=n)
        restart, events = mpota.push(fw()[0], stream, power=dev.power)
        if not dev.power.dead:  # the install ran to its end before write number n
            assert events[-1]["event"] == "installed" and restart, events
            break
        at = dev.power.at
        chosen = dev.boot()
        if chosen == "b":
            _runs(chosen, "r2", OLD, 2, ["trusted"], cut=n)
        else:  # the switch had reached the NVS: the new release boots on trial
            _runs(chosen, "r3", TRIAL, 2, ["trusted"], cut=n)
        outcomes[at + "->" + chosen] = outcomes.get(at + "->" + chosen, 0) + 1
        # Power back for good: what the cut left behind does not stand in the
        # way of the update, sent again from the start (its transfer state was in RAM).
        if chosen == "b":
            dev.power_on()
            restart, events = mpota.push(fw()[0], stream)
            assert events[-1]["event"] == "installed", (n, events)
            assert dev.boot() == "a", n
            _runs("a", "r3", TRIAL, 2, ["trusted"], cut="%d, then the update again" % n)
    print("install: a power cut at each of", n - 1, "writes:", outcomes)
    # the manifest and four files into the incoming folder, the old slot emptied, the folder
    # renamed to it, the switch
    assert n > 40, n


def test_power_cut_at_every_write_of_the_trial_boot_and_commit():
    n = 0
    outcomes = []
    inconsistent = []
    while True:
        n += 1
        dev = _restore("installed")
        dev.power_on(budget=n)
        committed = None
        chosen = mpota.select()  # the first boot of the new release
        assert chosen == "a", chosen
        if not dev.power.dead:
            committed = fw()[0].commit()  # its health check passed
        if not dev.power.dead:
            assert committed and committed["counter"] == 3, committed
            _runs("a", "r3", COMMITTED, 3, ["trusted", "rotated"])
            break
        at = dev.power.at
        chosen = dev.boot()
        st = fw()[1].state()
        if chosen == "b":  # the trial had counted its boot: this one reverts it
            _runs(chosen, "r2", REVERTED, 2, ["trusted"], incident="reverted", cut=n)
            kind = "reverted"
        elif st["try"]:  # the trial's boot was not counted: it runs again
            _runs(chosen, "r3", TRIAL, 2, ["trusted"], cut=n)
            kind = "trial again"
            assert fw()[0].commit()["counter"] == 3  # and can still commit
            _runs("a", "r3", COMMITTED, 3, ["trusted", "rotated"], cut="%d, then the commit" % n)
        else:  # committed: the rollback floor and the rotated keys must be in place too
            _boots(chosen, "r3", COMMITTED, n)
            wrong = _guards(3, ["trusted", "rotated"])
            kind = "committed" if wrong is None else "committed, " + wrong
            if wrong:
                inconsistent.append("cut %d (at %s): %s" % (n, at, kind))
        outcomes.append("%d %s: %s" % (n, at, kind))
    print("trial boot and commit: a power cut at each of", n - 1, "writes:", outcomes)
    assert n > 6, n  # the boot count, then the record, the counter (NVS and file), the keys
    # 0.3.0 committed must mean its counter is the floor (a replay of it is
    # refused) and its key rotation is in force (a retired key is retired).
    assert not inconsistent, inconsistent


def _interrupted(dev):
    """State "interrupted": the commit of 0.3.0 cut right after its slot
    record reached NVS (the commit point), before anything else."""
    n = 0
    while True:
        n += 1
        dev.load("installed")
        dev.power_on(budget=n)
        assert mpota.select() == "a"
        fw()[0].commit()
        assert dev.power.dead, "the commit wrote no counter after its record"
        if dev.power.at == "nvs ota_ctr":
            break
    dev.save("interrupted")
    st = json.loads(dev.nvs[("sbd", "ota")][1])
    assert st["act"] == "a" and not st["try"] and st.get("fin"), st


def test_power_cut_at_every_write_of_the_boot_that_finishes_a_commit():
    dev = _device()
    if "interrupted" not in dev.saved:
        _interrupted(dev)
    n = 0
    while True:
        n += 1
        dev.load("interrupted")
        chosen = dev.boot(budget=n)  # finishes the commit: counter, keys, then the record
        if not dev.power.dead:
            _runs(chosen, "r3", COMMITTED, 3, ["trusted", "rotated"])
            break
        chosen = dev.boot()
        _runs(chosen, "r3", COMMITTED, 3, ["trusted", "rotated"], cut=n)
    print("the boot that finishes a commit: a power cut at each of", n - 1, "writes")
    assert n > 4, n  # the counter (NVS and file), the keys, the record


def test_power_cut_at_every_write_of_a_revert():
    n = 0
    while True:
        n += 1
        dev = _restore("trial")  # the trial booted once and the device reset without a commit
        dev.power_on(budget=n)
        chosen = mpota.select()
        if not dev.power.dead:
            assert chosen == "b", chosen
            _runs("b", "r2", REVERTED, 2, ["trusted"], incident="reverted")
            break
        chosen = dev.boot()
        _runs(chosen, "r2", REVERTED, 2, ["trusted"], incident="reverted", cut=n)
    print("revert: a power cut at each of", n - 1, "writes")
    assert n > 2, n  # the incident, the record
