"""`sbd hwcheck --port PORT`: the figures a real board measures once that the
emulated board only estimates (boot time, P-256, heap, serial round trips,
Ctrl-C storm, mDNS and TCP surface), printed as JSON."""
from __future__ import annotations

import argparse

from sbd_harness.cli.common import add_target, print_json, target


def cmd_hwcheck(args: argparse.Namespace) -> int:
    from sbd_harness.tools import hwcheck
    board = target(args)  # a real board (--port, its description from --chip), or an emulated one (--board)
    print_json(hwcheck.run(board, address=args.address, round_trip_count=args.round_trips,
                           storm_resets=args.storm_resets, p256_runs=args.p256_runs,
                           tcp_ports=hwcheck.parse_ports(args.tcp_ports)))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hwcheck", help="measure a real board once: the figures the emulated board estimates")
    add_target(p)
    p.add_argument("--address", help="the board's IP address (default: asked from an unlocked board)")
    p.add_argument("--round-trips", type=int, default=200, help="serial command round trips (default 200)")
    p.add_argument("--storm-resets", type=int, default=3, help="resets under a Ctrl-C storm (default 3)")
    p.add_argument("--p256-runs", type=int, default=3, help="P-256 verifies timed, the median kept (default 3)")
    p.add_argument("--tcp-ports", default="1-65535", help="TCP ports to scan, FIRST-LAST (default 1-65535)")
    p.set_defaults(func=cmd_hwcheck)
