"""The emulated ESP-IDF bootloader (emulator/rom/_idfboot.py) on real app images.

It runs here under CPython on a flash chip in memory that behaves like NOR flash
(an erase sets a sector to 0xFF, a write can only clear bits), so that a power cut
can be made at every flash write, torn half way.
"""
from __future__ import annotations

import struct
import sys

import pytest

from sbd_harness.emulator.flash_image import parse_csv
from sbd_harness.paths import boards_dir
from sbd_harness.release.app_image import AppDescriptor, build_app_image, read_app_image

sys.path.insert(0, str(boards_dir().parent / "harness" / "sbd_harness" / "emulator" / "rom"))
import _bootloader  # noqa: E402  (ROM modules: they have no package)
import _idfboot as boot  # noqa: E402

PARTS = parse_csv((boards_dir() / "emulated" / "partitions.csv").read_text())
TABLE = [(p.type, p.subtype, p.offset, p.size, p.label) for p in PARTS]
LAYOUT = boot.Layout(TABLE)
OTADATA = LAYOUT.otadata[2]
SLOT0, SLOT1 = LAYOUT.slots[0][2], LAYOUT.slots[1][2]
SLOT_SIZE = LAYOUT.slots[0][3]


class PowerCut(Exception):
    pass


class Flash:
    """4 MiB of NOR flash; `cut_at` makes the n-th write or erase stop half way."""

    def __init__(self) -> None:
        self.mem = bytearray(b"\xff" * (4 << 20))
        self.ops = 0
        self.cut_at: int | None = None

    def read(self, addr: int, buf) -> None:
        buf[:] = self.mem[addr:addr + len(buf)]

    def _op(self) -> bool:
        self.ops += 1
        return self.cut_at is not None and self.ops == self.cut_at

    def write(self, addr: int, data) -> None:
        data = bytes(data)
        torn = self._op()
        if torn:
            data = data[:len(data) // 2]
        for i, b in enumerate(data):
            self.mem[addr + i] &= b  # programming clears bits, never sets them
        if torn:
            raise PowerCut()

    def erase(self, addr: int, size: int) -> None:
        assert addr % 4096 == 0 and size % 4096 == 0
        torn = self._op()
        if torn:
            size = max(4096, size // 2 // 4096 * 4096) if size > 4096 else 0
        self.mem[addr:addr + size] = b"\xff" * size
        if torn:
            raise PowerCut()


class Efuse:
    def __init__(self) -> None:
        self.bits = 0

    def secure_version(self) -> int:
        return bin(self.bits).count("1")

    def burn_secure_version(self, n: int) -> None:
        self.bits |= (1 << n) - 1


def image(version: str, secure_version: int = 0, size: int = 48 * 1024) -> bytes:
    return build_app_image(AppDescriptor("sbd-reference-esp32", version, secure_version), size, version.encode())


def put(flash: Flash, addr: int, data: bytes) -> None:
    """A flasher's or an update's write: the blocks erased, then written."""
    flash.erase(addr, (len(data) + 4095) // 4096 * 4096)
    flash.write(addr, data)


def start(flash: Flash, efuse: Efuse, log: list | None = None):
    lines = [] if log is None else log
    return _bootloader.boot(flash, LAYOUT, efuse, lambda lvl, tag, text: lines.append(f"{lvl} {tag}: {text}"))


def states(flash: Flash) -> list[tuple[int, int]]:
    return [(e[0], e[2]) for e in boot.read_otadata(flash, OTADATA)]


def fresh(factory: bytes | None = None) -> tuple[Flash, Efuse]:
    flash, efuse = Flash(), Efuse()
    put(flash, SLOT0, factory or image("1.0.0"))
    return flash, efuse


def rom_crc32_le(crc: int, data: bytes) -> int:
    """The ESP32 ROM's crc32_le, bit by bit: the register starts at ~crc and is inverted at the end."""
    crc = ~crc & 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return ~crc & 0xFFFFFFFF


def test_otadata_crc_is_the_roms_crc32_le_from_uint32_max() -> None:
    # bootloader_common_ota_select_crc: esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4); ESP-IDF's
    # otatool.py writes the same as binascii.crc32(pack('<I', seq), 0xFFFFFFFF).
    for seq in (1, 2, 3, 0x1234, 0xFFFFFFFE):
        assert boot.seq_crc(seq) == rom_crc32_le(0xFFFFFFFF, struct.pack("<I", seq))
    assert boot.seq_crc(1) == 0x4743989A
    flash, efuse = fresh()
    start(flash, efuse)
    raw = bytes(flash.mem[OTADATA:OTADATA + 32])
    assert struct.unpack("<I20sII", raw) == (1, b"\xff" * 20, boot.VALID, 0x4743989A)
    assert flash.mem[OTADATA + 4096:OTADATA + 8192] == b"\xff" * 4096, "the second sector stays erased"


def test_state_values_are_esp_idfs() -> None:
    assert (boot.NEW, boot.PENDING_VERIFY, boot.VALID, boot.INVALID, boot.ABORTED, boot.UNDEFINED) == \
        (0, 1, 2, 3, 4, 0xFFFFFFFF)


def test_images_made_with_esptool_verify_and_carry_their_descriptor() -> None:
    data = image("2.1.0", 3)
    parsed = read_app_image(data)
    assert parsed.descriptor.version == "2.1.0" and parsed.descriptor.secure_version == 3
    flash = Flash()
    put(flash, SLOT1, data)
    length, desc = boot.verify_image(flash, SLOT1, SLOT_SIZE)
    assert length == len(data)
    assert (desc["project_name"], desc["version"], desc["secure_version"]) == ("sbd-reference-esp32", "2.1.0", 3)
    assert desc["app_elf_sha256"] == parsed.descriptor.app_elf_sha256.hex()


@pytest.mark.parametrize("damage", ["magic", "segment-byte", "checksum", "hash", "truncated", "chip", "desc"])
def test_a_damaged_image_does_not_verify(damage: str) -> None:
    data = bytearray(image("2.0.0"))
    if damage == "magic":
        data[0] = 0xE8
    elif damage == "segment-byte":
        data[5000] ^= 0x01
    elif damage == "checksum":
        data[len(data) - 33] ^= 0xFF
    elif damage == "hash":
        data[-1] ^= 0x80
    elif damage == "truncated":
        data = data[:len(data) - 4096]
    elif damage == "chip":
        data[12] = 5  # an ESP32-C3 image
    elif damage == "desc":
        data[0x20] ^= 0xFF
    flash = Flash()
    put(flash, SLOT1, bytes(data))
    with pytest.raises(boot.ImageError):
        boot.verify_image(flash, SLOT1, SLOT_SIZE)


def test_an_image_larger_than_its_partition_does_not_verify() -> None:
    data = image("2.0.0", size=64 * 1024)
    flash = Flash()
    put(flash, SLOT1, data)
    with pytest.raises(boot.ImageError, match="partition"):
        boot.verify_image(flash, SLOT1, len(data) - 64)


def test_blank_otadata_boots_ota_0_and_records_it() -> None:
    flash, efuse = fresh()
    log: list[str] = []
    assert start(flash, efuse, log)[0] == 0
    assert states(flash) == [(1, boot.VALID), (0xFFFFFFFF, 0xFFFFFFFF)]
    assert "I boot: Loaded app from partition at offset 0x10000" in log


def test_a_new_image_boots_in_trial_and_is_rolled_back_unless_marked_valid() -> None:
    flash, efuse = fresh()
    start(flash, efuse)
    put(flash, SLOT1, image("2.0.0"))
    boot.set_boot_entry(flash, OTADATA, 1, 2, boot.NEW)
    assert states(flash)[1] == (2, boot.NEW)
    slot, desc = start(flash, efuse)
    assert (slot, desc["version"]) == (1, "2.0.0")
    assert states(flash)[1] == (2, boot.PENDING_VERIFY)
    log: list[str] = []
    slot, desc = start(flash, efuse, log)  # reset before the app confirmed itself
    assert (slot, desc["version"]) == (0, "1.0.0")
    assert states(flash) == [(1, boot.VALID), (2, boot.ABORTED)]
    assert any("ABORTED" in line for line in log)
    assert start(flash, efuse)[0] == 0, "an aborted image stays aborted"


def test_an_image_marked_valid_stays_and_burns_its_secure_version() -> None:
    flash, efuse = fresh()
    start(flash, efuse)
    put(flash, SLOT1, image("2.0.0", secure_version=2))
    boot.set_boot_entry(flash, OTADATA, 1, 2, boot.NEW)
    assert start(flash, efuse)[0] == 1
    assert boot.mark_valid(flash, OTADATA)
    assert states(flash)[1] == (2, boot.VALID)
    assert start(flash, efuse)[0] == 1
    assert efuse.secure_version() == 2, "the bootloader burns the secure version of a valid app it boots"


def test_the_next_update_goes_back_to_ota_0_with_a_higher_sequence() -> None:
    flash, efuse = fresh()
    start(flash, efuse)
    for n, slot in ((2, 1), (3, 0), (4, 1)):
        put(flash, LAYOUT.slots[slot][2], image(f"{n}.0.0"))
        boot.set_boot_entry(flash, OTADATA, slot, 2, boot.NEW)
        got, desc = start(flash, efuse)
        assert (got, desc["version"]) == (slot, f"{n}.0.0")
        assert boot.mark_valid(flash, OTADATA)
    assert sorted(states(flash)) == [(3, boot.VALID), (4, boot.VALID)]


def test_an_image_below_the_efuse_secure_version_is_not_booted() -> None:
    flash, efuse = fresh(image("1.0.0", secure_version=1))
    efuse.burn_secure_version(1)
    start(flash, efuse)
    put(flash, SLOT1, image("0.9.0", secure_version=0))
    boot.set_boot_entry(flash, OTADATA, 1, 2, boot.NEW)
    log: list[str] = []
    slot, desc = start(flash, efuse, log)
    assert (slot, desc["version"]) == (0, "1.0.0")
    assert states(flash)[1] == (2, boot.NEW), "its entry was never selected"


def test_a_corrupt_selected_image_falls_back_to_the_other_slot() -> None:
    flash, efuse = fresh()
    start(flash, efuse)
    put(flash, SLOT1, image("2.0.0"))
    boot.set_boot_entry(flash, OTADATA, 1, 2, boot.NEW)
    flash.mem[SLOT1 + 9000] ^= 0x04
    log: list[str] = []
    slot, _ = start(flash, efuse, log)
    assert slot == 0
    assert any("OTA app partition slot 1 is not bootable" in line for line in log)


def test_no_bootable_image_boots_nothing() -> None:
    flash, efuse = Flash(), Efuse()
    log: list[str] = []
    assert start(flash, efuse, log) is None
    assert log[-1] == "E boot: No bootable app partitions in the partition table"


def install(flash: Flash, data: bytes, slot: int = 1) -> None:
    """What the device's update (sbd.appimage.Writer) does to the other slot and otadata: each
    4 KiB block erased before its first byte, the 1 KiB chunks written as they arrive; then
    otadata points at it, NEW (esp32.Partition.set_boot)."""
    base = LAYOUT.slots[slot][2]
    for off in range(0, len(data), 1024):
        if off % 4096 == 0:
            flash.erase(base + off, 4096)
        flash.write(base + off, data[off:off + 1024])
    boot.verify_image(flash, base, SLOT_SIZE)
    boot.set_boot_entry(flash, OTADATA, slot, 2, boot.NEW)


def _running(kind: str) -> tuple[Flash, Efuse, int]:
    """A device before an update: MicroPython in ota_0 (the first update goes to ota_1), or
    release 2.0.0 committed in ota_1 (the next goes back to ota_0). Returns the target slot."""
    flash, efuse = fresh()
    start(flash, efuse)
    if kind == "first-update":
        return flash, efuse, 1
    install(flash, image("2.0.0", size=24 * 1024))
    assert start(flash, efuse)[0] == 1 and boot.mark_valid(flash, OTADATA)
    return flash, efuse, 0


@pytest.mark.parametrize("kind", ["first-update", "second-update"])
def test_a_power_cut_at_every_flash_write_of_an_install_leaves_the_old_image_or_the_new_one_on_trial(kind) -> None:
    new = image("3.0.0", size=24 * 1024)
    probe, efuse, target = _running(kind)
    old = 1 - target
    before = probe.ops
    install(probe, new, target)
    writes = probe.ops - before
    assert writes > len(new) // 1024
    for cut in range(1, writes + 1):
        flash, efuse, _ = _running(kind)
        flash.cut_at = flash.ops + cut
        with pytest.raises(PowerCut):
            install(flash, new, target)
        flash.cut_at = None
        slot, desc = start(flash, efuse)
        boot.verify_image(flash, LAYOUT.slots[slot][2], SLOT_SIZE)
        entries = boot.read_otadata(flash, OTADATA)
        if slot == target:  # the new image runs only on trial: unconfirmed, it is rolled back
            assert desc["version"] == "3.0.0" and entries[boot.active_entry(entries)][2] == boot.PENDING_VERIFY, \
                (kind, cut, states(flash))
            assert start(flash, efuse)[0] == old, (kind, cut)
        else:
            assert slot == old, (kind, cut)
        if cut < writes:
            assert slot == old, f"{kind}: cut at write {cut} of {writes}: the old image runs until otadata is written"


def _trial(flash: Flash, efuse: Efuse) -> None:
    start(flash, efuse)
    install(flash, image("2.0.0", secure_version=1, size=24 * 1024))


@pytest.mark.parametrize("step", ["boot-of-a-trial", "mark-valid", "boot-after-an-unconfirmed-trial"])
def test_a_power_cut_at_every_otadata_write_leaves_a_verified_image_to_boot(step: str) -> None:
    def run(flash: Flash, efuse: Efuse) -> None:
        if step == "boot-of-a-trial":
            start(flash, efuse)
        elif step == "mark-valid":
            assert start(flash, efuse)[0] == 1
            boot.mark_valid(flash, OTADATA)
        else:
            start(flash, efuse)
            start(flash, efuse)

    probe, efuse = fresh()
    _trial(probe, efuse)
    base = probe.ops
    run(probe, efuse)
    writes = probe.ops - base
    assert writes >= 2
    for cut in range(1, writes + 1):
        flash, efuse = fresh()
        _trial(flash, efuse)
        flash.cut_at = flash.ops + cut
        with pytest.raises(PowerCut):
            run(flash, efuse)
        flash.cut_at = None
        for _ in range(3):  # and at every boot after it
            booted = start(flash, efuse)
            assert booted is not None, (step, cut)
            boot.verify_image(flash, LAYOUT.slots[booted[0]][2], SLOT_SIZE)
        entries = boot.read_otadata(flash, OTADATA)
        assert boot.active_entry(entries) != -1 or booted[0] == 0, (step, cut, states(flash))
