# main.py: the application, after boot.py. The same first lines as boot.py,
# for the same reason: MicroPython re-enables Ctrl-C for this file too.
try:
    import micropython
    micropython.kbd_intr(-1)
except BaseException:
    import micropython
    micropython.kbd_intr(-1)
try:
    from sbd import app
    app.main()
except BaseException:
    import machine
    machine.reset()
