"""`sbd verify` over several boards at once: each board's own run (a `sbd verify` process of its
own, so one board's hang or crash is that board's result, not the fleet's), side by side, then
one combined report: which check failed on which board, and JUnit XML with a suite per board.

Boards come from `--board` (repeated; a shell-style pattern such as `class-*` names every running
emulated board that matches), `--port` (repeated) or `--boards FILE`, one board per line:

    class-1                                  # an emulated board, by name
    /dev/ttyUSB0 esp32s3 192.0.2.10:8883     # a real board: port, chip, the broker it was given
    rfc2217://farm:4000 esp32 192.0.2.10:8883
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbd_harness.cli.common import CliError, safe_name
from sbd_harness.errors import EXIT_FAIL, EXIT_USAGE


@dataclass(frozen=True)
class Member:
    """One board of the fleet, as `sbd verify` names a single board."""
    name: str
    args: tuple[str, ...]  # --board NAME, or --port PORT --chip CHIP [--broker ADDR:PORT]


@dataclass
class Outcome:
    member: Member
    code: int
    seconds: float
    report: dict[str, Any] | None
    log: Path
    paths: dict[str, Path] = field(default_factory=dict)


def members(args: argparse.Namespace) -> list[Member]:
    """The boards named on the command line, patterns expanded, each once; a clear error for a
    pattern that matches no running board or a malformed line in --boards."""
    from sbd_harness.boards.emulated import EmulatedBoard
    found: list[Member] = []
    running = None
    for name in args.board or []:
        if any(c in name for c in "*?["):
            if running is None:
                running = [b.name for b in EmulatedBoard.all() if b.is_running()]
            matched = sorted(n for n in running if fnmatch.fnmatchcase(n, name))
            if not matched:
                raise CliError(f"--board {name!r} matches no running emulated board (sbd board list)")
            found += [Member(n, ("--board", n)) for n in matched]
        else:
            found.append(Member(name, ("--board", name)))
    for port in args.port or []:
        found.append(Member(port, ("--port", port, "--chip", args.chip)))
    if args.boards:
        found += _from_file(Path(args.boards))
    unique = list({m.name: m for m in found}.values())
    if len(unique) != len(found):
        raise CliError("a board is named twice: " + ", ".join(sorted({m.name for m in found if
                                                                      sum(o.name == m.name for o in found) > 1})))
    if len(unique) > 1:  # every emulated board there and running before any run starts
        from sbd_harness.cli.common import existing
        for m in unique:
            if m.args[0] == "--board" and not existing(m.name).is_running():
                raise CliError(f"emulated board {m.name!r} is not running: sbd board start {m.name}")
    return unique


def _from_file(path: Path) -> list[Member]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CliError(f"--boards {path}: {exc.strerror}") from None
    out = []
    for number, raw in enumerate(lines, 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        first = words[0]
        if first.startswith(("/", "rfc2217://", "socket://")):
            if len(words) > 3:
                raise CliError(f"{path}:{number}: expected PORT [CHIP] [BROKER], got {raw.strip()!r}")
            chip = words[1] if len(words) > 1 else "esp32"
            extra = ("--broker", words[2]) if len(words) > 2 else ()
            out.append(Member(first, ("--port", first, "--chip", chip, *extra)))
        elif len(words) == 1:
            out.append(Member(first, ("--board", first)))
        else:
            raise CliError(f"{path}:{number}: an emulated board is one name; a real board starts with its port "
                           f"(/dev/..., rfc2217://...): {raw.strip()!r}")
    if not out:
        raise CliError(f"--boards {path}: no boards in it")
    return out


def shared_args(args: argparse.Namespace) -> list[str]:
    """What every board's run gets: the options of this run, less the board and the report paths."""
    out: list[str] = []
    for flag, value in (("--firmware", args.firmware), ("--docs", args.docs), ("-k", args.k),
                        ("--broker-flaws", args.broker_flaws or None), ("--pki", args.pki),
                        ("--allowed-skips", args.allowed_skips),
                        ("--manufacturer-overrides", getattr(args, "manufacturer_overrides", None)),
                        ("--advisories", getattr(args, "advisories", None))):
        if value is not None:
            out += [flag, value]
    for vex in getattr(args, "vex", None) or []:
        out += ["--vex", vex]
    for check in args.check or []:
        out += ["--check", check]
    for flag, on in (("--flash", args.flash), ("--destructive", args.destructive), ("--soak", args.soak)):
        if on:
            out.append(flag)
    return out


