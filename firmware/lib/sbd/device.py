# The device's identity as the silicon gives it: a unique ID per chip; and the
# app image it runs, as its app descriptor says.
# Provisions: NIST IR 8259A 1 (unique logical and physical identifier);
# ETSI EN 303 645 5.4-2 (per-device identity), 5.3-16 (what it runs is
# recognisable). Never a constant in the image.
import binascii
import machine


def device_id(uid=None):
    """Lower-case hex of machine.unique_id() (the ESP32's base MAC)."""
    if uid is None:
        uid = machine.unique_id()
    if not uid or len(uid) < 6:
        raise ValueError("unique_id too short")
    return binascii.hexlify(uid).decode()


RESET_CAUSES = {
    1: "power_on",
    2: "hard",
    3: "watchdog",
    4: "deep_sleep",
    5: "soft",
}


def reset_cause():
    return RESET_CAUSES.get(machine.reset_cause(), "unknown")


DESC_AT = 0x20  # esp_app_desc_t: after the image header (24) and the first segment header (8)


def app_descriptor(part):
    """project, version and secure_version of the app image in `part` (an esp32.Partition), or None."""
    d = bytearray(80)
    part.readblocks(0, d, DESC_AT)
    if d[0:4] != b"\x32\x54\xcd\xab":  # 0xABCD5432, little-endian
        return None
    return {"project": _cstr(d[48:80]), "version": _cstr(d[16:48]),
            "secure_version": int.from_bytes(d[4:8], "little")}


def _cstr(b):
    return bytes(b).split(b"\0")[0].decode()


def app():
    """The app image the bootloader booted: its slot and descriptor (None without app slots)."""
    try:
        import esp32
        run = esp32.Partition(esp32.Partition.RUNNING)
        found = app_descriptor(run) or {}
        found["slot"] = run.info()[4]
        return found
    except (ImportError, OSError, AttributeError):
        return None
