# Entry point of the emulated ESP32: what the chip's ROM, the ESP-IDF
# bootloader and MicroPython's ports/esp32/main.c do before the REPL.
# The supervisor starts a fresh process for every reset (a soft reset
# included, as the port reinitialises its heap), with the cause in
# SBD_BOARD_CONF; exit codes tell it what to do next.
import sys
import _board
import _repl

import time as _host_time
_T0 = _host_time.ticks_ms()
EXIT_SOFT_FRIENDLY = 3
EXIT_SOFT_RAW = 4

# What the ESP32 ROM prints for each machine.reset_cause() value.
_ROM_RESET_TEXT = {
    1: "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    2: "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    3: "rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
}


class _MicroPythonModule:
    # `micropython` with kbd_intr() routed to the emulated UART, so that
    # micropython.kbd_intr(-1) lets Ctrl-C through as a byte, as on the chip.
    def __init__(self, real):
        for name in dir(real):
            if not name.startswith("__") and name != "kbd_intr":
                setattr(self, name, getattr(real, name))

    @staticmethod
    def kbd_intr(chr):
        _repl.kbd_char[0] = chr
        _repl.set_intr(chr)


class _TimeModule:
    # `time` whose ticks count from the last hard reset or power-on, as on the
    # chip, where they come from esp_timer (ports/esp32/mphalport.c), which a
    # soft reset does not restart. The unix port counts from the host's boot;
    # the origin is taken at a cold boot and kept by the supervisor.
    # Wall-clock time as ports/esp32/modtime.c gives it: seconds since the
    # port's epoch, 2000-01-01 (MICROPY_EPOCH_IS_2000), from gettimeofday(),
    # which starts at 0 at power-on; time() is an int, localtime() is UTC (the
    # port has no time zones), and machine.RTC().datetime() sets it.
    def __init__(self, real):
        for name in dir(real):
            if not name.startswith("__") and name not in _TimeModule.__dict__:
                setattr(self, name, getattr(real, name))
        t0 = _board.conf.get("ticks0")
        if _board.conf["cold"] or not t0:
            t0 = real.ticks_ms(), real.ticks_us()
            _board.tell_supervisor("ticks0 %d %d" % t0)
        ms0, us0 = t0
        # the ticks period of MicroPython's time module: 2**30
        self.ticks_ms = lambda: (real.ticks_ms() - ms0) & 0x3FFFFFFF
        self.ticks_us = lambda: (real.ticks_us() - us0) & 0x3FFFFFFF
        self._real = real

    def _now(self):
        return self._real.time() - _board.rtc0[0]

    def time(self):
        return int(self._now() // 1)

    def time_ns(self):
        return self._real.time_ns() - int(_board.rtc0[0] * 1000000) * 1000

    def gmtime(self, secs=None):
        if secs is None:
            secs = self.time()
        return tuple(self._real.gmtime(int(secs) + _board.EPOCH_1970_TO_2000))[:8]

    localtime = gmtime

    def mktime(self, t):
        return _board.seconds_since_2000(t[0], t[1], t[2], t[3], t[4], t[5])


def _install_board_modules():
    import micropython
    import time
    import machine
    import esp32
    import network
    import ntptime  # frozen in the ESP32 build (micropython-lib); sys.path loses the ROM's folder below
    import bluetooth  # the radio's state only (rom/bluetooth.py)
    sys.modules["micropython"] = _MicroPythonModule(micropython)
    sys.modules["time"] = sys.modules["utime"] = _TimeModule(time)
    for name, mod in (("machine", machine), ("esp32", esp32), ("network", network), ("ntptime", ntptime),
                      ("bluetooth", bluetooth)):
        sys.modules[name] = mod


class _Module:
    # A copy of a built-in module without some of its names.
    def __init__(self, real, drop):
        for name in dir(real):
            if not name.startswith("__") and name not in drop:
                setattr(self, name, getattr(real, name))


_HOST_ESCAPES = ("system", "getenv", "putenv", "unsetenv", "VfsPosix")


def _seal_host():
    # The chip has no host: firmware and REPL users get os and vfs without the
    # unix port's ways out (shell commands, the environment, host folders).
    import os
    import vfs
    sys.modules["os"] = _Module(os, _HOST_ESCAPES)
    sys.modules["vfs"] = _Module(vfs, _HOST_ESCAPES)


def _mount_filesystem():
    import os
    import vfs
    import esp32
    bdev = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="vfs")[0]
    try:
        vfs.mount(vfs.VfsLfs2(bdev), "/")
    except OSError:
        # As ports/esp32/modules/inisetup.py: format a blank vfs partition.
        _repl.write("Performing initial setup\n")
        vfs.VfsLfs2.mkfs(bdev)
        vfs.mount(vfs.VfsLfs2(bdev), "/")
        with open("/boot.py", "w") as f:
            f.write("# boot.py: runs on every boot, before main.py.\n")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]


