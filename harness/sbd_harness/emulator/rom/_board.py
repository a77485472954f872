# Emulated ESP32: what the "silicon" provides to the board-support modules.
# Runs under the MicroPython unix port. Everything host-side it needs (the
# flash image, the control pipe to the supervisor, pin and link state) is
# opened here, before the device filesystem is mounted over "/".
import os
import json
import time as _host_time  # the unix port's, before the ROM installs the board's

conf = json.loads(os.getenv("SBD_BOARD_CONF"))
# The host time (Unix seconds) at which the board's clock read 2000-01-01
# 00:00:00: set at power-on by the supervisor, moved by machine.RTC.
rtc0 = [conf.get("rtc0") or 0.0]
_flash = open(conf["flash"], "r+b")
_ctl = open("/dev/fd/%d" % conf["ctl_fd"], "wb")
_ack = open("/dev/fd/%d" % conf["ack_fd"], "rb")
_pins = open(conf["pins"], "rb")
_link = None
if conf.get("link_state"):
    try:
        _link = open(conf["link_state"], "rb")
    except OSError:
        _link = None

# The watchdog's feeds: the host's monotonic time in ms, read by the supervisor only when its
# timer would expire (supervisor.py, wdt_expired), so a feed costs one write and wakes nobody.
# Opened without truncating: the timer runs on across a soft reset, and so does its last feed.
_wdt = open(conf["wdt_feed"], "r+b")

# The eFuse field of the app's secure version (ESP_EFUSE_SECURE_VERSION, 32 bits on the
# ESP32): a file of the board's, beside the flash, that no flash erase touches. Bits are
# only ever set, as eFuse bits are burnt; the secure version is how many are set.
_efuse = open(conf["efuse"], "r+b") if conf.get("efuse") else None


def _efuse_bits():
    if _efuse is None:
        return 0
    _efuse.seek(0)
    raw = _efuse.read(4)
    return int.from_bytes(raw, "little") if len(raw) == 4 else 0


def efuse_secure_version():
    bits = _efuse_bits()
    n = 0
    while bits:
        n += bits & 1
        bits >>= 1
    return n


def efuse_burn_secure_version(version):
    """esp_efuse_update_secure_version: burn bits up to `version`, never clear one."""
    if _efuse is None:
        raise OSError(5)
    bits = _efuse_bits() | ((1 << version) - 1)
    _efuse.seek(0)
    _efuse.write(bits.to_bytes(4, "little"))


SECTOR = 4096
# Allocated once at power-on: on the chip, flash and NVS work happens in
# ESP-IDF's heap, so the emulator must not charge MicroPython's for it.
_BLANK = b"\xff" * SECTOR


def flash_read(offset, buf):
    _flash.seek(offset)
    n = _flash.readinto(buf)
    if n != len(buf):
        raise OSError(5)


def flash_write(offset, buf):
    _flash.seek(offset)
    _flash.write(buf)


def flash_erase(offset, size):
    _flash.seek(offset)
    blank = memoryview(_BLANK)
    while size > 0:
        n = SECTOR if size >= SECTOR else size
        _flash.write(blank[:n])
        size -= n


def tell_supervisor(line):
    # Unbuffered: one write() per line. (No flush: it would fsync a pipe.)
    _ctl.write(line.encode() + b"\n")


def wdt_feed():
    _wdt.seek(0)
    _wdt.write(b"%020d\n" % _host_time.ticks_ms())


def uart_isr():
    # The UART's receive handler runs now (supervisor.py, release_fifo): a Ctrl-C
    # waiting in its FIFO becomes a pending KeyboardInterrupt. No jump in here:
    # nothing is raised until the caller's next check point.
    _ctl.write(b"isr\n")
    _ack.read(1)


def halt():
    # The supervisor cuts us off; until then, do nothing at all.
    import time
    while True:
        time.sleep(1)


def pin_levels():
    _pins.seek(0)
    levels = {}
    for line in _pins.read().decode().split("\n"):
        if "=" in line:
            k, v = line.split("=", 1)
            levels[int(k)] = int(v)
    return levels


def link_up():
    if _link is None:
        return True
    _link.seek(0)
    return _link.read().strip() in (b"up", b"unknown")


EPOCH_1970_TO_2000 = 946684800


def seconds_since_2000(year, month, mday, hour, minute, second):
    # timeutils_seconds_since_epoch (shared/timeutils/timeutils.c): days from
    # the civil date, with month and day out of range carried over as there.
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + mday - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 730425  # 730425: days from 0000-03-01 to 2000-01-01
    return days * 86400 + hour * 3600 + minute * 60 + second


def set_clock(secs2000):
    """machine.RTC: the clock reads secs2000 (a float) now; the supervisor keeps
    it across every reset but a power-on, as ESP-IDF's RTC timer does."""
    origin = _host_time.time() - secs2000
    rtc0[0] = origin
    tell_supervisor("rtc0 %r" % origin)
