"""`sbd board ...`: emulated boards, started, reset, cut off and read like a bench's boards."""
from __future__ import annotations

import argparse
import sys
import threading

from sbd_harness.cli.common import CliError, emulated, existing, print_json


# board ------------------------------------------------------------------------------------
def cmd_board_start(args: argparse.Namespace) -> int:
    """One board: its description. Several (names, or NAME --count N for NAME-1..NAME-N): a line per
    board as it comes up, at most --jobs starting at a time, then their descriptions as a JSON list;
    exit 2 when any did not start (the others keep running)."""
    from sbd_harness.boards import classroom
    if args.count is not None:
        if len(args.name) != 1:
            raise CliError("--count takes one name, the prefix: sbd board start class --count 30 (class-1 .. class-30)")
        names = classroom.class_names(args.name[0], args.count)
    else:
        names = args.name
    if len(names) == 1 and args.count is None:
        print_json(emulated(names[0]).start())
        return 0

    lines = threading.Lock()

    def done(name: str, desc: dict | None, err: str | None) -> None:
        # Called from the threads that start the boards: print() writes a line and its newline
        # apart, so two boards' lines ran together; one write of the whole line, one at a time.
        line = f"{name}: " + (f"running, {desc['serial']}, {desc['address']}" if desc else f"FAILED: {err}") + "\n"
        with lines:
            sys.stderr.write(line)
            sys.stderr.flush()

    results = classroom.start_many(names, jobs=args.jobs, on_done=done)
    print_json([r for r in results.values() if isinstance(r, dict)])
    failed = [n for n, r in results.items() if not isinstance(r, dict)]
    if failed:
        raise CliError(f"{len(failed)} of {len(names)} boards did not start: {', '.join(failed)}")
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
    p = board.add_parser("start", help="create (first time) and power on; prints JSON",
                         description="Creates (first time) and powers on one board or a class of them.")
    p.add_argument("name", nargs="+", help="board names, or with --count the prefix of the class's names")
    p.add_argument("--count", type=int, help="start NAME-1 .. NAME-COUNT (at most 128)")
    p.add_argument("--jobs", type=int, default=4, help="boards starting at a time (default 4)")
    p.set_defaults(func=cmd_board_start)
    for name, fn, helptext in (("stop", cmd_board_stop, "power off; flash and identity are kept"),
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

