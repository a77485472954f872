# The ESP32 port's REPL (shared/runtime/pyexec.c), rebuilt for the emulated
# board so that mpremote, pyserial scripts and people see the same protocol:
# friendly REPL, paste mode (Ctrl-E), raw REPL (Ctrl-A) and raw-paste mode.
import sys
import termios
import _board

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
_ISIG = 0o1
_VINTR, _VQUIT = 0, 1

_in = sys.stdin.buffer
_out = sys.stdout.buffer
kbd_char = [CTRL_C]   # what micropython.kbd_intr() last set


def write(s):
    # The tty cooks "\n" into "\r\n", as mp_hal_stdout_tx_strn_cooked does.
    _out.write(s if isinstance(s, bytes) else s.encode())


def read_byte():
    b = _in.read(1)
    if not b:
        raise SystemExit(0)  # the supervisor went away: power off
    return b[0]


# The CPU's tty settings, read once. The interrupt character raises SIGQUIT,
# which the CPU's launcher (sbd_harness/emulator/cpu.py) turns into a pending
# KeyboardInterrupt with mp_sched_keyboard_interrupt(), as the ESP32's UART
# handler does (ports/esp32/uart.c); SIGINT (VINTR) is never sent.
_attrs = termios.tcgetattr(0)
_attrs[6][_VINTR] = b"\x00"
_LFLAG = (_attrs[3] | _ISIG, _attrs[3] & ~_ISIG)   # indexed by "turned off"


def set_intr(c):
    # Like mp_hal_set_interrupt_char: a single store, with no check point of
    # the VM in it (no jump): code that turns Ctrl-C off cannot be interrupted
    # inside the call, only before or after it, as on the chip.
    _attrs[6][_VQUIT] = bytes((c & 0xFF,))
    _attrs[3] = _LFLAG[c < 0]
    termios.tcsetattr(0, termios.TCSANOW, _attrs)


def _check_point():
    # A jump: where the VM handles what is pending (py/vm.c, pending_exception_check).
    if _attrs:
        pass


def _take_pending():
    """mp_handle_pending(): the KeyboardInterrupt pending, if any, taken off."""
    try:
        _check_point()
    except KeyboardInterrupt as e:
        return e
    return None


def _run(code, g):
    """pyexec's parse_compile_execute from the execution on: Ctrl-C is enabled
    for the code, whatever kbd_intr() said before; when the code ends, Ctrl-C
    is turned off and a KeyboardInterrupt still pending is raised as the code's
    own; when the code raised, a pending one is cleared."""
    try:
        try:
            kbd_char[0] = CTRL_C
            # The UART handler's run that sees Ctrl-C enabled: what waits in its
            # FIFO may already be a Ctrl-C (the worst instant the chip allows).
            _board.uart_isr()
            set_intr(CTRL_C)
            exec(code, g)
        finally:
            set_intr(-1)
            late = _take_pending()
        return late
    except BaseException as e:  # noqa: everything the user's code raises
        return e


def execute(source, mode, g, print_eof=False, filename="<stdin>"):
    """Returns None, "error" after an uncaught exception, or "reset" when
    the code asked for a soft reset (machine.soft_reset())."""
    result = None
    try:
        # As pyexec: compiled first, with Ctrl-C off (a Ctrl-C is a byte then).
        if isinstance(source, bytes):
            source = source.decode()
        err = _run(compile(source, filename, mode), g)
    except KeyboardInterrupt as e:  # delivered by the tty just after it was turned off
        err = e
    except BaseException as e:  # noqa: a syntax error
        err = e
    if print_eof:
        write(b"\x04")
    if isinstance(err, SystemExit):
        if getattr(_board, "soft_reset_requested", False):
            result = "reset"
    elif err is not None:
        sys.print_exception(err)
        result = "error"
    if print_eof:
        write(b"\x04")
    return result


def banner():
    v = sys.implementation.version
    build = sys.version.split("MicroPython ")[1]
    write("MicroPython v%d.%d.%d%s %s; %s\n" % (
        v[0], v[1], v[2], "-" + v[3] if len(v) > 3 and v[3] else "", build, _board.conf["machine"]))
    write('Type "help()" for more information.\n')


