# Secure storage: the device's keys, certificates and settings live in NVS,
# never in files. On a real ESP32, turn on flash encryption and NVS
# encryption so they are also protected at rest (docs/identity.md, "Storage in NVS").
# Provisions: ETSI EN 303 645 5.4-1 (sensitive security parameters stored
# securely), 5.4-3 (none in the firmware image); NIST IR 8259A 3.
import esp32

NAMESPACE = "sbd"
NVS_NOT_FOUND = -0x1102
MAX_BLOB = 2048


# One handle for the device's life. esp32.NVS() is an nvs_open() that the
# port never closes (ports/esp32/esp32_nvs.c: no close, no finaliser): a
# handle per call would leak ESP-IDF heap at every retry.
_handle = None


def _nvs():
    global _handle
    if _handle is None:
        _handle = esp32.NVS(NAMESPACE)
    return _handle


# One read buffer, made at boot while the heap is still whole: a day of TLS
# and MQTT can fragment it so that no fresh 2 KiB block is left, even with
# tens of KiB free, and a read must not fail for that.
_SCRATCH = bytearray(MAX_BLOB)


def get(key, max_len=MAX_BLOB):
    """The blob stored under key, or None."""
    buf = memoryview(_SCRATCH)[:max_len]
    try:
        n = _nvs().get_blob(key, buf)
    except OSError as e:
        if e.args[0] == NVS_NOT_FOUND:
            return None
        raise
    value = bytes(buf[:n])
    if max_len <= 64:  # keys are read with a small max_len: leave no copy in the scratch
        buf[:n] = bytes(n)
    return value


def put(key, value):
    nvs = _nvs()
    nvs.set_blob(key, value)
    nvs.commit()


def erase(key):
    """Forgets key (nothing when it was not there)."""
    nvs = _nvs()
    try:
        nvs.erase_key(key)
    except OSError as e:
        if e.args[0] == NVS_NOT_FOUND:
            return
        raise
    nvs.commit()


def get_int(key, default=0):
    try:
        return _nvs().get_i32(key)
    except OSError as e:
        if e.args[0] == NVS_NOT_FOUND:
            return default
        raise


def put_int(key, value):
    nvs = _nvs()
    nvs.set_i32(key, value)
    nvs.commit()


def erase_partition():
    """Every byte of the NVS partition back to 0xFF: keys, certificates,
    settings. (erase_key alone may leave old entries in flash until NVS
    garbage-collects its pages.) Reset right after: NVS still caches them."""
    part = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="nvs")[0]
    for block in range(part.ioctl(4, 0)):
        part.ioctl(6, block)
