# The ESP-IDF second-stage bootloader of the emulated ESP32, and the parts of
# ESP-IDF's app_update that read and write the same data, on the real formats:
# - otadata: two 4 KiB sectors, each an esp_ota_select_entry_t (ota_seq u32,
#   seq_label[20], ota_state u32, crc u32 = the ROM's crc32_le(UINT32_MAX) of
#   ota_seq alone); the entry with the highest valid ota_seq selects ota_<(seq-1) % n>
#   (bootloader_support/src/bootloader_common_loader.c, bootloader_utility.c);
# - the app image as esptool writes it (esp_image_format.h, esp_image_format.c):
#   a 24-byte header (magic 0xE9), up to 16 segments, a checksum byte (XOR of the
#   segment data, seeded 0xEF) ending a 16-byte block, and the SHA-256 of all of it
#   appended when hash_appended is set;
# - the app descriptor (esp_app_desc.h): esp_app_desc_t, magic 0xABCD5432, at the
#   start of the first segment (offset 0x20 of the partition);
# - app rollback (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE, as MicroPython's
#   sdkconfig.base sets) and anti-rollback (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK, as
#   a manufacturer's build sets): the secure version counts the bits burnt in a
#   32-bit eFuse field (efuse/src/esp_efuse_fields.c).
# Runs under MicroPython (the ROM) and CPython (the harness's unit tests): `flash`
# has read(addr, buf), write(addr, data) and erase(addr, size); `efuse` has
# secure_version() and burn_secure_version(n); `log(level, tag, text)` prints a line.
import struct
import binascii
import hashlib

NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF

SECTOR = 4096
APP_DESC_MAGIC = 0xABCD5432
IMAGE_MAGIC = 0xE9
CHIP_ID_ESP32 = 0
MAX_SEGMENTS = 16
SEC_VER_BITS = 32  # CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD, the ESP32's default
_APP_DESC_AT = 0x20  # sizeof(esp_image_header_t) + sizeof(esp_image_segment_header_t)
_MMU_PAGE = 0x10000
_MAPPED = ((0x400D0000, 0x40400000), (0x3F400000, 0x3F800000))  # the ESP32's IROM and DROM


# Allocated once, when the ROM starts: on the chip this work runs in ESP-IDF's heap
# (esp_ota_set_boot_partition verifies the image), never in MicroPython's.
_BLOCK = bytearray(1024)


class ImageError(Exception):
    pass


def seq_crc(seq):
    """bootloader_common_ota_select_crc: esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4)."""
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


# otadata ----------------------------------------------------------------------
def read_otadata(flash, od_addr):
    """The two entries as [seq, label, state, crc] lists."""
    out = []
    buf = bytearray(32)
    for i in range(2):
        flash.read(od_addr + i * SECTOR, buf)
        seq, state, crc = struct.unpack("<I", buf[0:4])[0], struct.unpack("<I", buf[24:28])[0], \
            struct.unpack("<I", buf[28:32])[0]
        out.append([seq, bytes(buf[4:24]), state, crc])
    return out


def write_entry(flash, od_addr, i, entry):
    """write_otadata / rewrite_ota_seq: erase the entry's sector, then write the 32 bytes."""
    data = struct.pack("<I", entry[0]) + entry[1] + struct.pack("<II", entry[2], entry[3])
    flash.erase(od_addr + i * SECTOR, SECTOR)
    flash.write(od_addr + i * SECTOR, data)


def entry_invalid(e):
    return e[0] == 0xFFFFFFFF or e[2] == INVALID or e[2] == ABORTED


def entry_valid(e):
    return not entry_invalid(e) and e[3] == seq_crc(e[0])


def select_entry(entries, valid):
    """bootloader_common_select_otadata: the valid entry with the highest sequence."""
    if valid[0] and valid[1]:
        return 0 if max(entries[0][0], entries[1][0]) == entries[0][0] else 1
    for i in range(2):
        if valid[i]:
            return i
    return -1


def active_entry(entries):
    return select_entry(entries, [entry_valid(entries[0]), entry_valid(entries[1])])


def next_seq(current, slot, count):
    """compute_ota_seq_for_target_slot (app_update/esp_ota_ops.c)."""
    base = (slot + 1) % count
    i = 0
    while current > base + i * count:
        i += 1
    return base + i * count


def set_boot_entry(flash, od_addr, slot, count, state):
    """esp_rewrite_ota_data: point the next boot at ota_<slot>, in state `state`."""
    entries = read_otadata(flash, od_addr)
    act = active_entry(entries)
    if act != -1:
        if (entries[act][0] - 1) % count == slot:
            nxt, seq = act, entries[act][0]
        else:
            nxt, seq = 1 - act, next_seq(entries[act][0], slot, count)
    else:
        nxt, seq = 0, slot + 1
    e = entries[nxt]
    e[0], e[2], e[3] = seq, state, seq_crc(seq)
    write_entry(flash, od_addr, nxt, e)


