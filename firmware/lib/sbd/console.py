# The serial console. Open (REPL) only while the device is unprovisioned or
# explicitly unlocked; otherwise Ctrl-C is an ordinary byte, the firmware
# never returns to the REPL, and the only input it acts on is a signed
# command line. Provisions: ETSI EN 303 645 5.6-4A (debug interface
# access-controlled), 5.6-2; OWASP ISVS 3.1.3; NIST IR 8259A 4.
import select
import sys
import time
import micropython

CTRL_C = 3
# The console UART's receive buffer holds 259 bytes (ports/esp32/mphalport.c) and
# drops what comes while it is full; a signed command line is longer. So input
# comes first: every pass drains all the UART holds before any network work, and
# after a byte the console listens on for LISTEN_MS (a line in progress, or the
# next line of a conversation) before network work that may block for seconds.
# At most TICK_MAX_MS without network work (and the watchdog it feeds), whatever
# arrives. A sender must not send more than the buffer holds while the device is
# busy: the harness sends a short line and waits for its answer first.
LISTEN_MS = 300
TICK_MAX_MS = 1000


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
    heard = last_tick = time.ticks_add(time.ticks_ms(), -LISTEN_MS)
    while True:
        now = time.ticks_ms()
        listening = time.ticks_diff(now, heard) < LISTEN_MS
        if poll.poll(0 if busy else (20 if listening else period_ms)):
            while poll.poll(0):  # all the UART holds, before anything else
                b = sys.stdin.buffer.read(1)
                if b == b"\r" or b == b"\n":
                    done = bytes(line) + (b"..." if overflow else b"") if line else None
                    line = bytearray()
                    overflow = False
                    if done:
                        on_line(done)
                        if tick is not None and time.ticks_diff(time.ticks_ms(), last_tick) >= TICK_MAX_MS:
                            break  # a stream of lines may not starve tick() (and the watchdog it feeds)
                elif len(line) < max_line:
                    line.extend(b)
                else:
                    overflow = True
            heard = now = time.ticks_ms()
            listening = True
        if tick is not None and (not listening or time.ticks_diff(now, last_tick) >= TICK_MAX_MS):
            busy = tick()
            last_tick = time.ticks_ms()
