# MicroPython unit tests of the telemetry outbox (sbd.outbox): on the unix
# port's own filesystem in a fresh folder under /tmp, and on littlefs (the
# ESP32 port's VfsLfs2) over a RAM block device that loses power at every
# possible write.
import binascii
import gc
import os
from sbd import outbox

_dirs = []


def fresh():
    path = "/tmp/sbd-outbox-" + binascii.hexlify(os.urandom(6)).decode()
    os.mkdir(path)
    _dirs.append(path)
    return path + "/data/outbox"  # the outbox makes the rest of the path


def rmtree(path):
    for name, kind, *_ in os.ilistdir(path):
        if kind == 0x4000:
            rmtree(path + "/" + name)
        else:
            os.remove(path + "/" + name)
    os.rmdir(path)


def payload(seq):
    return b"reading-%d:" % seq + bytes((seq * 7 + i) & 0xFF for i in range(seq % 23))


def files(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".log"))


def disk_bytes(path):
    return sum(os.stat(path + "/" + n)[6] for n in files(path))


def test_put_pending_ack_and_restart():
    path = fresh()
    box = outbox.Outbox(path)
    assert box.pending(10) == [] and box.stats()["next_seq"] == 1
    seqs = [box.put(payload(i)) for i in range(1, 6)]
    assert seqs == [1, 2, 3, 4, 5]
    assert box.pending(3) == [(i, payload(i)) for i in (1, 2, 3)]
    box.ack(2)
    assert box.pending(10) == [(i, payload(i)) for i in (3, 4, 5)]
    assert box.stats()["pending"] == 3
    again = outbox.Outbox(path)  # a reboot: the same state from flash
    assert again.pending(10) == [(i, payload(i)) for i in (3, 4, 5)]
    assert again.stats()["acked"] == 2 and again.stats()["pending"] == 3
    assert again.put(b"x") == 6
    again.ack(6)
    assert again.pending(10) == [] and again.stats()["pending"] == 0
    rmtree(_dirs.pop())


def test_sequence_numbers_survive_restart():
    path = fresh()
    box = outbox.Outbox(path, max_bytes=1024)
    for i in range(1, 41):
        assert box.put(payload(i)) == i
    box.ack(40)
    assert len(files(path)) == 1  # acknowledged segments deleted
    assert outbox.Outbox(path, max_bytes=1024).put(b"after") == 41
    box = outbox.Outbox(path, max_bytes=1024)
    box.ack(41)
    for name in files(path):  # even with no record left on flash
        os.remove(path + "/" + name)
    box = outbox.Outbox(path, max_bytes=1024)
    assert box.pending(5) == [] and box.put(b"next") == 42
    rmtree(_dirs.pop())


def test_reopened_with_another_size_keeps_messages():
    path = fresh()
    box = outbox.Outbox(path)
    box.put(b"p" * 1000)
    box.put(b"q")
    assert outbox.Outbox(path, max_bytes=1024).pending(5) == [(1, b"p" * 1000), (2, b"q")]
    rmtree(_dirs.pop())


def test_a_failed_write_is_never_appended_to():
    path = fresh()
    box = outbox.Outbox(path)
    box.put(b"one")
    seg = path + "/" + files(path)[-1]
    with open(seg, "ab") as f:  # what a write that failed half-way leaves
        f.write(b"\x10\x00\x02")
    def failing_open(*args):
        raise OSError(28)  # ENOSPC, say

    outbox.open = failing_open  # shadows the builtin inside sbd.outbox
    try:
        box.put(b"two")
    except OSError:
        pass
    finally:
        del outbox.open
    with open(path + "/0000000002.log", "wb") as f:  # had it been a new segment
        f.write(b"\x10\x00")
    assert box.put(b"two") == 2 and box.put(b"three") == 3
    assert outbox.Outbox(path).pending(5) == [(1, b"one"), (2, b"two"), (3, b"three")]
    rmtree(_dirs.pop())


