# Emulated ESP32: what the "silicon" provides to the board-support modules.
# Runs under the MicroPython unix port. Everything host-side it needs (the
# flash image, the control pipe to the supervisor, pin and link state) is
# opened here, before the device filesystem is mounted over "/".
import os
import json

conf = json.loads(os.getenv("SBD_BOARD_CONF"))
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
