"""The emulated board's "hardware": one long-lived process per board.

It owns what survives a reset on a real board: the serial port (a PTY whose
path never changes), the flash image, the watchdog, the buttons. The CPU is a
MicroPython unix-port process it starts for every boot (emulator/cpu.py). User
bytes go from the outer PTY through the emulated UART (its FIFO and its 259-byte
receive buffer, which drops what does not fit) to the CPU's own PTY, where the
line discipline turns the interrupt character into SIGQUIT, which makes a
KeyboardInterrupt pending, as the UART driver does. The CPU's output comes
back, is appended to serial.log, and goes out on the outer PTY; when nobody
has the port open, output that does not fit is dropped, as on a UART.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import tty
from typing import Any
from pathlib import Path

from sbd_harness.emulator.micropython import cpu_command
from sbd_harness.emulator.board_state import BoardState

# The chip's ROM, bootloader and port start-up, as MicroPython modules (package data).
ROM_DIR = Path(__file__).resolve().parent / "rom"

PWRON_RESET, HARD_RESET, WDT_RESET, SOFT_RESET = 1, 2, 3, 5
EXIT_SOFT_FRIENDLY, EXIT_SOFT_RAW = 3, 4
SERIAL_LOG_MAX = 8 * 1024 * 1024
PENDING_INPUT_MAX = 64 * 1024
# The console UART's receive buffer on the chip: ports/esp32/mphalport.c has
# `stdin_ringbuf_array[260]`, and py/ringbuf.h keeps one slot free. The UART
# handler (ports/esp32/uart.c) drops what arrives while it is full.
RX_RING_BYTES = 259
RX_SETTLE_S = 0.002  # how long to wait for the tty to take in what was just written
# The longest a byte waits in the UART's hardware FIFO before the receive handler
# takes it: the FIFO-full threshold (ports/esp32/uart.c: SOC_UART_FIFO_LEN - 8, 120
# bytes) at 115200 baud. A Ctrl-C still there when pyexec enables the interrupt
# character becomes a KeyboardInterrupt at the handler's next run.
FIFO_HOLD_S = 120 * 10 / 115200
# How long the main loop sleeps with nothing to do: the CPU's exit, input, control requests and the
# watchdog's deadline all wake it; POLL_S while held input waits for room in the receive buffer (or
# without a pidfd to see the CPU exit), IDLE_S otherwise (a safety net, not a duty).
POLL_S = 0.2
IDLE_S = 5.0
CTRL_C = 3


def _cpu_tty_attrs(fd: int) -> None:
    """Raw input, cooked output ("\\n" -> "\\r\\n"), no signals until the ROM asks."""
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0                                              # iflag
    attrs[1] = termios.OPOST | termios.ONLCR                  # oflag
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL   # cflag
    attrs[3] = termios.NOFLSH                                 # lflag: no ECHO/ICANON/ISIG
    cc = attrs[6]
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    cc[termios.VINTR] = b"\x00"   # the ROM sets VQUIT: SIGQUIT makes Ctrl-C pending (emulator/cpu.py)
    cc[termios.VQUIT] = b"\x03"
    cc[termios.VSUSP] = b"\x00"
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _die_with_parent() -> None:
    """In a child: SIGKILL when the supervisor dies, however it dies (a board's services must
    not outlive its hardware). PR_SET_PDEATHSIG survives the exec of `ip netns exec`."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class Supervisor:
    def __init__(self, state: BoardState):
        self.state = state
        self.conf = state.load()
        self.sel = selectors.DefaultSelector()
        self.child: subprocess.Popen | None = None
        self.cpu_master = -1
        self.ctl_read = -1
        self.child_fd = -1  # a pidfd of the CPU: readable when it exits
        self.pending_input = b""
        self.cpu_slave = -1
        self.ack_write = -1
        # Input from a Ctrl-C on that the handler has not taken yet: (arrival, bytes), oldest first.
        self.fifo: list[tuple[float, bytes]] = []
        self.rx_dropped = 0   # bytes the emulated UART dropped with its buffer full, since start
        self.fifo_interrupts = 0  # Ctrl-Cs from the FIFO made pending as pyexec started code
        self.radios: dict[str, bool] = {}  # the radios the running CPU turned on or off (a lab receiver's view)
        self.reset_cause = PWRON_RESET
        self.cold = True
        self.repl_mode = "friendly"
        self.requested: tuple[int, bool] | None = None  # (cause, cold) for a reset we asked for
        self.wdt_timeout: float | None = None
        self.wdt_deadline: float | None = None
        self.wdt_armed = 0.0  # when WDT() armed it (time.monotonic())
        # The CPU's feeds: feed() writes the host's monotonic time in ms here (rom/_board.py) and the
        # supervisor reads it only when the timer would expire, so a board that feeds its watchdog on
        # every pass of its loop wakes nobody.
        self.wdt_feed_path = state.dir / "wdt_feed"
        self.wdt_feed_path.write_bytes(b"0".rjust(20, b"0") + b"\n")
        self.running = True
        self.boots = 0
        # What outlives a soft reset on the chip, as ESP-IDF state does: the
        # NVS handles left open, and the ticks' origin (esp_timer since boot).
        self.nvs_handles = 0
        self.ticks0: list[int] | None = None
        # The app slot the second-stage bootloader chose at the last cold boot
        # (rom/_idfboot.py): a soft reset restarts MicroPython in the same app.
        self.booted = 0
        # The eFuse field of the app's secure version: a file beside the flash, never erased.
        self.efuse_path = state.dir / "efuse"
        if not self.efuse_path.exists():
            self.efuse_path.write_bytes(b"\0\0\0\0")
        # ESP-IDF's mDNS responder and DHCP client port (emulator.idf_net): started at the
        # first GOT_IP after power-on, running until the next power-on, as on the chip.
        self.idf_net: subprocess.Popen | None = None
        # The RTC: the host time (Unix seconds) at which the board's clock read
        # 2000-01-01 00:00:00. ESP-IDF's RTC timer runs on across every reset
        # but a power-on one, so only a power-on sets it back to 2000.
        self.rtc0: float | None = None
        # The firmware's own JSON lines seen on the CPU's output (boot line, net events), with the
        # host time each was last seen: what a trainer's view reads without asking the board.
        self.line_tail = b""
        self.events: dict[str, Any] = {}

    # serial port seen by the user -------------------------------------------------
    def open_serial(self) -> None:
        self.user_master, slave = os.openpty()
        tty.setraw(slave)
        # Keeping a slave fd open means the master never sees a hang-up when
        # the user closes the port, so the path stays valid for the board's life.
        self.user_slave_keepalive = slave
        _nonblocking(self.user_master)
        path = os.ttyname(slave)
        os.chmod(path, 0o660)
        link = self.state.serial_link
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path)
        self.conf["serial"] = path
        self.sel.register(self.user_master, selectors.EVENT_READ, self.on_user_input)

    def open_control(self) -> None:
        path = self.state.control_socket
        if path.exists():
            path.unlink()
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(str(path))
        os.chmod(path, 0o600)
        self.control.listen(8)
        self.sel.register(self.control, selectors.EVENT_READ, self.on_control_connect)

    # the CPU ------------------------------------------------------------------------
    def boot(self) -> None:
        if self.rtc0 is None:  # power-on: the clock starts at the port's epoch, 2000-01-01
            self.rtc0 = time.time()
        master, slave = os.openpty()
        _cpu_tty_attrs(slave)
        ctl_r, ctl_w = os.pipe()
        ack_r, ack_w = os.pipe()
        conf = {
            "name": self.conf["name"],
            "unique_id": self.conf["unique_id"],
            "flash": str(self.state.flash_path),
            "table_offset": self.conf["partition_table_offset"],
            "flash_size": self.conf["flash_size"],
            "pins": str(self.state.pins_path),
            "link_state": self.conf["net"].get("link_state"),
            "ctl_fd": ctl_w,
            "ack_fd": ack_r,
            "reset_cause": self.reset_cause,
            "cold": self.cold,
            "repl_mode": self.repl_mode,
            "machine": self.conf["machine_name"],
            "net": self.conf["net"],
            "nvs_handles": self.nvs_handles,
            "ticks0": self.ticks0,
            "booted": self.booted,
            "efuse": str(self.efuse_path),
            "wdt_feed": str(self.wdt_feed_path),
            "rtc0": self.rtc0,
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MICROPYPATH": str(ROM_DIR),
            "SBD_BOARD_CONF": json.dumps(conf),
            "HOME": str(self.state.dir),
        }
        cmd = cpu_command(self.conf["heap_bytes"]) + [str(ROM_DIR / "_rom.py")]
        if self.conf["net"].get("netns"):
            cmd = ["ip", "netns", "exec", self.conf["net"]["netns"]] + cmd

        def claim_tty() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.child = subprocess.Popen(
            cmd, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(self.state.dir),
            start_new_session=True, preexec_fn=claim_tty, pass_fds=(ctl_w, ack_r),
        )
        # The supervisor keeps the CPU's side of the tty too: it reads the fill of
        # the receive buffer (TIOCINQ) and whether Ctrl-C is enabled from it.
        self.cpu_slave = slave
        os.close(ctl_w)
        os.close(ack_r)
        self.ack_write = ack_w
        _nonblocking(master)
        self.cpu_master = master
        self.ctl_read = ctl_r
        self.ctl_buf = b""
        self.sel.register(master, selectors.EVENT_READ, self.on_cpu_output)
        self.sel.register(ctl_r, selectors.EVENT_READ, self.on_cpu_control)
        # The CPU's exit wakes the loop (a pidfd, Linux 5.3): an idle board's supervisor then sleeps
        # until something happens. Without one, the loop looks every POLL_S.
        try:
            self.child_fd = os.pidfd_open(self.child.pid)
            self.sel.register(self.child_fd, selectors.EVENT_READ, lambda fd: None)
        except (AttributeError, OSError):
            self.child_fd = -1
        self.boots += 1
        self.radios = {}  # a new CPU starts with every radio off
        self.state.write_status({"cpu_pid": self.child.pid, "boots": self.boots,
                                 "reset_cause": self.reset_cause, "repl_mode": self.repl_mode})
        self.flush_pending_input()

    def cut_cpu(self) -> None:
        """Stops the CPU at once (SIGKILL: what a power cut or the EN pin does)."""
        if self.child and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def on_cpu_exit(self) -> None:
        assert self.child is not None
        code = self.child.wait()
        self.drain_cpu_output()
        for fd in (self.cpu_master, self.ctl_read):
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass
            os.close(fd)
        os.close(self.cpu_slave)
        os.close(self.ack_write)
        if self.child_fd >= 0:
            self.sel.unregister(self.child_fd)
            os.close(self.child_fd)
        self.cpu_master = self.ctl_read = self.cpu_slave = self.ack_write = self.child_fd = -1
        self.child = None
        if not self.running:
            return
        if self.requested is not None:
            self.reset_cause, self.cold = self.requested
            self.requested = None
            self.repl_mode = "friendly"
            self.pending_input, self.fifo = b"", []
        elif code in (EXIT_SOFT_FRIENDLY, EXIT_SOFT_RAW):
            self.cold = False
            self.repl_mode = "raw" if code == EXIT_SOFT_RAW else "friendly"
        elif code == -signal.SIGKILL:
            # killed from outside: a power cut; the board powers up again
            self.reset_cause, self.cold, self.repl_mode = PWRON_RESET, True, "friendly"
            self.pending_input, self.fifo = b"", []
            self.wdt_deadline = self.wdt_timeout = None
            time.sleep(0.05)
        else:
            # the interpreter crashed: the chip panics and reboots
            self.emit(f"\r\n[sbd emulator] CPU stopped (exit {code}); rebooting\r\n".encode())
            self.reset_cause, self.cold, self.repl_mode = HARD_RESET, True, "friendly"
            time.sleep(0.2)
        if self.cold:
            self.wdt_deadline = self.wdt_timeout = None
            self.nvs_handles, self.ticks0 = 0, None
            self.stop_idf_net()
            if self.reset_cause == PWRON_RESET:
                self.rtc0 = None
        self.boot()

    # data paths -----------------------------------------------------------------------
    def emit(self, data: bytes) -> None:
        self.state.append_serial_log(data, SERIAL_LOG_MAX)
        try:
            os.write(self.user_master, data)
        except BlockingIOError:
            pass  # nobody is reading: the UART's bytes are gone
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EAGAIN):
                raise

    def on_cpu_output(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.emit(data)
            self.note_events(data)
        else:
            self.sel.unregister(fd)

    def note_events(self, data: bytes) -> None:
        """Records the firmware's boot line and `{"sbd": "net", "event": ...}` lines, the last of each
        kind with the host time it was seen, in events.json; only complete lines, and only when one came."""
        lines = (self.line_tail + data).split(b"\n")
        self.line_tail = lines.pop()[-4096:]
        seen = False
        for line in lines:
            at = line.find(b"{")
            if at < 0 or b'"sbd"' not in line:
                continue
            try:
                obj = json.loads(line[at:])
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            kind = "boot" if obj.get("sbd") == "boot" else obj.get("event") if obj.get("sbd") == "net" else None
            if isinstance(kind, str):
                self.events[kind] = {"time": time.time(), "line": obj}
                self.events["latest"] = kind
                seen = True
        if seen:
            self.state.write_events(self.events)

    def drain_cpu_output(self) -> None:
        while True:
            try:
                data = os.read(self.cpu_master, 65536)
            except OSError:
                return
            if not data:
                return
            self.emit(data)
            self.note_events(data)

    def on_user_input(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        self.pending_input = (self.pending_input + data)[-PENDING_INPUT_MAX:]
        self.flush_pending_input()

    def rx_queued(self) -> int:
        """Bytes in the emulated UART's receive buffer: written, not yet read by the CPU."""
        return struct.unpack("i", fcntl.ioctl(self.cpu_slave, termios.TIOCINQ, b"\0\0\0\0"))[0]

    def interrupt_char(self) -> int | None:
        """The character the UART handler turns into a KeyboardInterrupt now (None: off)."""
        attrs = termios.tcgetattr(self.cpu_slave)
        if not attrs[3] & termios.ISIG:
            return None
        quit_char = attrs[6][termios.VQUIT]
        return quit_char[0] if isinstance(quit_char, bytes) else int(quit_char)

    def flush_pending_input(self) -> None:
        """Input reaches the UART. While Ctrl-C is off, input from a Ctrl-C on waits in
        the FIFO (release_fifo); the rest goes to the receive buffer (to_ring)."""
        if self.cpu_master < 0 or not self.pending_input:
            return
        data, self.pending_input = self.pending_input, b""
        try:
            intr = self.interrupt_char()
        except OSError:
            return
        if self.fifo or (intr is None and CTRL_C in data):
            # Input from a Ctrl-C on waits in the FIFO until the handler takes it (release_fifo).
            at = 0 if self.fifo else data.index(CTRL_C)
            self.fifo.append((time.monotonic(), data[at:]))
            data = data[:at]
        self.to_ring(data, intr)

    def release_aged(self) -> None:
        """The handler's runs that a stream at line rate brings: what has waited
        FIFO_HOLD_S leaves the FIFO as it came, in order."""
        now = time.monotonic()
        while self.fifo and now - self.fifo[0][0] >= FIFO_HOLD_S:
            _, data = self.fifo.pop(0)
            try:
                intr = self.interrupt_char()
            except OSError:
                return
            self.to_ring(data, intr)

    def release_fifo(self, as_interrupt: bool = False) -> None:
        """The receive handler's run over what waits in the FIFO. With `as_interrupt`
        (pyexec is about to enable Ctrl-C: the handler's next run sees it enabled),
        the Ctrl-Cs there become one KeyboardInterrupt, scheduled at once."""
        data, self.fifo = b"".join(chunk for _, chunk in self.fifo), []
        if as_interrupt and CTRL_C in data and self.child is not None:
            data = data.replace(bytes([CTRL_C]), b"")
            self.fifo_interrupts += 1
            try:
                # SIGTSTP: the CPU's launcher runs mp_sched_keyboard_interrupt() for it.
                os.killpg(self.child.pid, signal.SIGTSTP)
            except ProcessLookupError:
                pass
        try:
            intr = self.interrupt_char()
        except OSError:
            return
        self.to_ring(data, intr)

    def to_ring(self, data: bytes, intr: int | None) -> None:
        """The UART's receive handler: the interrupt character (while enabled) is taken
        out, the rest goes to the 259-byte buffer while it has room and is dropped when
        it is full, as ports/esp32/uart.c does with stdin_ringbuf."""
        if not data:
            return
        try:
            queued = self.rx_queued()
        except OSError:
            return
        room = max(0, RX_RING_BYTES - queued)
        taken = bytearray()
        stored = 0
        for b in data:
            if b == intr:
                taken.append(b)
            elif stored < room:
                taken.append(b)
                stored += 1
            else:
                self.rx_dropped += 1
        try:
            os.write(self.cpu_master, taken)  # at most 259 data bytes: always fits the tty
        except OSError:
            return
        # The tty takes written bytes in asynchronously; wait until the buffer shows them
        # (or the CPU has read some), so that the next input sees the true fill.
        deadline = time.monotonic() + RX_SETTLE_S
        while stored and time.monotonic() < deadline:
            try:
                if self.rx_queued() >= queued + stored:
                    break
            except OSError:
                break
            time.sleep(0.0001)

    def on_cpu_control(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(fd)
            return
        self.ctl_buf += data
        while b"\n" in self.ctl_buf:
            line, self.ctl_buf = self.ctl_buf.split(b"\n", 1)
            self.cpu_request(line.decode().split())

    def cpu_request(self, words: list[str]) -> None:
        if not words:
            return
        if words[0] == "reset":
            # machine.reset() is esp_restart(): the port reports HARD_RESET
            self.reset(HARD_RESET, cold=True)
        elif words[0] == "wdt":
            self.wdt_timeout = int(words[1]) / 1000
            self.wdt_armed = time.monotonic()
            self.wdt_deadline = self.wdt_armed + self.wdt_timeout
        elif words[0] == "isr":
            # pyexec is enabling Ctrl-C for the code it runs (rom/_repl.py): run the
            # UART handler now, then let the CPU go on.
            self.release_fifo(as_interrupt=True)
            try:
                os.write(self.ack_write, b"k")
            except OSError:
                pass
        elif words[0] == "nvs_open":
            self.nvs_handles += 1
        elif words[0] == "booted":
            self.booted = int(words[1])
        elif words[0] == "ticks0":
            self.ticks0 = [int(words[1]), int(words[2])]
        elif words[0] == "got_ip":
            self.start_idf_net(" ".join(words[1:]))
        elif words[0] == "rtc0":
            self.rtc0 = float(words[1])
        elif words[0] == "radio" and len(words) == 3:
            self.radios[words[1]] = words[2] == "1"

    def last_feed(self) -> float:
        """When the CPU last fed the watchdog, in time.monotonic() seconds (0 for never)."""
        try:
            return int(self.wdt_feed_path.read_bytes().split()[0]) / 1000
        except (OSError, ValueError, IndexError):
            return 0.0

    def wdt_expired(self) -> bool:
        """At the timer's deadline: moves it on past the last feed, or says it has expired (a feed
        read again once before a reset: it may have been written while it was read)."""
        for _ in range(2):
            deadline = max(self.wdt_armed, self.last_feed()) + (self.wdt_timeout or 0)
            if deadline > time.monotonic():
                self.wdt_deadline = deadline
                return False
        return True

    def start_idf_net(self, hostname: str) -> None:
        """mdns_init() at GOT_IP: once per power-on, with the hostname of that moment. Only in
        the board's own namespace: on shared loopback UDP 5353 and 68 are the host's."""
        net = self.conf["net"]
        if self.idf_net is not None or not net.get("netns"):
            return
        self.idf_net = subprocess.Popen(
            ["ip", "netns", "exec", net["netns"], sys.executable, "-m", "sbd_harness.emulator.idf_net",
             net["address"], hostname or "mpy-esp32"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent)

    def stop_idf_net(self) -> None:
        if self.idf_net is not None:
            try:
                os.killpg(self.idf_net.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.idf_net.wait()
            self.idf_net = None

    def reset(self, cause: int, cold: bool = True) -> None:
        self.requested = (cause, cold)
        self.cut_cpu()

    # control socket (the harness's hands on the board) -----------------------------
    def on_control_connect(self, sock: socket.socket) -> None:
        conn, _ = sock.accept()
        conn.settimeout(5)
        try:
            raw = b""
            while not raw.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                raw += chunk
            try:
                reply = self.handle_command(json.loads(raw or b"{}"))
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        finally:
            conn.close()

    def handle_command(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "cpu_pid": self.child.pid if self.child else None,
                    "boots": self.boots, "reset_cause": self.reset_cause, "serial": self.conf["serial"],
                    "wdt_ms": round(self.wdt_timeout * 1000) if self.wdt_timeout else None,
                    "rx_dropped": self.rx_dropped, "fifo_interrupts": self.fifo_interrupts,
                    "radios": self.radios}
        if cmd == "reset":
            kind = req.get("kind", "hard")
            if kind == "hard":
                # The EN pin: on the ESP32 a chip power-on reset (rst:0x1)
                self.reset(PWRON_RESET)
            elif kind == "power-cut":
                self.reset(PWRON_RESET)
                self.wdt_timeout = self.wdt_deadline = None
            else:
                return {"ok": False, "error": f"unknown reset kind {kind!r}"}
            return {"ok": True, "boots_before": self.boots}
        if cmd == "pin":
            pin, level = int(req["pin"]), int(req["level"])
            self.state.set_pin(pin, level)
            return {"ok": True}
        if cmd == "stop":
            self.running = False
            self.cut_cpu()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # main loop --------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_soon())
        self.open_serial()
        self.open_control()
        self.state.save(self.conf)
        self.boot()
        self.state.mark_ready()
        while self.running or self.child is not None:
            timeout = POLL_S if self.pending_input or self.child_fd < 0 else IDLE_S
            if self.fifo:
                timeout = max(0.0, self.fifo[0][0] + FIFO_HOLD_S - time.monotonic())
            if self.wdt_deadline is not None:
                timeout = max(0.0, min(timeout, self.wdt_deadline - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                key.data(key.fileobj)
            if self.wdt_deadline is not None and time.monotonic() >= self.wdt_deadline and self.wdt_expired():
                self.emit(b"\r\nE (wdt) Task watchdog got triggered.\r\n")
                self.wdt_deadline = None
                self.reset(WDT_RESET)
            if self.pending_input:
                self.flush_pending_input()
            if self.fifo:
                self.release_aged()
            if self.child is not None and self.child.poll() is not None:
                self.on_cpu_exit()
        self.stop_idf_net()
        self.state.mark_stopped()

    def stop_soon(self) -> None:
        self.running = False
        self.cut_cpu()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    state = BoardState(Path(argv[0]))
    try:
        Supervisor(state).run()
    except Exception as exc:  # leave a note where the harness looks for it
        state.write_failure(repr(exc))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
