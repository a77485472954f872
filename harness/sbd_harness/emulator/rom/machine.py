# Board support: the `machine` module of MicroPython's ESP32 port, emulated.
import binascii
import time
import _board

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
WLAN_WAKE = 2
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6

_freq = 160000000


def unique_id():
    return binascii.unhexlify(_board.conf["unique_id"])


def reset_cause():
    # As ports/esp32/modmachine.c: a soft reboot reports SOFT_RESET, otherwise
    # the chip's reset reason (EN pin and power: PWRON; esp_restart: HARD).
    if not _board.conf["cold"]:
        return SOFT_RESET
    return _board.conf["reset_cause"]


def wake_reason():
    return 0


def reset():
    # esp_restart(): the chip reboots at once; nothing after this runs.
    _board.tell_supervisor("reset")
    _board.halt()


def soft_reset():
    # As on the port: a SystemExit that the REPL turns into a soft reboot.
    _board.soft_reset_requested = True
    raise SystemExit


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz


def idle():
    time.sleep_ms(1)


def lightsleep(time_ms=None):
    time.sleep_ms(time_ms or 0)


def disable_irq():
    return 0


def enable_irq(state=0):
    return None


class WDT:
    # The task watchdog lives in the supervisor, so like the real one it keeps
    # counting across soft resets and resets the chip when not fed in time.
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(%d) doesn't exist" % id)
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        _board.tell_supervisor("wdt %d" % timeout)

    def feed(self):
        _board.wdt_feed()


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5

    # GPIOs an ESP32-WROOM-32 module exposes.
    _VALID = (0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27,
              32, 33, 34, 35, 36, 37, 38, 39)

    def __init__(self, id, mode=-1, pull=-1, value=None):
        if id not in Pin._VALID:
            raise ValueError("invalid pin")
        self._id = id
        self._out = None
        self._pull = None
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode == Pin.OUT and self._id >= 34:
            raise ValueError("pin can only be input")
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self._out = 1 if value else 0

    def value(self, v=None):
        if v is not None:
            self._out = 1 if v else 0
            return None
        if getattr(self, "_mode", None) == Pin.OUT and self._out is not None:
            return self._out
        levels = _board.pin_levels()
        if self._id in levels:
            return levels[self._id]
        return 1 if self._pull == Pin.PULL_UP else 0

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __repr__(self):
        return "Pin(%d)" % self._id


class RTC:
    # ports/esp32/machine_rtc.c: datetime() reads and settimeofday()s the
    # system clock, seconds since 2000-01-01; init() takes the hour at index 3.
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            import time
            now = time.time_ns() // 1000
            t = time.gmtime(now // 1000000)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], now % 1000000)
        self._set(dt, 4)

    def init(self, dt):
        self._set(dt, 3)

    @staticmethod
    def _set(dt, h):
        if len(dt) != 8:
            raise ValueError("requested length 8 but object has length %d" % len(dt))
        secs = _board.seconds_since_2000(dt[0], dt[1], dt[2], dt[h], dt[h + 1], dt[h + 2])
        _board.set_clock(secs + dt[7] / 1000000)
