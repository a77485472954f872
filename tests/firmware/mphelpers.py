# Helpers shared by the MicroPython unit tests (on MICROPYPATH with them).


def raises(fn, *args):
    """True when fn(*args) raises ValueError."""
    try:
        fn(*args)
    except ValueError:
        return True
    return False


class FakeNVS:
    """esp32.NVS in a dict: blobs and 32-bit integers, for modules built on sbd.store.
    `opened` counts the handles made: on the chip each is an nvs_open that is
    never closed (ports/esp32/esp32_nvs.c has no close and no finaliser)."""
    data = {}
    opened = 0

    def __init__(self, ns):
        FakeNVS.opened += 1

    def set_blob(self, k, v):
        FakeNVS.data[k] = bytes(v)

    def get_blob(self, k, buf):
        if k not in FakeNVS.data:
            raise OSError(-0x1102, "ESP_ERR_NVS_NOT_FOUND")
        v = FakeNVS.data[k]
        buf[:len(v)] = v
        return len(v)

    def get_i32(self, k):
        if k not in FakeNVS.data:
            raise OSError(-0x1102, "ESP_ERR_NVS_NOT_FOUND")
        return FakeNVS.data[k]

    def set_i32(self, k, v):
        FakeNVS.data[k] = v

    def erase_key(self, k):
        if k not in FakeNVS.data:
            raise OSError(-0x1102, "ESP_ERR_NVS_NOT_FOUND")
        del FakeNVS.data[k]

    def commit(self):
        pass


class FakeEsp32:
    NVS = FakeNVS


def install_fake_nvs():
    import sys
    sys.modules["esp32"] = FakeEsp32()
