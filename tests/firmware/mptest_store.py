# MicroPython unit tests of sbd.store: the firmware holds one NVS handle.
import mphelpers

mphelpers.install_fake_nvs()
from sbd import store  # noqa: E402


def test_a_day_of_store_calls_opens_one_nvs_handle():
    # esp32.NVS(ns) is an nvs_open with no close: a handle per call is ESP-IDF
    # heap lost for good, and the firmware's loops read and write NVS at every
    # command, telemetry round and reconnection attempt.
    for i in range(500):
        store.put_int("cmd_seq", i)
        assert store.get_int("cmd_seq") == i
        store.put("k", b"v%d" % i)
        assert store.get("k") == b"v%d" % i
        assert store.get("absent") is None
    assert mphelpers.FakeNVS.opened <= 1, mphelpers.FakeNVS.opened
