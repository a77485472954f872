"""`sbd board ...`: emulated boards, started, reset, cut off and read like a bench's boards."""
from __future__ import annotations

import argparse
import sys

from sbd_harness.cli.common import CliError, emulated, existing, print_json


# board ------------------------------------------------------------------------------------
def cmd_board_start(args: argparse.Namespace) -> int:
    print_json(emulated(args.name).start())
    return 0


def cmd_board_stop(args: argparse.Namespace) -> int:
    board = existing(args.name)
    board.stop()
    return 0


def cmd_board_rm(args: argparse.Namespace) -> int:
    board = existing(args.name)
    board.remove()
    return 0


def cmd_board_list(args: argparse.Namespace) -> int:
    from sbd_harness.boards.emulated import EmulatedBoard
    boards = [b.describe() for b in EmulatedBoard.all()]
    if args.json:
        print_json(boards)
        return 0
    if not boards:
        print("no emulated boards (sbd board start NAME)")
    for b in boards:
        state = "running" if b["running"] else "stopped"
        print(f"{b['name']:<20} {state:<8} {b['serial'] or '-':<14} {b['address'] or '-':<15} "
              f"broker port {b['broker_port']:<5}  id {b['unique_id']}")
    return 0


def cmd_board_reset(args: argparse.Namespace) -> int:
    kind = "soft" if args.soft else "power-cut" if args.power_cut else "hard"
    board = emulated(args.name)
    if not board.is_running():
        raise CliError(f"emulated board {args.name!r} is not running")
    board.reset(kind)
    return 0


def cmd_board_erase(args: argparse.Namespace) -> int:
    board = existing(args.name)
    board.erase_flash()
    if board.is_running():
        board.reset("power-cut")
    return 0


def cmd_board_button(args: argparse.Namespace) -> int:
    emulated(args.name).press_boot_button(not args.release)
    return 0


def cmd_board_link(args: argparse.Namespace) -> int:
    emulated(args.name).set_link(args.state == "up")
    return 0


def cmd_board_log(args: argparse.Namespace) -> int:
    board = existing(args.name)
    sys.stdout.write(board.serial_log()[-args.bytes:])
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    board = sub.add_parser("board", help="emulated boards").add_subparsers(dest="action", required=True)
    for name, fn, helptext in (("start", cmd_board_start, "create (first time) and power on; prints JSON"),
                               ("stop", cmd_board_stop, "power off; flash and identity are kept"),
                               ("rm", cmd_board_rm, "stop and delete: flash, identity, logs"),
                               ("erase", cmd_board_erase, "erase the flash (MicroPython stays), then power-cycle")):
        p = board.add_parser(name, help=helptext)
        p.add_argument("name")
        p.set_defaults(func=fn)
    p = board.add_parser("list", help="emulated boards and their state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_board_list)
    p = board.add_parser("reset", help="reset a board (default: hard, the EN button)")
    p.add_argument("name")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--hard", action="store_true", help="EN button (default)")
    g.add_argument("--soft", action="store_true", help="Ctrl-D soft reboot")
    g.add_argument("--power-cut", action="store_true", help="cut the power at once, then restore it")
    p.set_defaults(func=cmd_board_reset)
    p = board.add_parser("button", help="hold the BOOT button (GPIO0) down, or --release it")
    p.add_argument("name")
    p.add_argument("--release", action="store_true")
    p.set_defaults(func=cmd_board_button)
    p = board.add_parser("link", help="cut or restore the board's network link")
    p.add_argument("name")
    p.add_argument("state", choices=["up", "down"])
    p.set_defaults(func=cmd_board_link)
    p = board.add_parser("log", help="print the board's serial log")
    p.add_argument("name")
    p.add_argument("--bytes", type=int, default=20000)
    p.set_defaults(func=cmd_board_log)