def _needs_more(text):
    lines = text.split("\n")
    last = lines[-1]
    if len(lines) > 1:
        return last.strip() != ""
    s = last.rstrip()
    if s.endswith(":") or s.endswith("\\") or s.startswith("@"):
        return True
    depth = 0
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    if depth > 0:
        return True
    return s.count('"""') % 2 == 1 or s.count("'''") % 2 == 1


def _readline(prompt):
    """Returns (control_char, "") or (None, line)."""
    write(prompt)
    line = bytearray()
    esc = 0
    while True:
        c = read_byte()
        if esc:
            # swallow cursor keys and other escape sequences
            esc = 0 if (esc == 2 and (0x40 <= c <= 0x7E)) else 2
            continue
        if c == 0x1B:
            esc = 1
        elif c == CTRL_C:
            return CTRL_C, ""
        elif c in (CTRL_A, CTRL_B, CTRL_D, CTRL_E) and not line:
            return c, ""
        elif c == 0x0D or c == 0x0A:
            write("\n")
            return None, line.decode()
        elif c in (0x08, 0x7F):
            if line:
                line.pop()
                write(b"\x08 \x08")
        elif c >= 0x20 or c == 0x09:
            line.append(c)
            _out.write(bytes([c]))


def friendly(g):
    """Runs until the user leaves it: returns "raw" or "reset"."""
    banner()
    while True:
        try:
            c, line = _readline(">>> ")
            if c == CTRL_A:
                write("\n")
                return "raw"
            if c == CTRL_B:
                write("\n")
                banner()
                continue
            if c == CTRL_C:
                write("\n")
                continue
            if c == CTRL_D:
                write("\n")
                return "reset"
            if c == CTRL_E:
                source = _paste()
                if source is None:
                    continue
                if execute(source, "exec", g) == "reset":
                    return "reset"
                continue
            if not line.strip():
                continue
            source = line
            while _needs_more(source):
                c, more = _readline("... ")
                if c == CTRL_C:
                    write("\n")
                    source = None
                    break
                if c is not None:
                    more = ""
                source += "\n" + more
                if not more.strip():
                    break
            if source is None:
                continue
            if execute(source + "\n", "single", g) == "reset":
                return "reset"
        except KeyboardInterrupt:
            write("\n")


def _paste():
    write("\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\n=== ")
    buf = bytearray()
    while True:
        c = read_byte()
        if c == CTRL_C:
            write("\n")
            return None
        if c == CTRL_D:
            write("\n")
            return buf.decode()
        buf.append(c)
        if c == 0x0D:
            buf[-1] = 0x0A
            write("\n=== ")
        else:
            _out.write(bytes([c]))


def raw(g):
    """Runs until the user leaves it: returns "friendly" or "reset"."""
    write("raw REPL; CTRL-B to exit\n")
    while True:
        try:
            write(">")
            line = bytearray()
            while True:
                c = read_byte()
                if c == CTRL_A:
                    if len(line) == 2 and line[0] == CTRL_E:
                        if _raw_paste(line[1], g) == "reset":
                            return "reset"
                        line = None
                        break
                    write("raw REPL; CTRL-B to exit\n")
                    line = None
                    break
                if c == CTRL_B:
                    write("\n")
                    return "friendly"
                if c == CTRL_C:
                    line = bytearray()
                elif c == CTRL_D:
                    break
                else:
                    line.append(c)
            if line is None:
                continue
            write("OK")
            if not line:
                write("\n")
                return "reset"
            if execute(bytes(line), "exec", g, print_eof=True) == "reset":
                return "reset"
        except KeyboardInterrupt:
            pass


_WINDOW = 256  # MICROPY_REPL_STDIN_BUFFER_MAX; little-endian b"\x00\x01"


def _raw_paste(cmd, g):
    if cmd != ord("A"):
        write(b"R\x00")
        return None
    write(b"R\x01" + bytes([_WINDOW & 0xFF, _WINDOW >> 8]))
    src = bytearray()
    remain = _WINDOW
    interrupted = False
    while True:
        c = read_byte()
        if c == CTRL_C or c == CTRL_D:
            write(b"\x04")
            interrupted = c == CTRL_C
            break
        src.append(c)
        remain -= 1
        if remain == 0:
            write(b"\x01")
            remain = _WINDOW
    if interrupted:
        write(b"\x04")
        sys.print_exception(KeyboardInterrupt())
        write(b"\x04")
        return None
    return execute(bytes(src), "exec", g, print_eof=True)
