"""Boards the harness can drive: one interface, emulated and real serial boards."""
from sbd_harness.boards.base import Board, BoardError, BootCapture
from sbd_harness.boards.serial_board import SerialBoard

__all__ = ["Board", "BoardError", "BootCapture", "SerialBoard"]
