# MicroPython unit tests: an update belongs to the factory image it is
# installed over (sbd.slots.IMAGE_NVS, checked at every boot that runs a
# slot), and what that binding costs the update receiver (sbd.ota.Receiver).
# The factory image's fingerprint is a pass over every file of /lib; taken at
# the end of a transfer, on the heap the transfer had fragmented, it ran out of
# memory on an emulated board and refused updates that had verified (CI, two
# tests of tests/board/test_ota.py). So: while a slot runs, the binding the
# boot has just checked stands and the image is not fingerprinted again; under
# the factory image the fingerprint is taken at `begin` and written at the
# switch, not before (a refused update writes nothing to NVS).
#
# mptest-vectors: ota_vectors
# mptest-firmware: mpy
import mpota
from mpota import fw, release

_dev = []


def _device():
    """mpota.two_releases(): state "old", 0.2.0 running from slot b (counter 2)."""
    if not _dev:
        release("r3plain")  # read while the heap is in one piece, and kept
        _dev.append(mpota.two_releases())
    return _dev[0]


def _phases(ota, slots):
    """Makes this boot's slots.factory_id() note in which step of an update it runs."""
    calls, phase, real_id, real_end = [], ["begin"], slots.factory_id, ota.Receiver._end

    def factory_id():
        calls.append(phase[0])
        return real_id()

    def end(self):
        phase[0] = "end"
        real_end(self)

    slots.factory_id = factory_id
    ota.Receiver._end = end
    return calls


def test_while_a_slot_runs_an_update_does_not_fingerprint_the_factory_image_again():
    dev = _device()
    dev.load("old")
    assert dev.boot() == "b"  # the boot found slot b bound to this factory image
    ota, slots, store = fw()
    bound = store.get(slots.IMAGE_NVS, 16)
    assert bound == slots.factory_id(), bound

    def no_heap():  # a heap the transfer left with no block for the pass over /lib
        raise MemoryError

    slots.factory_id = no_heap
    restart, events = mpota.push(ota, release("r3plain")[0])
    assert events[-1]["event"] == "installed" and restart, events
    assert store.get(slots.IMAGE_NVS, 16) == bound
    assert dev.boot() == "a"  # on trial, over the same factory image


def test_under_the_factory_image_its_fingerprint_is_taken_at_begin_and_written_at_the_switch():
    dev = _device()
    dev.load("old")
    dev.power_on()
    ota, slots, store = fw()
    slots.save({"act": "", "try": "", "prev": "", "boots": 0})  # the factory image runs
    del dev.nvs[("sbd", slots.IMAGE_NVS)]
    assert dev.boot() == ""
    ota, slots, store = fw()
    calls = _phases(ota, slots)
    # refused after its begin (counter 2 is the floor): nothing written to NVS
    restart, events = mpota.push(ota, release("r2", keep=False)[0])
    assert events[-1]["event"] == "rejected" and "rollback" in events[-1]["error"], events
    assert store.get(slots.IMAGE_NVS, 16) is None
    del calls[:]
    restart, events = mpota.push(ota, release("r3plain")[0])
    assert events[-1]["event"] == "installed" and restart, events
    assert calls == ["begin"], calls
    assert store.get(slots.IMAGE_NVS, 16) == slots.factory_id()
    assert dev.boot() == "a"  # on trial, bound to the factory image it was installed over
