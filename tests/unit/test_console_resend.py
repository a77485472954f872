"""SerialBoard.console_request when the device loses the line: a console UART keeps 259 bytes and
drops what comes while the firmware is busy (a reconnection), so a signed line (longer than that)
can vanish whole. The harness sends a PING after a silence; the PING answered first proves the loss,
and the line goes again. Without that the request waited out its whole timeout (found in a full
`sbd verify --destructive` run: two checks failed after 60 s of silence)."""
from __future__ import annotations

import json

import pytest

from sbd_harness.boards import serial_board
from sbd_harness.boards.base import BoardError
from sbd_harness.boards.serial_board import PING, PING_ERROR, SerialBoard

LINE = "SBD-CMD " + "A" * 300 + " " + "B" * 88  # longer than the device's buffer


class FakeConsole:
    """A locked firmware's console: answers PING with its error, the line with `answer`; loses the
    first `lose` copies of the line (a buffer overrun while it was busy)."""

    def __init__(self, lose: int, answer: dict):
        self.lose = lose
        self.answer = answer
        self.pending = bytearray()  # bytes written, not yet a line
        self.out = bytearray()
        self.lines: list[bytes] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def reset_input_buffer(self) -> None:
        self.out.clear()

    def flush(self) -> None:
        pass

    def write(self, data: bytes) -> int:
        self.pending += data
        while b"\n" in self.pending:
            raw, _, rest = bytes(self.pending).partition(b"\n")
            self.pending = bytearray(rest)
            line = raw.strip()
            if not line:
                continue
            self.lines.append(line)
            self.on_line(line)
        return len(data)

    def on_line(self, line: bytes) -> None:
        if line == PING:
            self._say({"sbd": "cmd", "ok": False, "error": PING_ERROR})
        elif self.lose:
            self.lose -= 1
        else:
            self._say(self.answer)

    def _say(self, obj: dict) -> None:
        self.out += json.dumps(obj).encode() + b"\r\n"

    @property
    def in_waiting(self) -> int:
        return len(self.out)

    def read(self, n: int) -> bytes:
        got = bytes(self.out[:n])
        del self.out[:n]
        return got


@pytest.fixture
def board(monkeypatch):
    monkeypatch.setattr(serial_board, "PROBE_AFTER_S", 0.2)
    return SerialBoard("/dev/null-console", name="fake")


def _use(board, monkeypatch, console: FakeConsole) -> FakeConsole:
    monkeypatch.setattr(board, "open_port", lambda: console)
    return console


def test_a_lost_line_is_sent_again_and_its_answer_returned(board, monkeypatch):
    ok = {"sbd": "cmd", "ok": True, "cmd": "status", "seq": 7}
    console = _use(board, monkeypatch, FakeConsole(lose=1, answer=ok))
    assert board.console_request(LINE, timeout=10) == ok
    assert console.lines.count(LINE.encode()) == 2


def test_a_line_lost_every_time_ends_in_a_clear_error_not_a_hang(board, monkeypatch):
    console = _use(board, monkeypatch, FakeConsole(lose=99, answer={}))
    with pytest.raises(BoardError, match="no answer from fake"):
        board.console_request(LINE, timeout=10)
    assert console.lines.count(LINE.encode()) == serial_board.RESENDS + 1


def test_a_refusal_is_the_answer_and_the_line_goes_once(board, monkeypatch):
    refused = {"sbd": "cmd", "ok": False, "error": "bad signature"}
    console = _use(board, monkeypatch, FakeConsole(lose=0, answer=refused))
    assert board.console_request(LINE, timeout=10) == refused
    assert console.lines.count(LINE.encode()) == 1


def test_an_answer_that_comes_after_the_ping_was_sent_is_still_the_lines(board, monkeypatch):
    """A slow command (P-256 on the chip): the PING goes out, the device answers the line first."""
    ok = {"sbd": "cmd", "ok": True, "cmd": "attest"}

    class Slow(FakeConsole):
        held = False

        def on_line(self, line: bytes) -> None:
            if line == LINE.encode():
                self.held = True  # still working on it when the PING comes in
            elif line == PING and self.held:
                self.held = False
                self._say(self.answer)  # the line's answer first: the device reads in order
                super().on_line(line)
            else:
                super().on_line(line)

    console = _use(board, monkeypatch, Slow(lose=0, answer=ok))
    assert board.console_request(LINE, timeout=10) == ok
    assert console.lines.count(LINE.encode()) == 1
    assert console.lines.count(PING) == 2  # the one before the line, and the probe
