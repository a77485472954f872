# Helpers shared by the MicroPython unit tests (on MICROPYPATH with them).


def raises(fn, *args):
    """True when fn(*args) raises ValueError."""
    try:
        fn(*args)
    except ValueError:
        return True
    return False


class FakeNVS:
    """esp32.NVS in a dict: blobs and 32-bit integers, for modules built on sbd.store."""
    data = {}

    def __init__(self, ns):
        pass

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

    def commit(self):
        pass


class FakeEsp32:
    NVS = FakeNVS


def install_fake_nvs():
    import sys
    sys.modules["esp32"] = FakeEsp32()
