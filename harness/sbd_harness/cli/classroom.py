"""`sbd class ...`: a trainer's view of a class of emulated boards, and one page of their reports."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sbd_harness.cli.common import CliError, print_json, safe_name


def _views(args: argparse.Namespace) -> list[dict]:
    from sbd_harness.boards import classroom
    boards = classroom.boards(args.pattern)
    if not boards and args.pattern:
        raise CliError(f"no emulated board matches {args.pattern!r} (sbd board list)")
    reports = Path(args.reports)
    return [classroom.view(b, reports / safe_name(b.name)) for b in boards]


def cmd_class_status(args: argparse.Namespace) -> int:
    from sbd_harness.boards import classroom
    if args.watch is not None and args.watch <= 0:
        raise CliError("--watch SECONDS must be above 0")
    while True:
        views = _views(args)
        if args.json:
            print_json(views)
        else:
            text = classroom.table(views) if views else "no emulated boards (sbd board start NAME --count N)"
            if args.watch is not None and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen: the table stays in place
            print(text + (f"\n(every {args.watch:g}s, Ctrl-C to stop)" if args.watch is not None else ""),
                  flush=True)
        if args.watch is None:
            return 0
        time.sleep(args.watch)


def cmd_class_report(args: argparse.Namespace) -> int:
    from sbd_harness.boards import classroom
    views = _views(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def link(name: str) -> str | None:
        view = next(v for v in views if v["name"] == name)
        if not view["last_verify"]:
            return None
        page = Path(view["last_verify"]["path"]).with_suffix(".html")
        return classroom.relative_link(page, out) if page.exists() else None

    out.write_text(classroom.summary_html(views, args.title, link))
    with_report = sum(1 for v in views if v["last_verify"])
    print(f"{out}: {len(views)} boards, {with_report} with a verify report")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("class", help="a class of emulated boards at a glance").add_subparsers(
        dest="action", required=True)
    for name, fn, helptext in (
            ("status", cmd_class_status, "every board: state, provisioned, locked, online, last telemetry, "
                                         "last verify result"),
            ("report", cmd_class_report, "one HTML page of the class's last sbd verify reports")):
        p = group.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        p.add_argument("pattern", nargs="?", help="board names to show, shell-style (class-*); default all")
        p.add_argument("--reports", default="reports",
                       help="where sbd verify wrote the reports, one folder per board (default reports)")
        p.set_defaults(func=fn)
        if name == "status":
            p.add_argument("--json", action="store_true")
            p.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                           help="refresh every SECONDS (default 2) until Ctrl-C")
        else:
            p.add_argument("--out", default="reports/class.html", help="the page (default reports/class.html)")
            p.add_argument("--title", default="Class report")
