"""Boards the harness can drive: one interface, emulated and real serial boards."""
from .base import Board, BoardError, BootCapture
from .serial_board import SerialBoard

__all__ = ["Board", "BoardError", "BootCapture", "SerialBoard"]
