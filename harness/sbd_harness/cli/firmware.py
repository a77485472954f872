"""`sbd flash`, `sbd console`, `sbd bootline`, `sbd mud`: the firmware on a board, and what it declares."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sbd_harness.cli.common import CliError, board_spec, existing, firmware_bundle, print_json, safe_name, target, add_target
from sbd_harness.release.bundle import FirmwareBundle


# firmware ------------------------------------------------------------------------------
def _flash_profile(args: argparse.Namespace) -> tuple[Any, list[str] | None]:
    """The profile and mistakes asked for, checked before any board is touched."""
    from sbd_harness.release.profiles import ProfileError, get_profile, mistakes_without, select_mistakes
    if args.mistakes is not None and args.without is not None:
        raise CliError("give --mistakes (those to build) or --without (those to leave out), not both")
    mistakes = args.mistakes.split(",") if args.mistakes is not None else None
    try:
        profile = get_profile(args.profile)
        if args.without is not None:
            mistakes = mistakes_without(profile, args.without.split(","))
        select_mistakes(profile, mistakes)
    except ProfileError as exc:
        raise CliError(str(exc)) from exc
    if not profile.labelled and args.build_dir:
        raise CliError(f"--build-dir is for a profile that is built (--profile insecure), not {profile.name}")
    return profile, mistakes


def cmd_flash(args: argparse.Namespace) -> int:
    from sbd_harness.boards.flashing import flash_firmware
    from sbd_harness.release.profiles import WARNING, ProfileError, build, read_marker
    profile, mistakes = _flash_profile(args)
    build_dir = None
    if not profile.labelled:
        bundle = firmware_bundle(args)
    board = target(args)
    if profile.labelled:
        # A patched copy, kept where `sbd verify --firmware` can compare the board with it.
        build_dir = Path(args.build_dir) if args.build_dir else Path("build") / "profiles" / safe_name(board.name)
        try:
            build(profile.name, build_dir, mistakes, Path(args.firmware) if args.firmware else None)
        except ProfileError as exc:
            raise CliError(str(exc)) from exc
        bundle = FirmwareBundle.from_dir(build_dir)
    if args.micropython:
        if board.kind != "serial":
            raise CliError("--micropython writes a .bin to a real board; emulated boards already run MicroPython")
        spec = board_spec(args.chip)
        board.write_micropython(Path(args.micropython), int(spec.get("firmware_offset", 0x1000)),
                                list(spec.get("flash_args", [])), int(spec.get("flash_baudrate", 460800)))
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    with Progress(TextColumn(f"copying firmware {bundle.version} to {board.name}"), BarColumn(),
                  DownloadColumn(), TransferSpeedColumn(), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("copy", total=bundle.total_bytes)
        hashes = flash_firmware(board, bundle, lambda done, total: bar.update(task, completed=done),
                                reset=not args.no_reset)
    print(f"flashed {len(hashes)} files ({bundle.total_bytes} bytes), firmware {bundle.version}, "
          f"bundle sha256 {bundle.sha256}")
    if build_dir is not None:
        made = (read_marker(build_dir) or {}).get("mistakes", [])
        where = f"--board {board.name}" if board.kind == "emulated" else f"--port {board.port}"
        print(f"profile {profile.name}: {WARNING}\n"
              f"mistakes: {', '.join(made) or 'none'}\n"
              f"build: {build_dir}\n"
              f"check it with: sbd verify {where} --firmware {build_dir}")
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    board = target(args)
    print(f"sbd: console on {board.port} (exit with Ctrl-] or Ctrl-x)", file=sys.stderr)
    os.execvp(sys.executable, [sys.executable, "-m", "mpremote", "connect", board.port, "resume", "repl"])
    return 0  # pragma: no cover


def cmd_bootline(args: argparse.Namespace) -> int:
    board = target(args)
    capture = board.capture_boot("soft" if args.soft else "hard", timeout=args.timeout)
    if capture.boot_line is None:
        sys.stderr.write(capture.transcript[-2000:] + "\n")
        raise CliError(f"no boot line from {board.name} within {args.timeout}s")
    print_json(capture.boot_line)
    return 0


# mud --------------------------------------------------------------------------------
def cmd_mud(args: argparse.Namespace) -> int:
    """The board's MUD file (RFC 8520), from the reviewed network policy (boards/network-policy.json)."""
    from sbd_harness.release import mud
    if bool(args.board) == bool(args.broker):
        raise CliError("give --board NAME (settings read off the emulated board's flash) "
                       "or --broker ADDR:PORT (the settings a real board was provisioned with)")
    try:
        if args.board:
            settings = mud.board_settings(existing(args.board))
        else:
            addr, sep, port = args.broker.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise CliError(f"--broker {args.broker!r}: expected ADDR:PORT, e.g. 192.168.1.10:8883")
            from sbd_harness.cli.identity import ntp_endpoint
            ntp_host, ntp_port = ntp_endpoint(args.ntp)
            settings = {"broker_addr": addr, "broker_port": int(port), "ntp_host": ntp_host, "ntp_port": ntp_port}
        document = mud.build(mud.declaration(settings, Path(args.firmware) if args.firmware else None))
    except mud.MudError as exc:
        raise CliError(str(exc)) from exc
    if args.out:
        mud.write(document, Path(args.out))
        print(f"MUD file for {document['ietf-mud:mud']['mud-url']}: {args.out}")
    else:
        print_json(document)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flash", help="put the firmware files on a board")
    add_target(p)
    p.add_argument("--firmware", help="firmware folder (default: the project's firmware/)")
    p.add_argument("--micropython", help="real boards: first write this official MicroPython .bin with esptool")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    from sbd_harness.release.profiles import DEFAULT_PROFILE, PROFILES
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES),
                   help="reference (default): the firmware as it is; insecure: a training build that makes "
                        "the classic mistakes on purpose (docs/labs/), labelled as such on its boot line")
    p.add_argument("--mistakes", metavar="A,B",
                   help="insecure profile: only these mistakes (default: all): "
                        + ", ".join(PROFILES["insecure"].mistakes))
    p.add_argument("--without", metavar="A,B",
                   help="insecure profile: every mistake but these (and those that build on them), "
                        "e.g. --without open-console once its lab is done")
    p.add_argument("--build-dir", help="insecure profile: where to build the patched copy "
                                       "(default: build/profiles/<board>)")
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser("console", help="attach to a board's serial console (mpremote repl)")
    add_target(p)
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("bootline", help="reset a board and print its boot line")
    add_target(p)
    p.add_argument("--soft", action="store_true", help="soft reset instead of hard")
    p.add_argument("--timeout", type=float, default=20)
    p.set_defaults(func=cmd_bootline)

    p = sub.add_parser("mud", help="write the board's Manufacturer Usage Description (RFC 8520) "
                                   "from the reviewed network policy (boards/network-policy.json)")
    p.add_argument("--board", help="an emulated board: its settings (broker, NTP) are read off its flash")
    p.add_argument("--broker", help="instead of --board: the ADDR:PORT a real board was provisioned with")
    p.add_argument("--ntp", metavar="HOST[:PORT]",
                   help="with --broker: the NTP server the board was provisioned with, if any")
    p.add_argument("--firmware", help="firmware folder, for its version (default: the project's firmware/)")
    p.add_argument("--out", help="write the MUD file here (default: print it)")
    p.set_defaults(func=cmd_mud)
