# The serial console. Open (REPL) only while the device is unprovisioned or
# explicitly unlocked; otherwise Ctrl-C is an ordinary byte, the firmware
# never returns to the REPL, and the only input it acts on is a signed
# command line. Provisions: ETSI EN 303 645 5.6-4A (debug interface
# access-controlled), 5.6-2; OWASP ISVS 3.1.3; NIST IR 8259A 4.
import select
import sys
import micropython

CTRL_C = 3


def close():
    micropython.kbd_intr(-1)


def open():
    micropython.kbd_intr(CTRL_C)


def serve(on_line, max_line, tick=None, period_ms=1000):
    """Reads lines from the UART forever; an over-long line is cut short and
    handed on as such (it then fails validation). tick() runs between reads;
    while it returns True (more network work is waiting) the UART is only
    polled, not waited on."""
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    line = bytearray()
    overflow = False
    busy = False
    while True:
        if poll.poll(0 if busy else period_ms):
            b = sys.stdin.buffer.read(1)
            if b == b"\r" or b == b"\n":
                if line:
                    on_line(bytes(line) + (b"..." if overflow else b""))
                line = bytearray()
                overflow = False
            elif len(line) < max_line:
                line.extend(b)
            else:
                overflow = True
        if tick is not None:
            busy = tick()