def _run_file(name, g):
    """pyexec_file_if_exists: True when absent or clean, False on error."""
    try:
        with open(name) as f:
            source = f.read()
    except OSError:
        return True
    g["__file__"] = name
    result = _repl.execute(source, "exec", g, filename=name)
    if result == "reset":
        return "reset"
    return result is None


class _Flash:
    read = staticmethod(_board.flash_read)
    write = staticmethod(_board.flash_write)
    erase = staticmethod(_board.flash_erase)


class _Efuse:
    secure_version = staticmethod(_board.efuse_secure_version)
    burn_secure_version = staticmethod(_board.efuse_burn_secure_version)


def _log(level, tag, text):
    import time
    _repl.write("%s (%d) %s: %s\n" % (level, time.ticks_ms() - _T0, tag, text))


def _second_stage_bootloader():
    # ESP-IDF's bootloader (_idfboot): picks the app slot from otadata, rolls back a
    # trial that was not confirmed, and checks the image and its secure version. The
    # image's code is not run: the CPU stays this interpreter. The slot booted is kept
    # by the supervisor until the next cold boot (a soft reset does not pass here).
    # What stays (the formats, the partition table, the app slots) is made first, what goes
    # (the bootloader's own code) last, and collected at once: no hole is left below what
    # stays, which would cut the largest block the firmware's heap can give (TLS wants 16 KiB).
    import gc
    import esp32
    layout = esp32._layout()
    import _bootloader
    booted = _bootloader.boot(_Flash, layout, _Efuse, _log)
    if booted is None:  # the chip resets and tries again, for ever: nothing else runs
        _board.halt()
    _board.conf["booted"] = booted[0]
    _board.tell_supervisor("booted %d" % booted[0])
    _bootloader.show_app_info(booted[1], _log)
    del sys.modules["_bootloader"]
    _bootloader = booted = None
    gc.collect()


def main():
    conf = _board.conf
    cause = conf["reset_cause"]
    if conf["cold"]:
        _repl.write("ets Jul 29 2019 12:21:46\n\n%s\n" % _ROM_RESET_TEXT.get(cause, _ROM_RESET_TEXT[1]))
        _repl.write("sbd emulated ESP32 (%s), flash %d KiB\n" % (conf["name"], conf["flash_size"] // 1024))
        _second_stage_bootloader()
    _repl.set_intr(-1)
    _install_board_modules()
    _mount_filesystem()
    import esp32
    esp32._layout()  # the app slots, known before any code of the board's runs (on the chip: ESP-IDF's RAM)
    _seal_host()
    import gc
    gc.collect()

    mode = conf["repl_mode"]
    g = {"__name__": "__main__"}
    ok = _run_file("boot.py", g)
    if ok == "reset":
        return _soft_reset(mode)
    if mode == "friendly" and ok:
        if _run_file("main.py", g) == "reset":
            return _soft_reset(mode)
    g.pop("__file__", None)
    while True:
        nxt = _repl.raw(g) if mode == "raw" else _repl.friendly(g)
        if nxt == "reset":
            return _soft_reset(mode)
        mode = nxt


def _soft_reset(mode):
    _repl.write("MPY: soft reboot\n")
    return EXIT_SOFT_RAW if mode == "raw" else EXIT_SOFT_FRIENDLY


sys.exit(main())
