"""The real-board code path (SerialBoard), tested over the emulated board's PTY
and over an RFC 2217 URL, as a remote USB board would be reached."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import tty
from pathlib import Path

import pytest
import serial
import serial.rfc2217

from sbd_harness.boards.base import BoardError
from sbd_harness.boards.serial_board import REENUMERATE_S, SerialBoard

FILES = {"/data/blob.bin": bytes(range(256)) * 9, "/data/sub/note.txt": b"hello\nworld\n"}


def test_files_go_there_and_back_intact(flashed_board):
    board = SerialBoard(flashed_board.port)
    seen: list[tuple[int, int]] = []
    board.put_files(FILES, progress=lambda done, total: seen.append((done, total)))
    total = sum(len(d) for d in FILES.values())
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert board.read_file("/data/blob.bin") == FILES["/data/blob.bin"]
    hashes = board.file_sha256(list(FILES) + ["/data/missing"])
    assert hashes == {**{p: hashlib.sha256(d).hexdigest() for p, d in FILES.items()}, "/data/missing": None}
    board.remove_tree("/data")
    assert board.file_sha256(list(FILES)) == {p: None for p in FILES}


def test_device_errors_come_back_as_board_errors(flashed_board):
    with pytest.raises(BoardError, match="ZeroDivisionError"):
        SerialBoard(flashed_board.port).exec("1/0")
    with pytest.raises(BoardError, match="reading /nope"):
        SerialBoard(flashed_board.port).read_file("/nope")


def test_boot_capture_on_a_port_without_modem_lines(flashed_board, bundle):
    """A PTY has no RTS line: the serial path falls back to machine.reset()."""
    capture = SerialBoard(flashed_board.port).capture_boot("hard")
    assert capture.boot_line is not None, capture.transcript[-800:]
    assert capture.boot_line["fw_version"] == bundle.version
    assert capture.boot_line["device_id"] == flashed_board.conf["unique_id"]
    assert capture.boot_line["reset_cause"] == "hard"  # machine.reset(), as the fallback says


def test_a_port_with_no_micropython_behind_it_gives_a_clear_error():
    master, slave = os.openpty()
    tty.setraw(slave)  # a silent device: no echo, nothing answers
    try:
        board = SerialBoard(os.ttyname(slave), repl_timeout=1)
        with pytest.raises(BoardError, match="no raw REPL"):
            board.exec("print(1)")
    finally:
        os.close(master)
        os.close(slave)


def test_power_cut_is_refused_on_a_real_board(flashed_board):
    with pytest.raises(BoardError, match="unplug"):
        SerialBoard(flashed_board.port).reset("power-cut")


def test_micropython_writes_need_an_existing_bin(tmp_path):
    board = SerialBoard("/dev/ttyUSB0", chip="esp32")
    with pytest.raises(BoardError, match="no such file"):
        board.write_micropython(tmp_path / "missing.bin", 0x1000, [])
    cmd = board.esptool_command(Path("fw.bin"), 0x1000, ["--flash-mode", "dio"], 460800)
    assert cmd[-6:] == ["--baud", "460800", "write-flash", "--flash-mode", "dio", "0x1000", "fw.bin"][-6:]
    assert ["--chip", "esp32", "--port", "/dev/ttyUSB0"] == cmd[3:7]


class _ModemTolerantPort(serial.Serial):
    """The bridge's side of the PTY: a PTY has no modem lines, a USB bridge would."""

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass

    cts = dsr = ri = cd = property(lambda self: False)


