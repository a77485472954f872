# Board support: the `esp32` module of MicroPython's ESP32 port, emulated.
# Partition reads the ESP-IDF partition table from the flash image; NVS keeps
# its key/value store on the "nvs" partition. Names, signatures and errors
# follow the ESP32 port (OSError(-esp_err, "ESP_ERR_...")).
import struct
import binascii
import _board
import _idfboot

HEAP_DATA = 4
HEAP_EXEC = 1
WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True

_ESP_ERR = {
    0x1102: "ESP_ERR_NVS_NOT_FOUND",
    0x1103: "ESP_ERR_NVS_TYPE_MISMATCH",
    0x1105: "ESP_ERR_NVS_NOT_ENOUGH_SPACE",
    0x1106: "ESP_ERR_NVS_INVALID_NAME",
    0x1109: "ESP_ERR_NVS_KEY_TOO_LONG",
    0x110C: "ESP_ERR_NVS_INVALID_LENGTH",
    0x102: "ESP_ERR_INVALID_ARG",
    0x103: "ESP_ERR_INVALID_STATE",
    0x104: "ESP_ERR_INVALID_SIZE",
    0x105: "ESP_ERR_NOT_FOUND",
    0x1503: "ESP_ERR_OTA_VALIDATE_FAILED",
    0x1504: "ESP_ERR_OTA_SMALL_SEC_VER",
}

# What an open NVS handle costs. ports/esp32/esp32_nvs.c: every esp32.NVS(ns)
# is an nvs_open(); there is no close() and no finaliser, so the handle (two
# ESP-IDF heap blocks, NVSHandleSimple and NVSHandleEntry in ESP-IDF's
# nvs_api.cpp) is held until the next hard reset, soft resets included
# (nvs_flash_init runs once, in app_main). ESP-IDF's heap is not
# MicroPython's: the emulator keeps a budget for it, not a heap. Both figures
# are estimates: ~64 bytes a handle with allocator overhead, and 32 KiB of
# ESP-IDF heap left with Wi-Fi up and a TLS session open (docs/emulated-board.md).
_HANDLE_BYTES = 64
_IDF_HEAP_FOR_HANDLES = 32 * 1024
_handles = _board.conf.get("nvs_handles", 0)  # left open by earlier boots since the last hard reset


def _hold_handle():
    global _handles
    if (_handles + 1) * _HANDLE_BYTES > _IDF_HEAP_FOR_HANDLES:
        # nvs_open -> ESP_ERR_NO_MEM, which check_esp_err (mphalport.c) maps to ENOMEM
        raise OSError(12, "ESP_ERR_NO_MEM")
    _handles += 1
    _board.tell_supervisor("nvs_open")


def _esp_err(code):
    return OSError(-code, _ESP_ERR.get(code, "ESP_FAIL"))


_TABLE = None


def _read_table():
    # Read once per boot, as ESP-IDF does; later calls must not allocate:
    # on the chip this work uses ESP-IDF's heap, not MicroPython's.
    global _TABLE
    if _TABLE is None:
        _TABLE = _parse_table()
    return _TABLE


def _parse_table():
    buf = bytearray(0xC00)
    _board.flash_read(_board.conf["table_offset"], buf)
    parts = []
    for pos in range(0, len(buf), 32):
        if buf[pos] != 0xAA or buf[pos + 1] != 0x50:
            break
        ptype, sub, off, size = struct.unpack("<BBII", buf[pos + 2 : pos + 12])
        label = bytes(buf[pos + 12 : pos + 28]).split(b"\0")[0].decode()
        parts.append((ptype, sub, off, size, label))
    return parts


class _Flash:
    # The flash as the bootloader code (_idfboot) reads and writes it.
    read = staticmethod(_board.flash_read)
    write = staticmethod(_board.flash_write)
    erase = staticmethod(_board.flash_erase)


_ENOENT = 2


