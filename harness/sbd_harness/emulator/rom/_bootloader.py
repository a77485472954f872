# The ESP-IDF second-stage bootloader of the emulated ESP32 (bootloader_support/src/
# bootloader_utility.c: bootloader_utility_get_selected_boot_partition and
# bootloader_utility_load_boot_image), with app rollback and anti-rollback on, on
# the formats of _idfboot. Runs once per cold boot, before MicroPython starts; the
# ROM then drops it from memory (on the chip the bootloader's RAM is the app's).
# Runs under CPython too (the harness's unit tests).
from _idfboot import (read_otadata, write_entry, entry_valid, select_entry, seq_crc, read_app_desc,
                      verify_image, ImageError, NEW, PENDING_VERIFY, VALID, ABORTED)


def _blank(e):
    # initial contents: never written (all 0xFF) or a CRC that does not match
    return e[0] == 0xFFFFFFFF or e[3] != seq_crc(e[0])


def _sec_ok(flash, slot, efuse):
    desc = read_app_desc(flash, slot[2])
    return desc is not None and desc["secure_version"] >= efuse.secure_version()


def _burn(flash, slot, efuse, log):
    desc = read_app_desc(flash, slot[2])
    if desc is not None and desc["secure_version"] > efuse.secure_version():
        efuse.burn_secure_version(desc["secure_version"])
        log("I", "efuse", "Anti-rollback is set. eFuse field is updated(%d)." % desc["secure_version"])


def boot(flash, layout, efuse, log):
    """bootloader_utility_get_selected_boot_partition, then load_boot_image, with
    rollback and anti-rollback on. Returns (slot index, app descriptor), or None when
    no partition holds a bootable app (the chip then resets and tries again)."""
    od = layout.otadata[2]
    count = len(layout.slots)
    entries = read_otadata(flash, od)
    for i in range(2):
        if entries[i][2] == PENDING_VERIFY:  # a trial that was not confirmed: rolled back
            entries[i][2] = ABORTED
            write_entry(flash, od, i, entries[i])
            log("W", "boot", "otadata[%d]: app on trial not marked valid, now ABORTED" % i)
    log("I", "boot", "Enabled a check secure version of app for anti rollback")
    log("I", "boot", "Secure version (from eFuse) = %d" % efuse.secure_version())
    start, initial = -1, False
    if _blank(entries[0]) and _blank(entries[1]):
        log("I", "boot", "otadata[0..1] in initial state")
        initial = True
    else:
        valid = []
        for e in entries:
            ok = entry_valid(e) and _sec_ok(flash, layout.slots[(e[0] - 1) % count], efuse)
            valid.append(ok)
        act = select_entry(entries, valid)
        if act == -1:
            log("E", "boot", "ota data partition invalid and no factory, will try all partitions")
        else:
            start = (entries[act][0] - 1) % count
            if entries[act][2] == NEW:
                entries[act][2] = PENDING_VERIFY
                write_entry(flash, od, act, entries[act])
            if entries[act][2] == VALID:
                _burn(flash, layout.slots[start], efuse, log)
    order = list(range(start, -1, -1)) + list(range(start + 1, count))
    for index in order:
        if index < 0:
            continue  # no factory partition
        slot = layout.slots[index]
        try:
            if not _sec_ok(flash, slot, efuse):
                raise ImageError("secure version is lower than in eFuse")
            verify_image(flash, slot[2], slot[3])
        except ImageError as exc:
            log("E", "boot", "OTA app partition slot %d is not bootable: %s" % (index, exc))
            continue
        if initial:  # set_actual_ota_seq
            write_entry(flash, od, 0, [index + 1, b"\xff" * 20, VALID, seq_crc(index + 1)])
            log("I", "boot", "Set actual ota_seq=%d in otadata[0]" % (index + 1))
            _burn(flash, slot, efuse, log)
        log("I", "boot", "Loaded app from partition at offset 0x%x" % slot[2])
        return index, read_app_desc(flash, slot[2])
    log("E", "boot", "No bootable app partitions in the partition table")
    return None


def show_app_info(desc, log):
    """What esp_app_desc.c's init_show_app_info prints as the app starts (with
    CONFIG_BOOTLOADER_APP_SECURE_VERSION and CONFIG_APP_COMPILE_TIME_DATE)."""
    log("I", "app_init", "Application information:")
    log("I", "app_init", "Project name:     %s" % desc["project_name"])
    log("I", "app_init", "App version:      %s" % desc["version"])
    log("I", "app_init", "Secure version:   %d" % desc["secure_version"])
    log("I", "app_init", "Compile time:     %s %s" % (desc["date"], desc["time"]))
    log("I", "app_init", "ELF file SHA256:  %s..." % desc["app_elf_sha256"][:16])
    log("I", "app_init", "ESP-IDF:          %s" % desc["idf_ver"])