def mark_valid(flash, od_addr):
    """esp_ota_current_ota_is_workable(true): the active entry becomes VALID.
    Returns False when no entry is active ("Running firmware is factory": ESP_FAIL)."""
    entries = read_otadata(flash, od_addr)
    act = active_entry(entries)
    if act == -1:
        return False
    if entries[act][2] != VALID:
        entries[act][2] = VALID
        write_entry(flash, od_addr, act, entries[act])
    return True


# the app image ------------------------------------------------------------------
def _cstr(b):
    return bytes(b).split(b"\0")[0].decode()


def read_app_desc(flash, addr):
    """esp_ota_get_partition_description: the esp_app_desc_t at 0x20, or None."""
    buf = bytearray(256)
    flash.read(addr + _APP_DESC_AT, buf)
    if struct.unpack("<I", buf[0:4])[0] != APP_DESC_MAGIC:
        return None
    return {
        "secure_version": struct.unpack("<I", buf[4:8])[0],
        "version": _cstr(buf[16:48]),
        "project_name": _cstr(buf[48:80]),
        "time": _cstr(buf[80:96]),
        "date": _cstr(buf[96:112]),
        "idf_ver": _cstr(buf[112:144]),
        "app_elf_sha256": binascii.hexlify(buf[144:176]).decode(),
    }


def _mapped(load_addr):
    for low, high in _MAPPED:
        if low <= load_addr < high:
            return True
    return False


def verify_image(flash, addr, size):
    """esp_image_verify: the image in [addr, addr+size) is whole, or ImageError says why.
    Returns (image length, app descriptor)."""
    head = bytearray(24)
    flash.read(addr, head)
    if head[0] != IMAGE_MAGIC:
        raise ImageError("invalid magic byte (nothing flashed here?)")
    if struct.unpack("<H", head[12:14])[0] != CHIP_ID_ESP32:
        raise ImageError("mismatch chip ID")
    if head[1] > MAX_SEGMENTS:
        raise ImageError("segment count %d exceeds max %d" % (head[1], MAX_SEGMENTS))
    sha = hashlib.sha256(head)
    checksum = 0xEF
    pos = 24
    buf = _BLOCK
    seg = bytearray(8)
    for index in range(head[1]):
        if pos + 8 > size:
            raise ImageError("image length doesn't fit in partition")
        flash.read(addr + pos, seg)
        sha.update(seg)
        load_addr, length = struct.unpack("<II", seg)
        pos += 8
        if length & 3:
            raise ImageError("invalid segment length 0x%x" % length)
        if pos + length > size:
            raise ImageError("segment %d extends past the end of the partition" % index)
        if index == 0 and length < 256:
            raise ImageError("segment 0 is too short for app description")
        if _mapped(load_addr) and pos % _MMU_PAGE != load_addr % _MMU_PAGE:
            raise ImageError("segment %d load address 0x%08x doesn't match data 0x%08x" % (index, load_addr, pos))
        left = length
        while left:
            n = left if left < len(buf) else len(buf)
            view = memoryview(buf)[:n]
            flash.read(addr + pos, view)
            sha.update(view)
            for b in view:
                checksum ^= b
            pos += n
            left -= n
    pad = 16 - (pos % 16)  # the checksum byte ends a 16-byte block
    if pos + pad > size:
        raise ImageError("image length doesn't fit in partition")
    tail = bytearray(pad)
    flash.read(addr + pos, tail)
    sha.update(tail)
    if tail[pad - 1] != checksum:
        raise ImageError("checksum failed: calculated 0x%02x, read 0x%02x" % (checksum, tail[pad - 1]))
    pos += pad
    if head[23]:  # hash_appended
        if pos + 32 > size:
            raise ImageError("image length doesn't fit in partition")
        stored = bytearray(32)
        flash.read(addr + pos, stored)
        if sha.digest() != bytes(stored):
            raise ImageError("image hash failed - image is corrupt")
        pos += 32
    desc = read_app_desc(flash, addr)
    if desc is None:
        raise ImageError("failed to fetch app description header")
    return pos, desc


class Layout:
    """What bootloader_utility_load_partition_table keeps: otadata and the ota_N slots,
    from (type, subtype, offset, size, label) entries."""

    def __init__(self, parts):
        self.otadata = None
        slots = {}
        for p in parts:
            if p[0] == 1 and p[1] == 0:
                self.otadata = p
            elif p[0] == 0 and 0x10 <= p[1] < 0x20:
                slots[p[1] - 0x10] = p
        self.slots = []
        while len(self.slots) in slots:  # esp_ota_get_app_partition_count: ota_0, ota_1, ... without gaps
            self.slots.append(slots[len(self.slots)])
