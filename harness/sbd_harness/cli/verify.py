"""`sbd verify`: runs the check catalogue on a board and writes the reports."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sbd_harness.boards.base import Board
from sbd_harness.cli.common import CliError, add_pki, firmware_bundle, safe_name, target, add_target
from sbd_harness.errors import EXIT_FAIL, SbdError


# Plugins installed beside the harness that the check run does without. labgrid's (with the farm
# extra) reads the terminal plugin's options, which a run without the terminal plugin lacks; the
# checks reach a labgrid place through the harness's own --sbd-place, not labgrid's --lg-* options.
NO_OTHER_PLUGINS = ("-p", "no:labgrid")


# verify -----------------------------------------------------------------------------
def _verify_paths(args: argparse.Namespace, board: Board) -> dict[str, Path]:
    """Where `sbd verify` writes: the JSON report, and beside it (unless given) the Markdown summary, the
    HTML page, the JUnit XML and the SBOM, named after the report (report.json -> report.md, ...)."""
    # A run of a selection (--check, -k) goes beside the full run's report, never over it.
    default_name = "report.selected.json" if _selected(args) else "report.json"
    report = Path(args.report) if args.report else Path("reports") / safe_name(board.name) / default_name
    paths = {"report": report,
             "markdown": Path(args.markdown) if args.markdown else report.with_suffix(".md"),
             "html": Path(args.html) if args.html else report.with_suffix(".html"),
             "junit": Path(args.junit) if args.junit else report.with_suffix(".junit.xml"),
             "sbom": report.with_suffix(".sbom.cdx.json")}
    if len({p.resolve() for p in paths.values()}) != len(paths):
        raise CliError("--report, --markdown, --html and --junit must be different files")
    return paths


def _selected(args: argparse.Namespace) -> bool:
    return bool(args.check or args.k)


def _not_tested(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The checks this run was asked for but did not test: with a selection, every check of it that
    skipped or errored; with --allowed-skips, every skip not on the list. One line each, with the reason."""
    allowed = None if args.allowed_skips is None else {i.strip() for i in args.allowed_skips.split(",")}
    lines = []
    for c in report["checks"]:
        if c["status"] == "error" and _selected(args) or c["status"] == "skip" and (
                _selected(args) or allowed is not None and c["id"] not in allowed):
            lines.append(f"not tested: {c['id']} ({c['status']}): {c.get('message') or 'no reason given'}")
    return lines


def _sbom_in_background(bundle, path: Path):
    """Writes the SBOM on a thread of its own while the checks run: validating it against the
    CycloneDX schema loads jsonschema's format checkers, seconds of start-up that need no board."""
    from concurrent.futures import ThreadPoolExecutor

    from sbd_harness.release.sbom import write_sbom
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sbd-sbom")
    future = pool.submit(write_sbom, bundle, path)
    pool.shutdown(wait=False)
    return future


def cmd_verify(args: argparse.Namespace) -> int:
    from sbd_harness.reports import features as feature_decl
    from sbd_harness.reports.ics import OverridesError, load_overrides
    from sbd_harness.cli import fleet
    bundle = firmware_bundle(args)  # a clear error for a bad firmware folder, before any check runs
    from sbd_harness.release.product import ProductError, from_bundle
    try:  # the declarations the ICS and IXIT rest on: read before any check runs, so a bad file stops here
        features = feature_decl.load(bundle.source) if bundle.source else None
        overrides = load_overrides(args.manufacturer_overrides)
        from_bundle(bundle, features)  # the declaration describes this build (its model)
    except (feature_decl.FeaturesError, OverridesError, ProductError) as exc:
        raise CliError(str(exc)) from exc
    boards = fleet.members(args)
    if args.place:
        if boards:
            raise CliError("--place names the board to verify: leave out --board, --port and --boards")
        if args.jobs is not None:
            raise CliError("--jobs is for several boards")
        from sbd_harness.farm.place import hold
        with hold(args.place, args.chip, args.baud, args.place_wait) as board:
            return _verify_one(args, board, bundle, features, overrides)
    if len(boards) > 1 or args.boards:
        return fleet.run(args, boards)
    if args.jobs is not None:
        raise CliError("--jobs is for several boards")
    kind = boards[0].args[0] if boards else None  # one board (a pattern may have matched just one)
    args.board = boards[0].name if kind == "--board" else None
    args.port = boards[0].name if kind == "--port" else None
    return _verify_one(args, target(args), bundle, features, overrides)