class Partition:
    # ports/esp32/esp32_partition.c over ESP-IDF's esp_partition and app_update
    # (esp_ota_ops.c), with the bootloader's formats in _idfboot.
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096, _entry=None):
        if _entry is not None:
            entry = _entry
        elif isinstance(id, int):
            if id == Partition.RUNNING:
                entry = _ota_slot(_board.conf.get("booted", 0))
            elif id == Partition.BOOT:
                entry = _boot_partition()
            else:
                raise ValueError()
        else:
            # esp_partition_find_first, app partitions first; none: ENOENT (esp32_partition_new)
            entry = _find(0, id) or _find(1, id)
            if entry is None:
                raise OSError(_ENOENT)
        self._set(entry, block_size)

    def _set(self, entry, block_size):
        self._type, self._sub, self._off, self._size, self._label = entry
        self._bs = block_size

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        found = []
        for p in _read_table():
            if p[0] == type and (subtype == 0xFF or p[1] == subtype) and (label is None or p[4] == label):
                found.append(Partition(None, block_size, p))
        return found

    def info(self):
        return (self._type, self._sub, self._off, self._size, self._label, False)

    def __repr__(self):
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % (
            self._type, self._sub, self._off, self._size, self._label)

    def _check(self, block_num, n, offset):
        start = block_num * self._bs + offset
        if start < 0 or start + n > self._size:
            raise _esp_err(0x104)
        return self._off + start

    def readblocks(self, block_num, buf, offset=0):
        _board.flash_read(self._check(block_num, len(buf), offset), buf)

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:
            # Simple block interface: the port erases the blocks, then writes.
            addr = self._check(block_num, len(buf), 0)
            _board.flash_erase(addr, len(buf))
        else:
            addr = self._check(block_num, len(buf), offset)
        _board.flash_write(addr, buf)

    def ioctl(self, cmd, arg):
        if cmd == 4:
            return self._size // self._bs
        if cmd == 5:
            return self._bs
        if cmd == 6:
            if self._bs != 4096:
                return -22  # -MP_EINVAL
            _board.flash_erase(self._check(arg, self._bs, 0), self._bs)
            return 0
        if cmd in (1, 2, 3):
            return 0
        return None

    def set_boot(self):
        # esp_ota_set_boot_partition: the image must verify (ESP_ERR_OTA_VALIDATE_FAILED);
        # with anti-rollback, one below the eFuse secure version is erased
        # (ESP_ERR_OTA_SMALL_SEC_VER); then otadata names it, in state NEW.
        try:
            _idfboot.verify_image(_Flash, self._off, self._size)
        except _idfboot.ImageError:
            raise _esp_err(0x1503)
        if self._type != Partition.TYPE_APP:
            raise _esp_err(0x102)
        od = _otadata()
        if od is None:
            raise _esp_err(0x105)
        desc = _idfboot.read_app_desc(_Flash, self._off)
        if desc["secure_version"] < _board.efuse_secure_version():
            _board.flash_erase(self._off, self._size)
            raise _esp_err(0x1504)
        slots = _layout().slots
        if self._sub - 0x10 >= len(slots):
            raise _esp_err(0x102)
        _idfboot.set_boot_entry(_Flash, od[2], self._sub - 0x10, len(slots), _idfboot.NEW)

    def get_next_update(self):
        # esp_ota_get_next_update_partition: the OTA slot after this one, else the first
        slots = _layout().slots
        if not slots:
            raise OSError(_ENOENT)
        for i in range(len(slots)):
            if slots[i][2] == self._off and i + 1 < len(slots):
                return Partition(None, 4096, slots[i + 1])
        return Partition(None, 4096, slots[0])

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        # esp_ota_mark_app_valid_cancel_rollback: the active otadata entry becomes VALID,
        # and (anti-rollback) the eFuse takes the running app's secure version.
        od = _otadata()
        if od is None:
            raise _esp_err(0x105)
        if not _idfboot.mark_valid(_Flash, od[2]):
            raise OSError(1, "ESP_FAIL")  # "Running firmware is factory"
        desc = _idfboot.read_app_desc(_Flash, _ota_slot(_board.conf.get("booted", 0))[2])
        if desc is None:
            raise _esp_err(0x105)
        have = _board.efuse_secure_version()
        if desc["secure_version"] > _idfboot.SEC_VER_BITS:
            raise _esp_err(0x102)
        if desc["secure_version"] < have:
            raise OSError(1, "ESP_FAIL")
        if desc["secure_version"] > have:
            _board.efuse_burn_secure_version(desc["secure_version"])


def _find(ptype, label):
    for p in _read_table():
        if p[0] == ptype and p[4] == label:
            return p
    return None


def _otadata():
    for p in _read_table():
        if p[0] == 1 and p[1] == 0:
            return p
    return None


_LAYOUT = None


def _layout():
    global _LAYOUT
    if _LAYOUT is None:
        _LAYOUT = _idfboot.Layout(_read_table())
    return _LAYOUT


def _ota_slot(n):
    slots = _layout().slots
    if n >= len(slots):
        raise OSError(_ENOENT)
    return slots[n]


def _boot_partition():
    # esp_ota_get_boot_partition: the slot the active otadata entry names, else ota_0
    od = _otadata()
    if od is None:
        raise OSError(_ENOENT)
    entries = _idfboot.read_otadata(_Flash, od[2])
    act = _idfboot.active_entry(entries)
    if act == -1:
        return _ota_slot(0)
    return _ota_slot((entries[act][0] - 1) % len(_layout().slots))


# NVS -----------------------------------------------------------------------
# The store lives on the "nvs" partition as two banks. Every change writes the
# whole store to the other bank (sequence number + CRC), then erases the old
# bank, so a power cut leaves either the old or the new store, and an erased
# key leaves no copy behind. An erased partition reads as an empty store.
_T_I32 = 1
_T_BLOB = 2
_MAGIC = b"SBDN"
_store = None


def _nvs_part():
    for p in _read_table():
        if p[0] == 1 and p[1] == 2 and p[4] == "nvs":
            return p
    raise _esp_err(0x105)


