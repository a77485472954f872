# Factory reset: erases keys, certificates, settings (the whole NVS
# partition) and user data files, then reboots into the unprovisioned state.
# Triggered by holding BOOT (GPIO0) right after reset, or by a signed
# command. Provisions: ETSI EN 303 645 5.11-1 (simple erasure of user data);
# EU CRA Annex I (2)(m) (secure removal of all data and settings) and (2)(b)
# (reset to original state); NIST IR 8259A 2 (restore a secure default).
import json
import os
import time
import machine
from sbd import store

USER_DATA = "/data"
BOOT_BUTTON = 0
HOLD_MS = 3000


def button_held(hold_ms=HOLD_MS):
    """True when BOOT is held down for hold_ms from now."""
    pin = machine.Pin(BOOT_BUTTON, machine.Pin.IN, machine.Pin.PULL_UP)
    if pin.value():
        return False
    print(json.dumps({"sbd": "factory_reset", "hold_ms": hold_ms}))
    start = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), start) < hold_ms:
        if pin.value():
            return False
        time.sleep_ms(50)
    return True


def _remove_tree(path):
    try:
        mode = os.stat(path)[0]
    except OSError:
        return
    if mode & 0x4000:
        for name in os.listdir(path):
            _remove_tree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


def erase_and_reset():
    _remove_tree(USER_DATA)
    _remove_tree("/ota")  # installed updates: back to the factory image
    # /rollback_floor stays: an erased device still refuses old releases (sbd.slots)
    store.erase_partition()
    print(json.dumps({"sbd": "factory_reset", "done": True}))
    machine.reset()