def run(args: argparse.Namespace, fleet: list[Member]) -> int:
    if args.broker:
        raise CliError("--broker names one broker for one board; in a fleet, give each real board's broker "
                       "in --boards FILE (emulated boards each have their own)")
    if args.markdown or args.html or args.junit:
        raise CliError("--markdown, --html and --junit name one board's files; a fleet writes its own beside "
                       "--report (fleet.json, fleet.md, fleet.junit.xml)")
    out = Path(args.report).parent if args.report else Path("reports") / "fleet"
    out.mkdir(parents=True, exist_ok=True)
    common = shared_args(args)
    jobs = max(1, min(args.jobs or len(fleet), len(fleet)))
    print(f"sbd verify: {len(fleet)} boards, {jobs} at a time; each board's reports under {out}/<board>/")

    def one(member: Member) -> Outcome:
        folder = out / safe_name(member.name)
        folder.mkdir(parents=True, exist_ok=True)
        report = folder / "report.json"
        report.unlink(missing_ok=True)
        log = folder / "verify.log"
        t0 = time.monotonic()
        with log.open("w") as sink:
            proc = subprocess.run([sys.executable, "-m", "sbd_harness", "verify", *member.args, *common,
                                   "--report", str(report)], stdout=sink, stderr=subprocess.STDOUT,
                                  env={**os.environ, "TERM": "dumb"})
        seconds = time.monotonic() - t0
        body = json.loads(report.read_text()) if report.exists() else None
        outcome = Outcome(member, proc.returncode, seconds, body, log,
                          {"report": report, "junit": report.with_suffix(".junit.xml")})
        s = (body or {}).get("summary", {})
        print(f"  {member.name}: exit {proc.returncode} in {seconds:.0f} s, "
              + (f"{s.get('pass', 0)} pass, {s.get('fail', 0)} fail, {s.get('skip', 0)} skip, {s.get('error', 0)} error"
                 if body else f"no report (see {log})"), flush=True)
        return outcome

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(one, fleet))
    wall = time.monotonic() - t0
    combined = combine(outcomes, wall)
    (out / "fleet.json").write_text(json.dumps(combined, indent=2) + "\n")
    (out / "fleet.md").write_text(to_markdown(combined))
    write_junit(outcomes, out / "fleet.junit.xml")
    print(to_markdown(combined))
    print(f"fleet: {out / 'fleet.json'}  markdown: {out / 'fleet.md'}  junit: {out / 'fleet.junit.xml'}")
    codes = [o.code for o in outcomes]
    if any(c not in (0, EXIT_FAIL) for c in codes):
        return EXIT_USAGE
    return EXIT_FAIL if any(codes) else 0


def combine(outcomes: list[Outcome], wall_s: float) -> dict[str, Any]:
    """The fleet's summary: per board its exit code, time and counts; per check its status on each board."""
    boards = []
    checks: dict[str, dict[str, str]] = {}
    for o in outcomes:
        body = o.report or {}
        boards.append({"name": o.member.name, "exit": o.code, "seconds": round(o.seconds, 1),
                       "summary": body.get("summary"), "report": str(o.paths["report"]) if o.report else None,
                       "log": str(o.log), "firmware": (body.get("firmware") or {}).get("version")})
        for c in body.get("checks", []):
            checks.setdefault(c["id"], {})[o.member.name] = c["status"]
    failing = {cid: sorted(b for b, st in per.items() if st in ("fail", "error")) for cid, per in checks.items()}
    return {"wall_s": round(wall_s, 1), "boards": boards, "checks": checks,
            "failing": {cid: names for cid, names in failing.items() if names}}


def to_markdown(combined: dict[str, Any]) -> str:
    names = [b["name"] for b in combined["boards"]]
    lines = [f"# sbd verify: {len(names)} boards in {combined['wall_s']:.0f} s", "",
             "| board | exit | pass | fail | skip | error | time |", "|---|---|---|---|---|---|---|"]
    for b in combined["boards"]:
        s = b["summary"] or {}
        lines.append(f"| {b['name']} | {b['exit']} | {s.get('pass', '-')} | {s.get('fail', '-')} | "
                     f"{s.get('skip', '-')} | {s.get('error', '-')} | {b['seconds']:.0f} s |")
    lines += ["", "| check | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cid, per in combined["checks"].items():
        lines.append(f"| {cid} | " + " | ".join(per.get(n, "-").upper() for n in names) + " |")
    if combined["failing"]:
        lines += ["", "Failing: " + "; ".join(f"{cid} on {', '.join(b)}" for cid, b in combined["failing"].items())]
    return "\n".join(lines) + "\n"


def write_junit(outcomes: list[Outcome], path: Path) -> None:
    """One <testsuite> per board (named after it), taken from each board's own JUnit XML; a board
    whose run wrote none gets a suite with one error case saying why."""
    root = ET.Element("testsuites", name="sbd-verify-fleet")
    for o in outcomes:
        junit = o.paths["junit"]
        suites = []
        if junit.exists():
            try:
                parsed = ET.parse(junit).getroot()
                suites = [parsed] if parsed.tag == "testsuite" else list(parsed.iter("testsuite"))
            except ET.ParseError:
                suites = []
        if not suites:
            suite = ET.SubElement(root, "testsuite", name=o.member.name, tests="1", errors="1", failures="0",
                                  skipped="0")
            case = ET.SubElement(suite, "testcase", classname=o.member.name, name="sbd-verify")
            ET.SubElement(case, "error", message=f"no report (exit {o.code}); see {o.log}")
            continue
        for suite in suites:
            suite.set("name", o.member.name)
            root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
