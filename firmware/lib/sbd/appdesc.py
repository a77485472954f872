# The app image the ESP32 runs, as its app descriptor (esp_app_desc_t, at 0x20
# of the app partition) says: project, version and secure version. Loaded for a
# moment (the birth message, an image update) and dropped again: the firmware's
# heap is tight, and this is read once per connection.
# Provisions: ETSI EN 303 645 5.3-16 (what the device runs is recognisable);
# NIST IR 8259A 1.
DESC_AT = 0x20  # after the image header (24 bytes) and the first segment header (8)


def descriptor(part):
    """project, version and secure_version of the app image in `part` (an esp32.Partition), or None."""
    d = bytearray(80)
    part.readblocks(0, d, DESC_AT)
    if d[0:4] != b"\x32\x54\xcd\xab":  # 0xABCD5432, little-endian
        return None
    return {"project": _cstr(d[48:80]), "version": _cstr(d[16:48]),
            "secure_version": int.from_bytes(d[4:8], "little")}


def _cstr(b):
    return bytes(b).split(b"\0")[0].decode()


def running():
    """The app image the bootloader booted: its slot and descriptor (None without app slots)."""
    try:
        import esp32
        run = esp32.Partition(esp32.Partition.RUNNING)
        found = descriptor(run) or {}
        found["slot"] = run.info()[4]
        return found
    except OSError:
        return None
