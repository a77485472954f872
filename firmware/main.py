# main.py: the application, after boot.py. The same first lines as boot.py,
# for the same reasons (the check point after the lock included): MicroPython
# re-enables Ctrl-C for this file too.
try:
    import micropython
    micropython.kbd_intr(-1)
    if micropython:  # the VM's first check point after the lock (boot.py's header says why)
        pass
except BaseException:
    import micropython
    micropython.kbd_intr(-1)
try:
    from sbd import app
    app.main()
except BaseException:
    import machine
    machine.reset()
