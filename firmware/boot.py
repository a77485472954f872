# boot.py: the first code of ours at every boot.
# Ctrl-C is closed before anything else: MicroPython enables it at the start
# of every file, and a Ctrl-C that lands before the lock would otherwise end
# this file and drop a locked device into the REPL. Nothing escapes this file.
# On the ESP32 a Ctrl-C is not raised where it lands: the UART handler marks it
# pending and the VM raises it at its next check point (a jump). The `if` after
# kbd_intr(-1) is that check point, inside the try, so a Ctrl-C from before the
# lock ends up in the except; without it the first jump is the one that leaves
# the try, and the Ctrl-C escapes the file. After the lock, Ctrl-C is a byte.
# Provisions: ETSI EN 303 645 5.6-4A; OWASP ISVS 3.1.3.
try:
    import micropython
    micropython.kbd_intr(-1)
    if micropython:  # the VM's first check point after the lock (boot.py's header says why)
        pass
except BaseException:
    import micropython
    micropython.kbd_intr(-1)
# Code is imported only from where the firmware verifies it: the factory image
# in /lib and the update slot sbd.slots puts before it. MicroPython starts with
# sys.path ["", ".frozen", "/lib"] (py/runtime.c, ports/esp32/main.c); "" is the
# filesystem's root, where anyone with a REPL can write a /sbd package that
# shadows /lib/sbd or a json.py that shadows the built-in. ".frozen" is the
# MicroPython image itself.
try:
    import sys
    sys.path[:] = [".frozen", "/lib"]
except BaseException:
    import sys
    sys.path[:] = [".frozen", "/lib"]
try:
    # The factory image verifies the update slot that will run (sbd.slots).
    from sbd import slots
    slots.select()
except BaseException as e:
    print('{"sbd": "slot_error", "error": %r}' % type(e).__name__)
slots = None  # nothing may hold the factory's modules once a slot runs: their memory is freed
try:
    from sbd import boot
    boot.run()
except BaseException as e:
    print('{"sbd": "boot_error", "error": %r}' % type(e).__name__)