def _verify_one(args: argparse.Namespace, board: Board, bundle, features, overrides) -> int:
    """One board's run: the checks under pytest, then the reports."""
    import pytest

    from sbd_harness.checks import CHECKS_DIR
    from sbd_harness.cli.progress import for_terminal
    from sbd_harness.reports.ics import write_all
    from sbd_harness.reports.provenance import run_context
    from sbd_harness.reports.report import build_report, to_html, to_markdown, write_json
    from sbd_harness.release.sbom import SBOMError
    paths = _verify_paths(args, board)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    paths["report"].unlink(missing_ok=True)  # so that a run that ends early is not mistaken for this one
    tier = "soak" if args.soak else "default"
    # pytest's own terminal output is off: no dots, no tracebacks; a terminal gets the progress
    # display instead, and every run the table below (a failure's reason; its evidence is in the reports).
    pytest_args = [str(CHECKS_DIR), "-c", str(CHECKS_DIR / "pytest.ini"), "--rootdir", str(CHECKS_DIR),
                   "-p", "no:terminal", "-p", "no:cacheprovider", *NO_OTHER_PLUGINS,
                   "-W", "ignore::pytest.PytestAssertRewriteWarning",
                   "--sbd-report", str(paths["report"]),
                   "--junitxml", str(paths["junit"]), "-o", "junit_family=xunit2", "-o", "junit_suite_name=sbd-verify"]
    if args.place:
        pytest_args += ["--sbd-place", args.place, "--sbd-board", args.chip]
    elif board.kind == "emulated":
        pytest_args += ["--sbd-board-name", board.name]
    else:
        pytest_args += ["--sbd-port", board.port, "--sbd-board", args.chip]
    if not args.flash:
        pytest_args.append("--sbd-no-flash")
    if args.firmware:
        pytest_args += ["--sbd-firmware", args.firmware]
    if args.docs:
        if not Path(args.docs).is_dir():
            raise CliError(f"--docs {args.docs}: no such folder (the documents the device points to: SECURITY.md, ...)")
        pytest_args += ["--sbd-docs", args.docs]
    for check_id in args.check or []:
        pytest_args += ["--sbd-check", check_id]
    if args.k:
        pytest_args += ["-k", args.k]
    if args.broker:
        pytest_args += ["--sbd-broker", args.broker]
    if args.broker_flaws:
        from sbd_harness.lab.broker import FLAWS
        unknown = sorted(set(args.broker_flaws.split(",")) - set(FLAWS))
        if unknown:
            raise CliError(f"unknown broker flaws {unknown}: choose from {', '.join(sorted(FLAWS))}")
        pytest_args += ["--sbd-broker-flaws", args.broker_flaws]
    if args.pki:
        pytest_args += ["--sbd-pki", args.pki]
    if args.allowed_skips is not None:
        pytest_args += ["--sbd-allowed-skips", args.allowed_skips]
    if args.advisories:
        pytest_args += ["--sbd-advisories", args.advisories]
    for vex in args.vex or []:
        pytest_args += ["--sbd-vex", vex]
    if args.destructive:
        pytest_args.append("--sbd-destructive")
    if args.soak:
        pytest_args.append("--sbd-soak")
    sbom_future = _sbom_in_background(bundle, paths["sbom"])
    progress = for_terminal(sys.stdout, tier)
    code = pytest.main(pytest_args, plugins=[progress] if progress else [])
    if int(code) == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise CliError("the selection ran no check: --check takes check IDs (e.g. --check console-locked), "
                       "-k matches test function names (e.g. -k console_locked); `sbd checks` lists both")
    if int(code) == pytest.ExitCode.USAGE_ERROR:
        raise CliError("the check run refused its arguments (see the message above)")
    if not paths["report"].exists():
        raise CliError(f"the check run ended before writing a report (pytest exit {int(code)})")
    raw = json.loads(paths["report"].read_text())
    notes = list(raw.get("notes", []))
    sbom = None
    try:
        sbom = sbom_future.result()
        sbom["path"] = os.path.relpath(paths["sbom"], paths["report"].parent)
        sbom["describes"] = ("the firmware build flashed by this run" if args.flash else
                             "the firmware build the checks compare with (not flashed by this run: "
                             "firmware-matches-build says whether the board holds it)")
    except SBOMError as exc:
        notes.append(f"No SBOM: {exc}")
    flaws = [f for f in (args.broker_flaws or "").split(",") if f]
    context = run_context(bundle, flaws, features_path=features["path"] if features else None,
                          overrides_path=args.manufacturer_overrides, features=features, docs=args.docs)
    report = build_report(raw["board"], raw["firmware"], raw["checks"], notes, sbom=sbom,
                          tier=raw.get("tier", tier), features=features, context=context)
    write_json(report, paths["report"])
    paths["markdown"].write_text(to_markdown(report))
    paths["html"].write_text(to_html(report))
    written = write_all(report, paths["report"], features, overrides, nvs_keys=_nvs_keys(board))
    _print_verify_table(report)
    print("  ".join(f"{k}: {p}" for k, p in {**paths, **written}.items() if k != "sbom" or sbom is not None))
    not_tested = _not_tested(report, args)
    for line in not_tested:
        print(line)
    s = report["summary"]
    return EXIT_FAIL if s["fail"] or s["error"] or not_tested or int(code) not in (0, 1) else 0