class _SocketWriter:
    """PortManager writes its telnet replies with .write()."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


@pytest.fixture
def rfc2217_url(flashed_board):
    """A minimal RFC 2217 server (pyserial's PortManager) on loopback, bridging to the PTY."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def bridge(conn: socket.socket) -> None:
        port = _ModemTolerantPort(flashed_board.port, timeout=0.05)
        manager = serial.rfc2217.PortManager(port, _SocketWriter(conn))
        conn.settimeout(0.05)
        closed = threading.Event()

        def to_client() -> None:
            while not (stop.is_set() or closed.is_set()):
                data = port.read(4096)
                if data:
                    try:
                        conn.sendall(b"".join(manager.escape(data)))
                    except OSError:
                        return

        t = threading.Thread(target=to_client, daemon=True)
        t.start()
        while not stop.is_set():
            try:
                data = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            port.write(b"".join(manager.filter(data)))
        closed.set()
        t.join(2)
        port.close()
        conn.close()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            bridge(conn)  # one client at a time, like a serial port

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"rfc2217://127.0.0.1:{server.getsockname()[1]}?ign_set_control"
    stop.set()
    server.close()
    thread.join(5)


def test_rfc2217_url_reaches_the_board(rfc2217_url, flashed_board):
    board = SerialBoard(rfc2217_url)
    assert board.exec("import machine, binascii; print(binascii.hexlify(machine.unique_id()).decode())").strip() \
        == flashed_board.conf["unique_id"]
    board.put_files({"/r.txt": b"over rfc2217"})
    assert board.file_sha256(["/r.txt"])["/r.txt"] == hashlib.sha256(b"over rfc2217").hexdigest()


# -- board descriptions and native USB consoles --------------------------------------------
def test_board_descriptions_name_a_known_console_and_keep_the_images_flash_mode():
    from sbd_harness.boards.serial_board import CONSOLES, board_description
    for name in ("esp32", "esp32c3", "esp32s3", "esp32s3-uart"):
        spec = board_description(name)
        assert spec["console"] in CONSOLES, name
    # ESP32_GENERIC_S3 is built QIO 80 MHz (boards/sdkconfig.flash_qio_80m): esptool must
    # keep the image's header, not force DIO.
    for name in ("esp32c3", "esp32s3", "esp32s3-uart"):
        args = board_description(name)["flash_args"]
        assert args[args.index("--flash-mode") + 1] == "keep", name
    # The C3-DevKitM-1's USB port is a CP2102 bridge to UART0, with the auto-reset circuit.
    c3 = board_description("esp32c3")
    assert c3["console"] == "uart-bridge" and "native USB serial" not in c3["description"]
    s3 = board_description("esp32s3")
    assert s3["console"] == "usb-otg" and (s3["esptool_before"], s3["esptool_after"]) == ("usb-reset", "hard-reset")


def test_a_board_from_its_description_flashes_and_resets_the_way_its_port_needs(tmp_path):
    s3 = SerialBoard.from_description("/dev/ttyACM0", "esp32s3")
    assert (s3.chip, s3.console, s3.native_usb) == ("esp32s3", "usb-otg", True)
    cmd = s3.esptool_command(Path("fw.bin"), 0, ["--flash-mode", "keep"], 460800)
    assert cmd[cmd.index("--before") + 1] == "usb-reset" and cmd.index("--before") < cmd.index("write-flash")
    uart = SerialBoard.from_description("/dev/ttyUSB0", "esp32s3-uart")
    assert (uart.chip, uart.native_usb) == ("esp32s3", False)
    assert "--before" not in uart.esptool_command(Path("fw.bin"), 0, [], 460800)
    with pytest.raises(BoardError, match="known: "):
        SerialBoard.from_description("/dev/ttyUSB0", "esp32-nonesuch")


BOOT_LINE = b'{"sbd": "boot", "fw_version": "0.1.0", "device_id": "02bd00001234", "reset_cause": "power_on"}\r\n'


def test_boot_capture_on_a_native_usb_port_needs_no_rst_line(monkeypatch):
    """The S3's native USB: RTS does nothing, the ROM's rst: line never shows on
    this port, and the port goes away at the reset. The capture resets with
    esptool's usb-reset, reopens the port and takes the boot line it shows,
    instead of waiting for an rst: line until its timeout."""
    master, slave = os.openpty()
    tty.setraw(slave)
    ran: list[list[str]] = []

    def esptool(cmd: list[str]) -> None:
        ran.append(cmd)
        # The new boot, on the port once it is back (MicroPython's USB CDC
        # holds its output until the host opens the port): its boot line, no
        # ROM output. (A PTY never goes away: the capture waits REENUMERATE_S for it.)
        threading.Timer(REENUMERATE_S + 0.5, lambda: os.write(master, b"\r\n" + BOOT_LINE)).start()

    try:
        board = SerialBoard(os.ttyname(slave), chip="esp32s3", console="usb-otg",
                            esptool_reset=("usb-reset", "hard-reset"))
        monkeypatch.setattr(SerialBoard, "_run_esptool", staticmethod(esptool))
        timeout = 20
        capture = board.capture_boot("hard", timeout=timeout)
        assert ran and ran[0][ran[0].index("--before") + 1] == "usb-reset" and ran[0][-1] == "read-mac"
        assert capture.boot_line is not None and capture.boot_line["reset_cause"] == "power_on"
        assert "rst:" not in capture.transcript
        assert capture.elapsed_s < timeout / 2, "the capture waited for an rst: line"
        with pytest.raises(BoardError, match="unplug"):
            board.capture_boot("power-cut")
    finally:
        os.close(master)
        os.close(slave)


def test_native_usb_boot_capture_of_the_emulated_board(flashed_board, bundle, monkeypatch):
    """The same path against a real boot: the emulated board reset as
    esptool's usb-reset would reset it, its port read after it. What the port
    held before goes, as the old USB device's data goes with it."""
    board = SerialBoard(flashed_board.port, console="usb-otg")

    def usb_reset(cmd: list[str]) -> None:
        # The reset lands once the port is open again (MicroPython's USB CDC
        # holds the boot's output until the host opens the port; a PTY does not).
        threading.Timer(REENUMERATE_S + 0.5, flashed_board.control, [{"cmd": "reset", "kind": "hard"}]).start()

    monkeypatch.setattr(SerialBoard, "_run_esptool", staticmethod(usb_reset))
    capture = board.capture_boot("hard", timeout=30)
    assert capture.boot_line is not None, capture.transcript[-800:]
    assert capture.boot_line["fw_version"] == bundle.version
    assert capture.boot_line["reset_cause"] == "power_on"  # the emulated EN: this boot's line, not an old one