def test_ack_is_clamped_and_monotonic():
    path = fresh()
    box = outbox.Outbox(path)
    for i in range(1, 4):
        box.put(payload(i))
    box.ack(1000)  # beyond what was ever stored
    assert box.stats()["acked"] == 3 and box.put(b"x") == 4
    box.ack(1)  # going back changes nothing
    assert box.pending(10) == [(4, b"x")]
    rmtree(_dirs.pop())


def test_pending_pages_through_segments():
    path = fresh()
    box = outbox.Outbox(path, max_bytes=2048)
    for i in range(1, 61):
        box.put(payload(i))
    assert len(files(path)) > 2
    got, acked = [], 0
    while True:
        page = box.pending(7)
        if not page:
            break
        assert page[0][0] == acked + 1
        got += page
        acked = page[-1][0]
        box.ack(acked)
    assert got == [(i, payload(i)) for i in range(1, 61)]
    assert len(files(path)) == 1 and box.stats()["dropped"] == 0
    rmtree(_dirs.pop())


def _torn(tail):
    path = fresh()
    box = outbox.Outbox(path)
    for i in range(1, 4):
        box.put(payload(i))
    name = path + "/" + files(path)[-1]
    with open(name, "ab") as f:
        f.write(tail)
    box = outbox.Outbox(path)
    assert box.pending(10) == [(i, payload(i)) for i in (1, 2, 3)], tail
    assert box.stats()["torn"] == 1
    assert box.put(payload(4)) == 4  # in a new segment, not after the garbage
    assert box.put(payload(5)) == 5
    box = outbox.Outbox(path)
    assert box.pending(10) == [(i, payload(i)) for i in range(1, 6)]
    box.ack(5)
    assert outbox.Outbox(path).pending(10) == []
    rmtree(_dirs.pop())


def test_torn_tail_record_is_dropped():
    import struct
    whole = struct.pack("<HII", 20, 4, 0) + b"y" * 20  # CRC does not match
    for tail in (b"\x14", whole[:5], whole[:10], whole[:17], whole, b"\xff" * 64):
        _torn(tail)


