"""SerialBoard.session on an open board that missed the raw REPL once (a board still booting under load
took the Ctrl-C and the Ctrl-A in the wrong order and stayed at `>>> `, seen in make test): it tries
again once, and only where the friendly prompt shows; a locked board (no prompt) fails at once."""
from __future__ import annotations

import pytest
from mpremote.transport import TransportError

from sbd_harness.boards import serial_board
from sbd_harness.boards.base import BoardError
from sbd_harness.boards.serial_board import SerialBoard


class FakePort:
    def __init__(self, answer: bytes):
        self.answer = answer
        self.out = b""

    def reset_input_buffer(self):
        self.out = b""

    def write(self, data):
        self.out += self.answer

    @property
    def in_waiting(self):
        return len(self.out)

    def read(self, n):
        got, self.out = self.out[:n], self.out[n:]
        return got


class FakeTransport:
    def __init__(self, *args, answer: bytes, fail_times: int, **kw):
        self.serial = FakePort(answer)
        self.fail_times = fail_times
        self.tries = 0
        self.in_raw_repl = False

    def enter_raw_repl(self, soft_reset=False, timeout_overall=10):
        self.tries += 1
        if self.tries <= self.fail_times:
            raise TransportError("could not enter raw repl")
        self.in_raw_repl = True

    def exit_raw_repl(self):
        self.in_raw_repl = False

    def close(self):
        pass


def _board(monkeypatch, answer: bytes, fail_times: int) -> tuple[SerialBoard, list]:
    made = []

    def transport(*a, **kw):
        made.append(FakeTransport(answer=answer, fail_times=fail_times))
        return made[-1]

    monkeypatch.setattr(serial_board, "SerialTransport", transport)
    return SerialBoard("/dev/fake", name="fake"), made


def test_an_open_board_at_its_friendly_prompt_gets_a_second_try(monkeypatch):
    board, made = _board(monkeypatch, b"\r\n>>> ", fail_times=1)
    with board.session() as t:
        assert t.in_raw_repl
    assert made[0].tries == 2


def test_a_board_that_shows_no_prompt_fails_at_once(monkeypatch):
    board, made = _board(monkeypatch, b"", fail_times=1)
    with pytest.raises(BoardError, match="no raw REPL"):
        with board.session():
            pass
    assert made[0].tries == 1


def test_the_second_try_is_the_last(monkeypatch):
    board, made = _board(monkeypatch, b"\r\n>>> ", fail_times=5)
    with pytest.raises(BoardError, match="no raw REPL"):
        with board.session():
            pass
    assert made[0].tries == 2
