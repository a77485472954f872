"""`sbd advisories`: the firmware's known vulnerabilities without a board, and the advisory feed's refresh."""
from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from sbd_harness.cli.common import CliError
from sbd_harness.errors import EXIT_FAIL


def _firmware(args: argparse.Namespace) -> Path:
    from sbd_harness.paths import firmware_dir
    return Path(args.firmware) if args.firmware else firmware_dir()


def cmd_advisories(args: argparse.Namespace) -> int:
    from sbd_harness.release.vulnerabilities import (FEED_FILE, PLATFORM_FILE, VulnerabilityDataError, evaluate,
                                                     load_platform, query_osv)
    fw = _firmware(args)
    if args.online:
        return _refresh(fw / PLATFORM_FILE, Path(args.out) if args.out else fw / FEED_FILE, load_platform, query_osv)
    try:
        result = evaluate(fw, Path(args.advisories) if args.advisories else None, [Path(p) for p in args.vex or []])
    except VulnerabilityDataError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"feed: {result['feed']['path']} ({result['feed']['records']} records, snapshot "
              f"{(result['feed']['snapshot'] or {}).get('date') or 'undated'})")
        for v in result["vulnerabilities"]:
            why = v.get("justification") or v.get("source", "")
            print(f"{v['id']:<18} {v['component']} {v['version']:<8} {v['status']:<13} {why}")
        print(f"open: {', '.join(v['id'] for v in result['open']) or 'none'}")
    return EXIT_FAIL if result["open"] else 0


def _refresh(platform_path: Path, out: Path, load_platform, query_osv) -> int:
    """Asks api.osv.dev for each component of the platform and writes what it returns as a feed (needs
    internet). The records come as OSV publishes them; review the new ones and state the product's status
    for each in vex.json before relying on the check."""
    from urllib.error import URLError
    records: dict[str, dict] = {}
    comps = load_platform(platform_path)
    for comp in comps:
        try:
            for rec in query_osv(comp):
                records.setdefault(rec["id"], rec)
        except (URLError, OSError, ValueError) as exc:
            raise CliError(f"api.osv.dev: {comp['name']} {comp['version']}: {exc}") from exc
    feed = {"snapshot": {"date": dt.date.today().isoformat(),
                         "scope": "the OSV service's answer for " + ", ".join(f"{c['name']} {c['version']}"
                                                                               for c in comps)
                                  + "; OSV indexes C libraries mostly by git commit, so it may miss records",
                         "format": "OSV records under 'vulns', as api.osv.dev returned them"},
            "vulns": sorted(records.values(), key=lambda r: r["id"])}
    out.write_text(json.dumps(feed, indent=2) + "\n")
    print(f"{out}: {len(records)} records from api.osv.dev")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("advisories", help="the firmware's known vulnerabilities (its platform.json against an OSV "
                                          "advisory feed, with its VEX statements), no board needed")
    p.add_argument("--firmware", help="the firmware folder (default: the project's firmware/)")
    p.add_argument("--advisories", metavar="FILE", help="the advisory feed (default: the firmware's "
                                                        "advisories.osv.json)")
    p.add_argument("--vex", action="append", metavar="FILE", help="VEX statements over the firmware's vex.json "
                                                                 "(repeatable)")
    p.add_argument("--json", action="store_true", help="the whole assessment as JSON")
    p.add_argument("--online", action="store_true",
                   help="ask api.osv.dev for each component instead (needs internet) and write the answer as a feed")
    p.add_argument("--out", metavar="FILE", help="with --online: where to write the feed (default: the firmware's "
                                                 "advisories.osv.json)")
    p.set_defaults(func=cmd_advisories)