def test_garbage_only_segment_and_bad_marker():
    path = fresh()
    box = outbox.Outbox(path)
    box.put(b"one")
    box.put(b"two")
    box.ack(1)
    with open(path + "/0000000003.log", "wb") as f:  # a first record cut short
        f.write(b"\x05\x00\x03")
    box = outbox.Outbox(path)
    assert box.pending(10) == [(2, b"two")] and box.put(b"three") == 3
    # The marker is replaced atomically; if the rename never happened, the
    # complete temporary copy counts.
    os.rename(path + "/acked", path + "/acked.tmp")
    assert outbox.Outbox(path).stats()["acked"] == 1
    # A marker that fails its CRC is ignored: messages are sent again (at
    # least once), never lost.
    with open(path + "/acked.tmp", "wb") as f:
        f.write(b"\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
    box = outbox.Outbox(path)
    assert box.pending(10) == [(1, b"one"), (2, b"two"), (3, b"three")]
    rmtree(_dirs.pop())


def test_bounded_size_drops_oldest_and_counts():
    path = fresh()
    box = outbox.Outbox(path, max_bytes=1024)
    for i in range(1, 201):
        box.put(payload(i))
        assert disk_bytes(path) <= 1024 and box.stats()["bytes"] == disk_bytes(path)
    st = box.stats()
    assert st["dropped"] > 100 and st["dropped"] + st["pending"] == 200, st
    page = box.pending(1000)
    assert [s for s, _ in page] == list(range(201 - len(page), 201))  # newest kept
    assert all(p == payload(s) for s, p in page)
    again = outbox.Outbox(path, max_bytes=1024)
    assert again.stats() == dict(st, torn=0), (again.stats(), st)
    try:
        box.put(b"x" * 300)
    except ValueError:
        pass
    else:
        raise AssertionError("oversized payload stored")
    rmtree(_dirs.pop())


# -- power cuts on littlefs ----------------------------------------------------
class Flash:
    """A RAM block device for VfsLfs2 (the extended interface, as the ESP32
    port's flash partition has). At program/erase operation number `budget`
    the power goes: that operation is cut short part-way, and nothing written
    after it reaches the flash (the code runs on, as if in the instant the
    capacitors still hold; what it is told after the cut does not count)."""

    def __init__(self, image, block_size, budget=-1):
        self.data = image
        self.bs = block_size
        self.budget = budget
        self.ops = 0
        self.dead = False

    def _op(self, start, new):
        self.ops += 1
        if self.ops == self.budget:
            cut = (self.ops * 37) % (len(new) + 1)  # part of this one is written
            self.data[start:start + cut] = new[:cut]
            self.dead = True
        elif not self.dead:
            self.data[start:start + len(new)] = new

    def readblocks(self, block, buf, off=0):
        start = block * self.bs + off
        buf[:] = self.data[start:start + len(buf)]

    def writeblocks(self, block, buf, off=0):
        start = block * self.bs + off
        # NOR flash programs only clear bits.
        self._op(start, bytes(a & b for a, b in zip(self.data[start:start + len(buf)], buf)))

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.bs
        if op == 5:
            return self.bs
        if op == 6:
            self._op(arg * self.bs, b"\xff" * self.bs)
            return 0
        return None


MOUNT = "/sbd-lfs-test"
BLOCK = 256


def _mount(flash):
    vfs = os.VfsLfs2(flash, readsize=32, progsize=32, lookahead=32)
    os.mount(vfs, MOUNT)


def _umount():
    try:
        os.umount(MOUNT)
    except OSError:
        pass


def _scenario(flash, state):
    # Puts and acks as a device would; `state` records what the caller was
    # told while the power was on.
    box = outbox.Outbox(MOUNT + "/data/outbox", max_bytes=2048)
    for i in range(24):
        seq = box.put(payload(i + 5))
        if flash.dead:
            return
        state["stored"].append(seq)
        if i % 6 == 5:
            state["acking"] = seq - 2
            box.ack(seq - 2)
            if flash.dead:
                return
            state["acked"] = seq - 2


def test_power_cut_at_every_write_on_littlefs():
    image = bytearray(b"\xff" * (40 * BLOCK))
    os.VfsLfs2.mkfs(Flash(image, BLOCK), readsize=32, progsize=32, lookahead=32)
    # Count the writes of a whole run, then cut the power at each of them.
    work = bytearray(image)  # one buffer, reused: the heap is device-sized
    probe = Flash(work, BLOCK)
    _mount(probe)
    try:
        _scenario(probe, {"stored": []})
    finally:
        _umount()
    total = probe.ops
    assert total > 50, total
    print("power cut at each of", total, "flash operations")
    for budget in range(1, total + 1):
        gc.collect()
        work[:] = image
        flash = Flash(work, BLOCK, budget)
        state = {"stored": [], "acked": 0, "acking": 0}
        _mount(flash)
        try:
            _scenario(flash, state)
        except OSError:  # what the code may run into after the cut
            assert flash.dead, budget
        finally:
            _umount()
        assert flash.dead, budget
        _mount(Flash(work, BLOCK))  # power back on: the same flash
        try:
            box = outbox.Outbox(MOUNT + "/data/outbox", max_bytes=2048)
            st = box.stats()
            # What was acknowledged stays acknowledged; nothing else is.
            assert state["acked"] <= st["acked"] <= max(state["acked"], state["acking"]), \
                (budget, st, state)
            page = box.pending(100)
            want = [s for s in state["stored"] if s > st["acked"]]
            got = [s for s, _ in page]
            # Every stored message not yet acknowledged is there, intact;
            # the one being written at the cut may be there too.
            assert got[:len(want)] == want and len(got) <= len(want) + 1, (budget, got, want)
            assert all(p == payload(s + 4) for s, p in page), budget
            assert st["dropped"] == 0 and st["pending"] == len(got), (budget, st)
            # And it goes on working: numbering continues after the last one.
            last = max([st["acked"]] + got + state["stored"])
            assert box.put(b"after") == last + 1, budget
            assert outbox.Outbox(MOUNT + "/data/outbox", max_bytes=2048).pending(100)[-1] \
                == (last + 1, b"after"), budget
        finally:
            _umount()
