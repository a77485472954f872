"""A board on a serial port: a real ESP32 on USB, an rfc2217:// URL, or a PTY.

Talks MicroPython's raw REPL through mpremote's transport, opens the port
with pyserial, and writes MicroPython itself with esptool. The emulated
board is driven through this same code, over its PTY.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

import serial
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from sbd_harness.device.bootline import last_boot_line
from sbd_harness.boards.base import Board, BoardError, BoardRaised, BootCapture, Progress

WRITE_CHUNK = 1024  # bytes per raw-REPL call when copying files
# The ESP32's console UART keeps 259 bytes (ports/esp32/mphalport.c, stdin_ringbuf)
# and drops what arrives while they are unread; a signed command line is longer.
RX_BUFFER_BYTES = 259
PACED_CHUNK = 64                          # bytes per write, well within the buffer
PACED_GAP_S = PACED_CHUNK * 10 / 115200   # a chunk's time on the wire at 115200 baud
# A line the firmware answers (an error: no valid command) and that changes nothing:
# its answer shows the firmware at its console, reading, before the real line goes out.
PING = b"SBD-CMD ping"
PING_ERROR = "expected payload and signature"  # what the firmware answers PING (sbd/commands.py)
PROBE_AFTER_S = 5.0   # silence after a line before a PING asks whether it arrived
RESENDS = 2           # times a line the device lost is sent again


def _is_ping_answer(reply: dict) -> bool:
    return reply.get("ok") is False and reply.get("error") == PING_ERROR

_SHA256_CODE = """
import hashlib, json
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256(); b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b if n == 512 else b[:n])
    f.close()
    return ''.join('%02x' % x for x in h.digest())
print(json.dumps({p: _h(p) for p in PATHS}))
"""

_RMTREE_CODE = """
import os
def _rm(p):
    try:
        st = os.stat(p)
    except OSError:
        return
    if st[0] & 0x4000:
        for n in os.listdir(p):
            _rm(p.rstrip('/') + '/' + n)
        if p != '/':
            os.rmdir(p)
    else:
        os.remove(p)
