# MicroPython unit tests of the device's SNTP client (sbd.sntp, loaded by
# sbd.clock only while it sets the clock): it takes
# only a synchronised server's answer to its own query, handles NTP's 2036
# wrap, and sets the RTC as machine.RTC().datetime() takes it (the tuple of
# ports/esp32/machine_rtc.c). The network is a stand-in that answers with the
# datagram each test gives it.
import struct
import sys
import time
NOW_NTP = 3973000000  # 2025-11-24, as NTP seconds


class FakeSocket:
    answer = None  # a function of the query: the reply datagram
    sent = []
    connected = []

    def __init__(self, *args):
        pass

    def settimeout(self, t):
        pass

    def connect(self, addr):
        FakeSocket.connected.append(addr)

    def send(self, data):
        FakeSocket.sent.append(bytes(data))

    def recv(self, n):
        if FakeSocket.answer is None:
            raise OSError(110)  # ETIMEDOUT
        return FakeSocket.answer(FakeSocket.sent[-1])[:n]

    def close(self):
        pass


class FakeSocketModule:
    AF_INET = 2
    SOCK_DGRAM = 2
    socket = FakeSocket

    @staticmethod
    def getaddrinfo(host, port):
        return [(2, 2, 0, "", (host, port))]


sys.modules["socket"] = FakeSocketModule  # before sbd.sntp imports it, at each load
from sbd import clock, sntp  # noqa: E402

NTP_TO_EPOCH = sntp._ntp_to_epoch()


def reply(query, li=0, mode=4, stratum=2, echo=True, secs=NOW_NTP):
    r = bytearray(48)
    r[0] = li << 6 | 4 << 3 | mode
    r[1] = stratum
    if echo:
        r[24:32] = query[40:48]
    r[40:44] = struct.pack("!I", secs & 0xFFFFFFFF)
    return bytes(r)


def answered(**kw):
    FakeSocket.answer = lambda q: reply(q, **kw)
    try:
        return sntp.query("198.18.0.1", 10123)
    except OSError as e:
        return e


def test_a_good_answer_gives_seconds_since_the_epoch():
    assert answered() == NOW_NTP - NTP_TO_EPOCH
    assert FakeSocket.connected[-1] == ("198.18.0.1", 10123)
    q = FakeSocket.sent[-1]
    assert len(q) == 48 and q[0] == 0x23 and q[40:48] != bytes(8)  # v4 client, a random transmit time


def test_each_query_carries_a_fresh_transmit_time():
    answered()
    answered()
    assert FakeSocket.sent[-1][40:48] != FakeSocket.sent[-2][40:48]


def test_answers_it_must_not_trust_are_refused():
    assert isinstance(answered(echo=False), OSError)  # not an answer to this query: spoofed or stale
    assert isinstance(answered(mode=3), OSError)  # a client's packet, not a server's
    assert isinstance(answered(mode=5), OSError)  # broadcast
    assert isinstance(answered(li=3), OSError)  # the server's clock is not synchronised
    assert isinstance(answered(stratum=0), OSError)  # kiss-o'-death
    assert isinstance(answered(stratum=16), OSError)  # unsynchronised
    FakeSocket.answer = lambda q: reply(q)[:40]
    try:
        sntp.query("198.18.0.1", 123)
        raise AssertionError("a short answer was taken")
    except OSError:
        pass


def test_after_the_2036_wrap_the_era_is_carried():
    wrapped = (1 << 32) + 100  # 2036-02-07 06:29:56
    assert answered(secs=wrapped) == wrapped - NTP_TO_EPOCH


class FakeRTC:
    set_to = None

    def datetime(self, dt=None):
        FakeRTC.set_to = dt


class FakeMachine:
    RTC = FakeRTC


def test_sync_sets_the_rtc_once_then_keeps_it():
    import sys
    sys.modules["machine"] = FakeMachine
    clock._synced_at = None
    FakeSocket.answer = lambda q: reply(q)
    clock.sync("198.18.0.1", 10123)
    t = time.gmtime(NOW_NTP - NTP_TO_EPOCH)
    assert FakeRTC.set_to == (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0), FakeRTC.set_to
    n = len(FakeSocket.sent)
    clock.sync("198.18.0.1", 10123)  # within the hour: no second query
    assert len(FakeSocket.sent) == n


def test_without_an_answer_the_clock_is_left_alone():
    import sys
    sys.modules["machine"] = FakeMachine
    clock._synced_at = None
    FakeRTC.set_to = None
    FakeSocket.answer = None
    clock.sync("198.18.0.1", 10123)
    assert FakeRTC.set_to is None
    FakeSocket.answer = lambda q: reply(q, echo=False)
    clock.sync("198.18.0.1", 10123)
    assert FakeRTC.set_to is None and clock._synced_at is None


def test_the_sntp_code_is_unloaded_after_a_sync():
    import sbd
    clock._synced_at = None
    FakeSocket.answer = lambda q: reply(q)
    sys.modules["machine"] = FakeMachine
    clock.sync("198.18.0.1", 10123)
    assert "sbd.sntp" not in sys.modules and not hasattr(sbd, "sntp")