SHORT_BASELINE = {"etsi_en_303_645": "EN303645", "nist_ir_8259a": "IR8259A", "eu_cra": "CRA",
                  "uk_psti": "PSTI", "owasp_isvs": "ISVS", "en_18031_1": "EN18031-1"}


def _nvs_keys(board: Board) -> list[str] | None:
    """The key names in the device's NVS namespace, where the harness reads the flash back (emulated boards):
    for the IXIT, to hold the declared layout against. None where it cannot."""
    from sbd_harness.checks.common import NVS_NS, flash_store, reads_flash
    if not reads_flash(board):
        return None
    try:
        return sorted(key for ns, key in flash_store(board) if ns == NVS_NS)
    except (OSError, ValueError, SbdError):  # an unreadable flash image is no reason to lose the reports
        return None


def _claim(claim: Any) -> str:
    """A claim in the table: its ID, with its strength unless full."""
    if not isinstance(claim, dict):
        return str(claim)
    return claim["id"] if claim.get("strength") == "full" else f"{claim['id']}({claim.get('strength', '?')[0]})"


def _print_verify_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from sbd_harness.reports.report import tier_text
    colours = {"pass": "green", "fail": "red", "skip": "yellow", "error": "magenta"}
    table = Table(title=f"sbd verify: {report['board'].get('name')} (firmware {report['firmware'].get('version')}, "
                        f"{report.get('tier', 'default')} tier)")
    table.add_column("check", no_wrap=True, min_width=max((len(c["id"]) for c in report["checks"]), default=5))
    for col in ("status", "provisions", "detail"):
        table.add_column(col)
    for c in report["checks"]:
        prov = ", ".join(f"{SHORT_BASELINE[k]} {'/'.join(_claim(i) for i in v)}"
                         for k, v in c["provisions"].items() if v)
        table.add_row(c["id"], f"[{colours[c['status']]}]{c['status'].upper()}[/]", prov, c.get("message") or "")
    s = report["summary"]
    table.caption = (f"{s['pass']} pass, {s['fail']} fail, {s['skip']} skip, {s['error']} error\n"
                     f"tier: {tier_text(report)}")
    Console(width=max(120, Console().width)).print(table)


def catalogue() -> list[dict[str, Any]]:
    """The check catalogue as collected (no board needed): each check's ID, title, test function and provisions."""
    import pytest

    from sbd_harness.checks import CHECKS_DIR
    from sbd_harness.pytest_plugin import check_meta
    found: list[dict[str, Any]] = []

    class Collect:
        def pytest_collection_finish(self, session: pytest.Session) -> None:
            for item in session.items:
                meta = check_meta(item)
                if meta:
                    found.append({**meta, "function": item.name})

    code = pytest.main([str(CHECKS_DIR), "-c", str(CHECKS_DIR / "pytest.ini"), "--rootdir", str(CHECKS_DIR),
                        "--collect-only", "-p", "no:terminal", "-p", "no:cacheprovider", *NO_OTHER_PLUGINS],
                       plugins=[Collect()])
    if int(code) != 0:
        raise CliError(f"could not collect the check catalogue (pytest exit {int(code)})")
    return found


