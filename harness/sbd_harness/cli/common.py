"""What every `sbd` verb shares: how a board is named, the lab CA, JSON output."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sbd_harness.boards.base import Board
from sbd_harness.errors import SbdError
from sbd_harness.identity.pki import LabCA
from sbd_harness.release.bundle import FirmwareBundle


class CliError(SbdError):
    """Bad input on the command line, or a board or lab not in the state the verb needs."""


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def emulated(name: str):
    from sbd_harness.boards.emulated import EmulatedBoard
    return EmulatedBoard(name)


def existing(name: str):
    """An emulated board that was created (running or not); a clear error otherwise."""
    board = emulated(name)
    if not board.state.exists():
        raise CliError(f"no emulated board named {name!r} (sbd board start {name})")
    return board


def target(args: argparse.Namespace) -> Board:
    """The board named by --board (emulated) or --port (real)."""
    from sbd_harness.boards.serial_board import SerialBoard
    if getattr(args, "board", None) and getattr(args, "port", None):
        raise CliError("give either --board NAME (emulated) or --port PORT (real board), not both")
    if getattr(args, "board", None):
        board = emulated(args.board)
        if not board.is_running():
            raise CliError(f"emulated board {args.board!r} is not running: sbd board start {args.board}")
        return board
    if getattr(args, "port", None):
        return SerialBoard.from_description(args.port, getattr(args, "chip", "esp32"), baudrate=getattr(args, "baud", None))
    raise CliError("which board? give --board NAME (emulated) or --port PORT (real board)")


def firmware_bundle(args: argparse.Namespace) -> FirmwareBundle:
    return FirmwareBundle.from_dir(Path(args.firmware) if args.firmware else None)


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "board"


def board_spec(chip: str) -> dict[str, Any]:
    from sbd_harness.paths import boards_dir
    path = boards_dir() / chip / "board.json"
    if not path.exists():
        known = sorted(p.name for p in boards_dir().iterdir() if (p / "board.json").exists())
        raise CliError(f"no board description {path}; known: {', '.join(known)}")
    return json.loads(path.read_text())


def lab_ca(args: argparse.Namespace) -> LabCA:
    return LabCA(Path(args.pki) if getattr(args, "pki", None) else None)


def add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", help="an emulated board's name")
    p.add_argument("--port", help="a real board's serial port or rfc2217:// URL")
    p.add_argument("--chip", default="esp32", help="real board type, a folder under boards/ (default esp32)")
    p.add_argument("--baud", type=int, help="console baud rate of a real board (default: its description's)")


def add_pki(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pki", help="the lab CA's folder (default: <state>/pki, or SBD_PKI_DIR)")