def _bank_read(part, bank):
    half = part[3] // 2
    head = bytearray(16)
    _board.flash_read(part[2] + bank * half, head)
    if bytes(head[0:4]) != _MAGIC:
        return None
    seq, length, crc = struct.unpack("<III", head[4:16])
    if length > half - 16:
        return None
    body = bytearray(length)
    _board.flash_read(part[2] + bank * half + 16, body)
    if binascii.crc32(body) != crc:
        return None
    return seq, body


def _decode(body):
    store = {}
    i = 0
    while i < len(body):
        nl = body[i]
        ns = bytes(body[i + 1 : i + 1 + nl]).decode()
        i += 1 + nl
        kl = body[i]
        key = bytes(body[i + 1 : i + 1 + kl]).decode()
        i += 1 + kl
        t = body[i]
        vl = struct.unpack("<H", body[i + 1 : i + 3])[0]
        val = bytes(body[i + 3 : i + 3 + vl])
        i += 3 + vl
        store[(ns, key)] = (t, val)
    return store


# One entry's head (name lengths, names, type, value length: at most 35 bytes),
# made once: a write must not ask MicroPython's heap for a block the store's size.
_ENTRY = bytearray(40)


def _entry_head(ns, key, t, vl):
    i = 0
    for name in (ns, key):
        _ENTRY[i] = len(name)
        i += 1
        for c in name:
            _ENTRY[i] = ord(c)
            i += 1
    _ENTRY[i] = t
    _ENTRY[i + 1] = vl & 0xFF
    _ENTRY[i + 2] = vl >> 8
    return i + 3


def _load():
    global _store, _seq, _bank
    part = _nvs_part()
    best = None
    for bank in (0, 1):
        got = _bank_read(part, bank)
        if got is not None and (best is None or got[0] > best[0]):
            best = (got[0], got[1], bank)
    if best is None:
        _store, _seq, _bank = {}, 0, 1
    else:
        _store, _seq, _bank = _decode(best[1]), best[0], best[2]
    return _store


def _save():
    # On the chip an NVS write works in ESP-IDF's heap, not MicroPython's
    # (_board.py): the store goes to flash entry by entry, its CRC computed on
    # the way, with no buffer the size of the store and no copy of it.
    global _seq, _bank
    part = _nvs_part()
    half = part[3] // 2
    length = 0
    for (ns, key), (t, val) in _store.items():
        length += 5 + len(ns) + len(key) + len(val)
    if length > half - 16:
        raise _esp_err(0x1105)
    new = 1 - _bank
    base = part[2] + new * half
    _board.flash_erase(base, half)
    at, crc = base + 16, 0
    head = memoryview(_ENTRY)
    for (ns, key), (t, val) in _store.items():
        n = _entry_head(ns, key, t, len(val))
        _board.flash_write(at, head[:n])
        crc = binascii.crc32(head[:n], crc)
        _board.flash_write(at + n, val)
        crc = binascii.crc32(val, crc)
        at += n + len(val)
    # the header last: a valid bank is a whole one
    _board.flash_write(base, _MAGIC + struct.pack("<III", _seq + 1, length, crc))
    _board.flash_erase(part[2] + _bank * half, half)
    _seq, _bank = _seq + 1, new


def _change(k, item):
    """Sets key `k` to `item` (None: erases it), in RAM and on flash or in neither."""
    old = _store.get(k)
    if item is None:
        del _store[k]
    else:
        _store[k] = item  # a new key may grow the table: a failure here has changed nothing
    try:
        _save()
    except BaseException:
        if old is None:
            del _store[k]
        else:
            _store[k] = old
        raise


def _check_name(name):
    if not isinstance(name, str):
        raise TypeError("can't convert to str implicitly")
    if len(name) > 15:
        raise _esp_err(0x1109)
    if not name:
        raise _esp_err(0x1106)


class NVS:
    def __init__(self, namespace):
        _check_name(namespace)
        self._ns = namespace
        if _store is None:
            _load()
        _hold_handle()

    def __repr__(self):
        return "<NVS namespace>"

    def _get(self, key, t):
        _check_name(key)
        item = _store.get((self._ns, key))
        if item is None:
            raise _esp_err(0x1102)
        if item[0] != t:
            raise _esp_err(0x1103)
        return item[1]

    def _set(self, key, t, val):
        _check_name(key)
        old = _store.get((self._ns, key))
        if old is not None and old[0] != t:
            raise _esp_err(0x1103)
        if old == (t, val):
            return
        _change((self._ns, key), (t, val))

    def set_i32(self, key, value):
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise OverflowError("overflow converting long int to machine word")
        self._set(key, _T_I32, struct.pack("<i", value))

    def get_i32(self, key):
        return struct.unpack("<i", self._get(key, _T_I32))[0]

    def set_blob(self, key, value):
        if isinstance(value, str):
            value = value.encode()
        self._set(key, _T_BLOB, bytes(value))

    def get_blob(self, key, buffer):
        val = self._get(key, _T_BLOB)
        if len(buffer) < len(val):
            raise _esp_err(0x110C)
        buffer[0 : len(val)] = val
        return len(val)

    def erase_key(self, key):
        _check_name(key)
        if (self._ns, key) not in _store:
            raise _esp_err(0x1102)
        _change((self._ns, key), None)

    def commit(self):
        return None

