# Factory reset: erases keys, certificates, settings (the whole NVS
# partition), user data files, installed updates and every other file outside
# the firmware's own (KEEP), then reboots into the unprovisioned state: what
# anyone put on the filesystem (a package at the root, a stray module) does
# not outlive it. Files inside /lib are the factory image and stay: a change
# there shows in the attestation, and only a re-flash undoes it (docs/identity.md).
# Triggered by holding BOOT (GPIO0) right after reset, or by a signed
# command. Provisions: ETSI EN 303 645 5.11-1 (simple erasure of user data);
# EU CRA Annex I (2)(m) (secure removal of all data and settings) and (2)(b)
# (reset to original state); NIST IR 8259A 2 (restore a secure default).
import json
import os
import time
import machine
from sbd import store

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


# What a factory reset keeps: the firmware (MicroPython runs boot.py and
# main.py, boot.py imports only from /lib) and the anti-rollback floor (an
# erased device still refuses old releases, sbd.slots).
KEEP = ("boot.py", "main.py", "lib", "rollback_floor")


def erase_and_reset():
    from sbd import slots  # only now: boot keeps no update code in memory
    for name in os.listdir("/"):
        if name not in KEEP:  # /data, /ota (back to the factory image) and anything planted
            slots.rmtree("/" + name)
    store.erase_partition()
    print(json.dumps({"sbd": "factory_reset", "done": True}))
    machine.reset()
