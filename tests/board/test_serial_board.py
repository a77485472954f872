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
from sbd_harness.boards.serial_board import SerialBoard

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
