"""`sbd farm ...`: emulated boards exported to a labgrid farm (docs/farm.md)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from sbd_harness.cli.common import CliError, existing


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"{what} {text!r}: give HOST:PORT, e.g. 127.0.0.1:20409")
    return host, int(port)


def cmd_exporter_config(args: argparse.Namespace) -> int:
    from sbd_harness.farm.exporter import ExportError, exporter_config, mark_exported, place_commands, to_yaml
    boards = [existing(name) for name in args.boards]
    try:
        text = to_yaml(exporter_config(boards, args.power_url))
    except ExportError as exc:
        raise CliError(str(exc)) from exc
    for board in boards:  # the power switch serves these, and no other board of this user
        mark_exported(board)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    print("make one place per board at the coordinator (once):", file=sys.stderr)
    for cmd in place_commands(boards, args.exporter):
        print("  " + shlex.join(cmd), file=sys.stderr)
    return 0


def cmd_power(args: argparse.Namespace) -> int:
    from sbd_harness.farm.exporter import ExportError, power_server
    host, port = _host_port(args.listen, "--listen")
    try:
        server = power_server(host, port)
    except ExportError as exc:
        raise CliError(str(exc)) from exc
    print(f"sbd farm power: serving http://{host}:{server.server_address[1]}/power/NAME/{{0,1}}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    farm = sub.add_parser("farm", help="export emulated boards to a labgrid farm").add_subparsers(
        dest="action", required=True)
    p = farm.add_parser("exporter-config",
                        help="write the labgrid exporter configuration for running emulated boards "
                             "(serial port through ser2net, power through their control socket)")
    p.add_argument("boards", nargs="+", metavar="NAME", help="running emulated boards")
    p.add_argument("--power-url", required=True,
                   help="where `sbd farm power` listens, as clients reach it: http://HOST:PORT")
    p.add_argument("--exporter", default="EXPORTER",
                   help="the exporter's name (labgrid-exporter --name; default: its host name), "
                        "for the place commands printed")
    p.add_argument("--out", help="write the configuration here (default: standard output)")
    p.set_defaults(func=cmd_exporter_config)
    p = farm.add_parser("power", help="serve the emulated boards' power switch to labgrid (simplerest backend)")
    p.add_argument("--listen", default="127.0.0.1:20409", help="HOST:PORT (default 127.0.0.1:20409)")
    p.set_defaults(func=cmd_power)