_rm(PATH)
"""


def _boot_finished(data: bytes, need_reset: bool = False) -> bool:
    # The ESP32 ROM prints "rst:0x.." on every reset; what came before it is the old boot
    # (after a hard reset, a prompt before it is the old firmware's, not the new boot's).
    if need_reset and b"rst:0x" not in data:
        return False
    tail = data[data.rfind(b"rst:0x"):] if b"rst:0x" in data else data
    return last_boot_line(tail.decode(errors="replace")) is not None or b"\n>>> " in tail


def read_boot(port: serial.Serial, timeout: float, settle: float = 0.3, need_reset: bool = False,
              until: str | None = None) -> str:
    """What the port shows of a boot that is under way: until its boot line (plus
    `settle` seconds), or the REPL prompt of a boot without one, or `timeout`. With
    `until`, the boot goes on until that text follows the boot line or prompt (then
    `settle` seconds more), or until `timeout`."""
    data = bytearray()
    start = time.monotonic()
    done_at = None
    marker = until.encode() if until else None
    while time.monotonic() - start < timeout:
        data += port.read(port.in_waiting or 1)  # never wait for a full buffer
        if done_at is None and _boot_finished(data, need_reset):
            if marker is None or marker in data[data.rfind(b"rst:0x") + 1 if b"rst:0x" in data else 0:]:
                done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at >= settle:
            break
    return data.decode(errors="replace")


# How the console reaches the host, as a board description's "console" says:
# - uart-bridge: a USB-UART bridge (CP210x, CH340) on UART0 with the auto-reset
#   circuit; RTS drives EN, DTR drives IO0, and the ROM prints its rst: line here.
# - usb-serial-jtag: the chip's USB Serial/JTAG peripheral (C3, S3, C6): RTS
#   resets the chip inside the peripheral, the port re-enumerates at each reset.
# - usb-otg: MicroPython's own USB CDC (TinyUSB, the S2/S3 native USB): RTS and
#   DTR reach no pin; the port exists only while MicroPython runs, and the ROM's
#   output goes to UART0. esptool's usb-reset makes MicroPython enter the ROM
#   loader (MICROPY_HW_USB_CDC_DTR_RTS_BOOTLOADER, shared/tinyusb/mp_usbd_cdc.c),
#   and its hard reset then restarts the app (a watchdog reset on the S3).
CONSOLES = ("uart-bridge", "usb-serial-jtag", "usb-otg")
REENUMERATE_S = 1.0  # how long a native USB port may take to go away after a reset


def board_description(name: str) -> dict:
    """boards/<name>/board.json, or BoardError naming the known ones."""
    from sbd_harness.paths import boards_dir
    path = boards_dir() / name / "board.json"
    if not path.is_file():
        known = sorted(p.parent.name for p in boards_dir().glob("*/board.json"))
        raise BoardError(f"no board description {path}; known: {', '.join(known)}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise BoardError(f"{path} is not valid JSON: {exc}") from None


class SerialBoard(Board):
    kind = "serial"

    def __init__(self, port: str, name: str | None = None, baudrate: int = 115200, chip: str = "esp32",
                 repl_timeout: float = 10, console: str = "uart-bridge",
                 esptool_reset: tuple[str, str] | None = None):
        if console not in CONSOLES:
            raise BoardError(f"unknown console {console!r}: one of {', '.join(CONSOLES)}")
        self._port = port
        self.name = name or port
        self.baudrate = baudrate
        self.chip = chip
        self.repl_timeout = repl_timeout
        self.console = console
        self.esptool_reset = esptool_reset  # esptool's --before, --after for this port

    @classmethod
    def from_description(cls, port: str, board: str = "esp32", baudrate: int | None = None,
                         **kw: object) -> "SerialBoard":
        """A board as boards/<board>/board.json describes it: its chip, its
        console (how it resets, what its port shows of a boot), its baud rate."""
        spec = board_description(board)
        before, after = spec.get("esptool_before"), spec.get("esptool_after")
        return cls(port, baudrate=baudrate or int(spec.get("baudrate", 115200)), chip=spec.get("chip", board),
                   console=spec.get("console", "uart-bridge"),
                   esptool_reset=(before, after) if before and after else None, **kw)  # type: ignore[arg-type]

    @property
    def native_usb(self) -> bool:
        """The port is the chip's own USB: it goes away at each reset and shows no ROM rst: line."""
        return self.console != "uart-bridge"

    @property
    def port(self) -> str:
        return self._port

    # raw REPL ----------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, soft_reset: bool = False) -> Iterator[SerialTransport]:
        """The raw REPL, held for a series of commands."""
        try:
            # A read timeout on the port itself: no single read may hang on a silent port.
            transport = SerialTransport(self.port, baudrate=self.baudrate, timeout=1)
        except TransportError as exc:
            raise BoardError(f"cannot open {self.port}: {exc} (is another program using the port?)") from exc
        try:
            try:
                try:
                    transport.enter_raw_repl(soft_reset=soft_reset, timeout_overall=self.repl_timeout)
                except TransportError:
                    # A board still booting can take the Ctrl-C and Ctrl-A in the wrong order and end
                    # at the friendly prompt (seen on an open board under load): once, if it shows one.
                    if not self._shows_friendly_prompt(transport):
                        raise
                    transport.enter_raw_repl(soft_reset=soft_reset, timeout_overall=self.repl_timeout)
            except (TransportError, serial.SerialException, OSError) as exc:
                raise BoardError(
                    f"no raw REPL on {self.port}: {exc}. A provisioned board keeps its console "
                    "locked; otherwise check the port and that MicroPython is running"
                ) from exc
            yield transport
            if transport.in_raw_repl:
                transport.exit_raw_repl()
        finally:
            with contextlib.suppress(Exception):
                transport.close()

    @staticmethod
    def _shows_friendly_prompt(transport: SerialTransport, wait_s: float = 0.5) -> bool:
        """True when a newline gets MicroPython's `>>> ` back: the REPL is open, only not raw."""
        port = transport.serial
        port.reset_input_buffer()
        port.write(b"\r\n")
        seen = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and b">>> " not in seen:
            seen += port.read(port.in_waiting or 1)
        return b">>> " in seen

    def exec(self, code: str, timeout: float = 10, soft_reset: bool = False) -> str:
        with self.session(soft_reset=soft_reset) as t:
            return self._exec(t, code, timeout)

    @staticmethod
    def _exec(t: SerialTransport, code: str, timeout: float = 10) -> str:
        try:
            out, err = t.exec_raw(code, timeout=timeout)
        except TransportError as exc:
            raise BoardError(f"the board did not answer: {exc}") from exc
        if err:
            raise BoardRaised("the board raised:\n" + err.decode(errors="replace"))
        return out.decode(errors="replace")

    # files -------------------------------------------------------------------------
    def put_files(self, files: Mapping[str, bytes], progress: Progress | None = None) -> None:
        total = sum(len(d) for d in files.values())
        done = 0
        dirs = sorted({p.rsplit("/", 1)[0] for p in files if p.count("/") > 1}, key=len)
        with self.session() as t:
            for d in dirs:
                parts = d.strip("/").split("/")
                for i in range(1, len(parts) + 1):
                    sub = "/" + "/".join(parts[:i])
                    self._exec(t, f"import os\ntry:\n os.mkdir({sub!r})\nexcept OSError:\n pass")
            for path, data in files.items():
                base = done

                def report(sent: int, _size: int, base: int = base) -> None:
                    if progress:
                        progress(base + sent, total)

                try:
                    t.fs_writefile(path, data, chunk_size=WRITE_CHUNK, progress_callback=report)
                except (TransportError, OSError) as exc:
                    raise BoardError(f"writing {path} failed: {exc}") from exc
                done += len(data)
                if progress:
                    progress(done, total)

    def read_file(self, path: str) -> bytes:
        with self.session() as t:
            try:
                return t.fs_readfile(path)
            except (TransportError, OSError) as exc:
                raise BoardError(f"reading {path} failed: {exc}") from exc

    def remove_tree(self, path: str) -> None:
        self.exec(f"PATH = {path!r}\n" + _RMTREE_CODE)

    def file_sha256(self, paths: list[str]) -> dict[str, str | None]:
        out = self.exec(f"PATHS = {json.dumps(paths)}\n" + _SHA256_CODE, timeout=30)
        return json.loads(out.strip().splitlines()[-1])

    # resets and boot ---------------------------------------------------------------
    # What a board shows once a boot has finished: a prompt or its boot line.
    BOOTED_MARKERS = (b">>> ", b'{"sbd": "boot"', b"raw REPL; CTRL-B")

    def reset(self, kind: str = "hard", timeout: float = 15) -> None:
        """Resets and returns once the new boot shows a prompt or a boot line."""
        deadline = time.monotonic() + timeout
        if kind != "soft" and self.native_usb:
            self.native_usb_reset(kind)
            port = self.reopen_port(deadline)
        else:
            port = self.open_port()
            port.reset_input_buffer()
            self.trigger_reset(port, kind)
        with port:
            seen = b""
            while time.monotonic() < deadline and not any(m in seen for m in self.BOOTED_MARKERS):
                seen = (seen + port.read(4096))[-4096:]

    def open_port(self) -> serial.Serial:  # type: ignore[override]
        try:
            return serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.1, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BoardError(f"cannot open {self.port}: {exc}") from exc

    def reopen_port(self, deadline: float) -> serial.Serial:
        """The port again after a reset of a native USB board: it goes away
        (within REENUMERATE_S) and comes back when the new boot's USB is up."""
        path = self.port if "://" not in self.port else None
        gone_by = min(deadline, time.monotonic() + REENUMERATE_S)
        while path and os.path.exists(path) and time.monotonic() < gone_by:
            time.sleep(0.02)
        while True:
            try:
                return self.open_port()
            except BoardError:
                if time.monotonic() >= deadline:
                    raise BoardError(f"{self.port} did not come back after the reset")
                time.sleep(0.05)

    def native_usb_reset(self, kind: str) -> None:
        """A hard reset of a board whose console is the chip's own USB (the port closed)."""
        if kind == "power-cut":
            raise BoardError("the harness cannot cut a real board's power: unplug and replug it")
        if kind != "hard":
            raise BoardError(f"unknown reset kind {kind!r}: use soft, hard or power-cut")
        if self.console == "usb-serial-jtag":
            # The peripheral turns RTS into a chip reset (esptool's HardReset with
            # uses_usb: EN held 0.2 s); DTR stays high so IO0 is not held.
            with self.open_port() as port:
                port.dtr = False
                port.rts = True
                time.sleep(0.2)
                port.rts = False
            return
        before, after = self.esptool_reset or ("usb-reset", "hard-reset")
        self._run_esptool([sys.executable, "-m", "esptool", "--chip", self.chip, "--port", self.port,
                           "--before", before, "--after", after, "read-mac"])

    def trigger_reset(self, port: serial.Serial, kind: str) -> None:
        if kind == "soft":
            port.write(b"\r\x03\x03\x04")  # interrupt, then Ctrl-D at the REPL
            return
        if kind == "power-cut":
            raise BoardError("the harness cannot cut a real board's power: unplug and replug it")
        if kind != "hard":
            raise BoardError(f"unknown reset kind {kind!r}: use soft, hard or power-cut")
        try:
            # The auto-reset circuit of ESP32 dev boards: RTS drives EN, DTR drives IO0.
            port.dtr = False
            port.rts = True
            time.sleep(0.1)
            port.rts = False
        except (OSError, serial.SerialException):
            # No modem lines (a PTY, some USB bridges): ask MicroPython instead.
            port.write(b"\r\x03\x03\x02")
            time.sleep(0.1)
            port.write(b"import machine; machine.reset()\r")

    def capture_boot(self, kind: str = "hard", timeout: float = 20, settle: float = 0.3,
                     until: str | None = None) -> BootCapture:
        """Records the boot until its boot line (plus `settle` seconds), or until
        the boot ends at a REPL prompt without one, or until `timeout`; with
        `until`, until that text has appeared too (e.g. the firmware's first
        network event)."""
        start = time.monotonic()
        if kind != "soft" and self.native_usb:
            # No rst: line on this port, and what it showed before the reset
            # went with the old USB device: the reopened port shows the new boot only.
            self.native_usb_reset(kind)
            with self.reopen_port(start + timeout) as port:
                text = read_boot(port, max(0.0, start + timeout - time.monotonic()), settle, until=until)
        else:
            with self.open_port() as port:
                port.reset_input_buffer()
                self.trigger_reset(port, kind)
                text = read_boot(port, timeout, settle, need_reset=kind != "soft", until=until)
        return BootCapture(text, last_boot_line(text), time.monotonic() - start)

    @staticmethod
    def write_paced(port: serial.Serial, data: bytes) -> None:
        """Writes `data` in chunks no faster than the wire at 115200 baud, so that a
        device reading its console never finds its 259-byte buffer overrun."""
        for at in range(0, len(data), PACED_CHUNK):
            port.write(data[at:at + PACED_CHUNK])
            port.flush()
            time.sleep(PACED_GAP_S)

    def console_request(self, line: str, reply_key: str = "cmd", timeout: float = 20,
                        follow: str | None = None) -> dict:
        """Writes one line to the console of a running (locked) firmware and
        returns its JSON answer: the first {"sbd": reply_key, ...} line; with
        `follow`, an accepted command's {"sbd": follow} line goes under "result".

        The device's console buffer holds 259 bytes, less than a signed line, and the
        firmware may be busy (a TLS handshake) for seconds: a short line goes first,
        and the real one, paced, only once the firmware has answered it. Should the
        firmware block all the same while the line comes in (a reconnection), its
        buffer overflows and the line is lost: after PROBE_AFTER_S of silence a PING
        follows it, and a PING answered before the line is the proof it was lost; the
        line is then sent again, at most RESENDS times. Sending again changes nothing
        on the device: a refused command is refused again, and an accepted one has
        already answered before the PING's answer."""
        from sbd_harness.device.bootline import parse_json_lines
        with self.open_port() as port:
            port.reset_input_buffer()
            deadline = time.monotonic() + timeout
            for attempt in range(RESENDS + 1):
                self._await_console(port, deadline, timeout)
                self.write_paced(port, line.encode() + b"\r\n")
                data = bytearray()
                probed_at: float | None = None
                sent_at = time.monotonic()
                while time.monotonic() < deadline:
                    data += port.read(port.in_waiting or 1)  # what has arrived; never wait for a full buffer
                    found = parse_json_lines(data.decode(errors="replace"))
                    replies = [o for o in found if o.get("sbd") == reply_key]
                    if probed_at is not None and replies and _is_ping_answer(replies[-1]):
                        if len(replies) == 1 or not any(r.get("ok") for r in replies[:-1]):
                            break  # the PING came back first (or after noise): the line was lost
                        replies = replies[:-1]
                    if probed_at is not None and replies and not replies[0].get("ok") and \
                            not any(_is_ping_answer(r) for r in replies):
                        replies = []  # refused or garbled: wait for the PING's answer to tell
                    if replies and (follow is None or not replies[0].get("ok")):
                        return replies[0]
                    results = [o for o in found if o.get("sbd") == follow]
                    if replies and results:
                        return dict(replies[0], result=results[0])
                    if probed_at is None and not replies and time.monotonic() - sent_at > PROBE_AFTER_S:
                        port.write(b"\r\n" + PING + b"\r\n")  # short: fits the buffer even if busy
                        probed_at = time.monotonic()
                else:
                    break
                if attempt == RESENDS:
                    replies = [o for o in parse_json_lines(data.decode(errors="replace"))
                               if o.get("sbd") == reply_key and not _is_ping_answer(o)]
                    if replies:
                        return replies[0]  # refused every time: that is the answer
        raise BoardError(f"no answer from {self.name} within {timeout}s: {bytes(data[-300:])!r}")

    def _await_console(self, port: serial.Serial, deadline: float, timeout: float) -> None:
        """Sends a PING and returns once the firmware has answered it: it is at its console, reading."""
        from sbd_harness.device.bootline import parse_json_lines
        data = bytearray()
        # A newline first ends whatever partial line noise left in the device's buffer.
        port.write(b"\r\n" + PING + b"\r\n")
        while not any(o.get("sbd") == "cmd" for o in parse_json_lines(data.decode(errors="replace"))):
            if time.monotonic() > deadline:
                raise BoardError(f"{self.name} did not answer on its console within {timeout}s: "
                                 f"{bytes(data[-300:])!r}")
            data += port.read(port.in_waiting or 1)

    # MicroPython itself ---------------------------------------------------------------
    def esptool_command(self, firmware_bin: Path, offset: int, flash_args: list[str], baud: int) -> list[str]:
        reset = ["--before", self.esptool_reset[0], "--after", self.esptool_reset[1]] if self.esptool_reset else []
        return [sys.executable, "-m", "esptool", "--chip", self.chip, "--port", self.port, "--baud", str(baud),
                *reset, "write-flash", *flash_args, hex(offset), str(firmware_bin)]

    def write_micropython(self, firmware_bin: Path, offset: int, flash_args: list[str], baud: int = 460800,
                          erase: bool = True) -> None:
        """Writes the official MicroPython .bin with esptool (erasing the chip first)."""
        firmware_bin = Path(firmware_bin)
        if not firmware_bin.is_file():
            raise BoardError(f"{firmware_bin}: no such file (download the .bin for your chip from micropython.org)")
        if erase:
            reset = ["--before", self.esptool_reset[0], "--after", self.esptool_reset[1]] if self.esptool_reset else []
            self._run_esptool([sys.executable, "-m", "esptool", "--chip", self.chip, "--port", self.port,
                               *reset, "erase-flash"])
        self._run_esptool(self.esptool_command(firmware_bin, offset, flash_args, baud))

    @staticmethod
    def _run_esptool(cmd: list[str]) -> None:
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            raise BoardError(f"esptool failed ({proc.returncode}): {' '.join(cmd)}")