def cmd_checks(args: argparse.Namespace) -> int:
    checks = catalogue()
    if args.json:
        print(json.dumps(checks, indent=2))
        return 0
    width = max(len(c["id"]) for c in checks)
    for c in checks:
        print(f"{c['id']:<{width}}  {c['function']:<48}  {c['title']}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checks", help="list the check catalogue: IDs (for --check), test functions (for -k), titles")
    p.add_argument("--json", action="store_true", help="as JSON, with the provisions each check claims")
    p.set_defaults(func=cmd_checks)

    p = sub.add_parser("verify", help="run the conformance checks and write the report")
    p.add_argument("--board", action="append", metavar="NAME",
                   help="an emulated board's name; repeat it, or give a pattern (class-*), to verify several "
                        "boards side by side with one combined report (fleet.json, fleet.md, fleet.junit.xml)")
    p.add_argument("--port", action="append", help="a real board's serial port or rfc2217:// URL (repeatable)")
    p.add_argument("--chip", default="esp32", help="real board type, a folder under boards/ (default esp32)")
    p.add_argument("--baud", type=int, help="console baud rate of a real board (default: its description's)")
    p.add_argument("--place", metavar="NAME",
                   help="a labgrid place: acquired at the coordinator ($LG_COORDINATOR, default 127.0.0.1:20408), "
                        "its serial port used over RFC 2217 and its power switch for resets, released at the end; "
                        "--chip says which board it holds")
    p.add_argument("--place-wait", type=float, default=1800, metavar="SECONDS",
                   help="how long to wait while another client holds the place (default 1800)")
    p.add_argument("--boards", metavar="FILE",
                   help="a file naming the boards, one per line: an emulated board's name, or a real board's "
                        "PORT [CHIP] [BROKER]")
    p.add_argument("--jobs", type=int, help="with several boards: how many are verified at once (default: all)")
    p.add_argument("--firmware", help="the build to compare with (default: the project's firmware/)")
    p.add_argument("--docs", help="the lab's copy of the documents the device points to: SECURITY.md, "
                                  "support.md (default: $SBD_DOCS_DIR; the project's docs/ for the reference "
                                  "build only: a product's document checks skip without its own)")
    p.add_argument("--report", help="JSON report path (default: reports/<board>/report.json); the Markdown, "
                                    "HTML, JUnit XML and SBOM files go beside it unless given")
    p.add_argument("--markdown", help="Markdown summary path (default: the report path with .md)")
    p.add_argument("--html", help="self-contained HTML page path (default: the report path with .html)")
    p.add_argument("--junit", help="JUnit XML path (default: the report path with .junit.xml)")
    p.add_argument("--flash", action="store_true", help="flash the firmware before checking")
    p.add_argument("--check", action="append", metavar="ID",
                   help="only the check with this ID (repeatable), e.g. --check console-locked")
    p.add_argument("-k", help="only checks whose test function matches this pytest expression (a selection "
                              "is reported beside the full run, as report.selected.json, and fails if a "
                              "selected check is not tested)")
    p.add_argument("--broker", help="ADDR:PORT the board was provisioned with; the checks run the lab broker "
                                    "there (default for an emulated board: the lab address and its own port, as "
                                    "`sbd board list` shows)")
    p.add_argument("--broker-flaws", default="",
                   help="run the lab broker with deliberate flaws, for labs: comma-separated, from "
                        "open-acl, no-crl, anonymous, weak-tls, clientid-takeover, monitor-by-cn, long-lived-cert")
    p.add_argument("--manufacturer-overrides", metavar="FILE",
                   help="JSON with what only the manufacturer can state, for the ICS and IXIT beside the report: "
                        "{\"ics\": {ID: {\"support\": \"Y|N|N/A\", \"detail\": ...}}, \"ixit\": {TABLE: [...]}}")
    add_pki(p)
    p.add_argument("--advisories", metavar="FILE",
                   help="advisory feed in OSV format for no-known-exploitable-vulnerabilities (default: the "
                        "firmware's advisories.osv.json, a snapshot to refresh)")
    p.add_argument("--vex", action="append", metavar="FILE",
                   help="the manufacturer's VEX statements (affected, not_affected with a justification, fixed), "
                        "overriding the firmware's vex.json (repeatable)")
    p.add_argument("--allowed-skips", metavar="IDS",
                   help="CI policy: the comma-separated check IDs allowed to skip on this board (e.g. "
                        "chip-security-fuses on an emulated one); any other skip fails the run (exit 1). "
                        "An empty value allows none")
    p.add_argument("--destructive", action="store_true",
                   help="also run checks that change the board for good (factory reset)")
    p.add_argument("--soak", action="store_true",
                   help="the soak tier: every check in its long form (many rounds, every fuzz case and many "
                        "random ones, the long series); by default each runs its shortest form that can still fail")
    p.set_defaults(func=cmd_verify)

