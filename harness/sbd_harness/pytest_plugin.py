"""pytest plugin: boards as fixtures, checks tagged with provisions, reports.

For users' own suites (`pytest --board emulated` or `--board esp32 --port
/dev/ttyUSB0`) and for `sbd verify`, which runs the check catalogue with it.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from sbd_harness.boards.base import Board, BoardError, BootCapture
from sbd_harness.errors import SbdError
from sbd_harness.lab.broker import FLAWS as BROKER_FLAWS
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.reports.claims import claims_for, normalise, problems as claim_problems
from sbd_harness.reports.provisions import CATALOGUE, unknown_ids
from sbd_harness.reports.report import build_report, to_html, to_markdown, write_json

PROVISION_KEYS = tuple(CATALOGUE)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("sbd", "security-by-design boards")
    g.addoption("--sbd-board", default=None,
                help="board type: 'emulated' (a fresh emulated ESP32) or a folder name under boards/ (esp32, ...)")
    g.addoption("--sbd-board-name", default=None, help="an emulated board already started with `sbd board start NAME`")
    g.addoption("--sbd-port", default=None, help="serial port or rfc2217:// URL of a real board")
    g.addoption("--sbd-place", default=None, metavar="NAME",
                help="a labgrid place (coordinator: $LG_COORDINATOR), acquired for the session and released "
                     "at its end; --sbd-board says which board it holds (default esp32)")
    g.addoption("--sbd-place-wait", type=float, default=1800, metavar="SECONDS",
                help="how long to wait while another client holds the place (default 1800)")
    g.addoption("--sbd-firmware", default=None, help="firmware folder (default: the project's firmware/)")
    g.addoption("--sbd-docs", default=None,
                help="the lab's copy of the published documents the device points to (SECURITY.md, support.md); "
                     "default: $SBD_DOCS_DIR, or the project's docs/ for the reference build only (a product's "
                     "document checks skip without its own)")
    g.addoption("--sbd-no-flash", action="store_true", help="use the firmware already on the board")
    g.addoption("--sbd-pki", default=None, help="the lab CA's folder (default: <state>/pki)")
    g.addoption("--sbd-destructive", action="store_true",
                help="also run checks that change the board for good (factory reset)")
    g.addoption("--sbd-soak", action="store_true",
                help="the soak tier: each check in its long form (many rounds, every fuzz case, long series) "
                     "instead of the shortest form that can still fail")
    g.addoption("--sbd-broker", default=os.environ.get("SBD_BROKER"),
                help="ADDR:PORT where the board was provisioned to find its broker; the checks run the lab "
                     "broker there (default: $SBD_BROKER, or for an emulated board the lab address and its own port, "
                     "as `sbd board list` shows)")
    g.addoption("--sbd-broker-flaws", default="",
                help="comma-separated deliberate broker misconfigurations, for labs and the harness's own "
                     "tests: " + ", ".join(sorted(BROKER_FLAWS)))
    g.addoption("--sbd-check", action="append", default=[], metavar="ID",
                help="run only the check with this ID (repeatable); an ID that names no check is an error")
    g.addoption("--sbd-allowed-skips", default=None, metavar="IDS",
                help="CI policy: the comma-separated check IDs allowed to skip on this kind of board (e.g. "
                     "chip-security-fuses on an emulated one); any other check that skips fails the run. "
                     "An empty value allows none")
    g.addoption("--sbd-advisories", default=None, metavar="FILE",
                help="the advisory feed (OSV records) for no-known-exploitable-vulnerabilities (default: the "
                     "firmware's advisories.osv.json)")
    g.addoption("--sbd-vex", action="append", default=[], metavar="FILE",
                help="VEX statements that override the firmware's vex.json (repeatable)")
    g.addoption("--sbd-report", default=None, help="write the JSON conformance report here")
    g.addoption("--sbd-markdown", default=None, help="write the Markdown summary here")
    g.addoption("--sbd-html", default=None, help="write the self-contained HTML report here")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config.option, "verbose"):
        # `sbd verify` runs pytest with -p no:terminal, which owns --verbose; pytest 8.0's assertion
        # messages read config.option.verbose, and a failing comparison became an error there.
        config.option.verbose = 0
    config.addinivalue_line(
        "markers",
        "sbd_check(id, title, etsi_en_303_645=[], nist_ir_8259a=[], eu_cra=[], uk_psti=[], owasp_isvs=[], "
        "en_18031_1=[], "
        "subject='device'): a conformance check and the provisions it covers, each a claim "
        "{'id': ..., 'strength': 'full'|'partial'|'supporting', 'reason': ...} or a bare ID (supporting); "
        "the catalogue's own checks take theirs from sbd_harness/reports/claims.py")
    for option in REPORT_OPTIONS:
        path = config.getoption(option)
        if path and not Path(path).resolve().parent.is_dir():
            raise pytest.UsageError(f"{option} {path}: the folder {Path(path).parent} does not exist "
                                    "(the report is written there at the end of the run)")
    workers = _xdist_workers(config)
    if workers and (config.getoption("--sbd-board-name") or config.getoption("--sbd-port")
                    or config.getoption("--sbd-place")):
        raise pytest.UsageError(f"one board cannot serve {workers} pytest-xdist workers at once: run without -n, "
                                "or leave out --sbd-board-name/--sbd-port so that each worker starts a fresh "
                                "emulated board of its own")
    if _reporting(config) and not _xdist_worker(config):  # under xdist, the controller writes the one report
        config.pluginmanager.register(ReportCollector(config), "sbd-report-collector")
    allowed = config.getoption("--sbd-allowed-skips")
    if allowed is not None and not _xdist_worker(config):
        config.pluginmanager.register(SkipPolicy({i.strip() for i in allowed.split(",") if i.strip()}),
                                      "sbd-skip-policy")
    if config.getoption("xmlpath", None):
        config.pluginmanager.register(JUnitCheckNames(config.getoption("xmlpath")), "sbd-junit-check-names")


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _xdist_workers(config: pytest.Config) -> int:
    """How many pytest-xdist workers this (controller) run starts; 0 without xdist or on a worker."""
    if _xdist_worker(config) or getattr(config.option, "dist", "no") == "no":
        return 0
    n = getattr(config.option, "numprocesses", None) or 0
    return n if isinstance(n, int) else 2  # "auto"/"logical": at least two


MARKER_FIELDS = ("id", "title")  # required, beside the baselines' keywords (PROVISION_KEYS)
MARKER_OPTIONS = ("subject",)  # optional: what the check is about ("device" unless said)


def check_meta(item: pytest.Item) -> dict[str, Any] | None:
    """A check's ID, title, subject and provision claims. The catalogue's checks take their claims from
    `reports/claims.py` (one reviewed mapping) and may not also declare them on their marker; a user's own
    check declares them on its marker, as claim objects or bare IDs (bare: supporting, never verified)."""
    mark = item.get_closest_marker("sbd_check")
    if mark is None:
        return None
    kw = dict(mark.kwargs)
    _validate_marker(item.nodeid, mark.args, kw)
    declared = {k: list(kw.get(k, [])) for k in PROVISION_KEYS}
    bad = unknown_ids(declared)
    if bad:
        raise pytest.UsageError(f"{item.nodeid} cites unknown provisions: {bad}")
    central = claims_for(kw["id"])
    if central is not None:
        if any(declared.values()):
            raise pytest.UsageError(f"{item.nodeid}: the provisions of check {kw['id']} are declared in "
                                    "sbd_harness/reports/claims.py, not on its marker")
        provisions, subject = central["provisions"], central["subject"]
    else:
        provisions, subject = normalise(declared), kw.get("subject", "device")
    bad = claim_problems(provisions)
    if bad:
        raise pytest.UsageError(f"{item.nodeid} cites unknown provisions or bad claims: {bad}")
    return {"id": kw["id"], "title": kw["title"], "subject": subject, "provisions": provisions}


def _validate_marker(nodeid: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    """A usage error, not a traceback or a silently dropped claim, for a malformed sbd_check marker."""
    import difflib
    usage = f"sbd_check(id=..., title=..., {'=[...], '.join(PROVISION_KEYS)}=[...])"
    if args:
        raise pytest.UsageError(f"{nodeid}: sbd_check takes keywords only: {usage}")
    missing = [k for k in MARKER_FIELDS if not isinstance(kw.get(k), str) or not kw[k].strip()]
    if missing:
        raise pytest.UsageError(f"{nodeid}: sbd_check needs {' and '.join(missing)} (a non-empty string): {usage}")
    for key in sorted(set(kw) - set(MARKER_FIELDS) - set(MARKER_OPTIONS) - set(PROVISION_KEYS)):
        close = difflib.get_close_matches(key, PROVISION_KEYS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise pytest.UsageError(f"{nodeid}: sbd_check has no keyword {key!r}{hint}; "
                                f"the baselines are {', '.join(PROVISION_KEYS)}")
    for key in PROVISION_KEYS:
        ids = kw.get(key, [])
        if isinstance(ids, (str, dict)) or not all(isinstance(i, (str, dict)) for i in ids):
            raise pytest.UsageError(f"{nodeid}: sbd_check {key}= takes a list of provision IDs, e.g. {key}=[\"...\"], "
                                    "or of claims {'id': ..., 'strength': ..., 'reason': ...}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    metas = {item: check_meta(item) for item in items}  # fails collection on an invented provision ID
    wanted = config.getoption("--sbd-check")
    if wanted:
        known = {m["id"] for m in metas.values() if m}
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise pytest.UsageError(f"no check with the ID {', '.join(unknown)}; the catalogue has: "
                                    f"{', '.join(sorted(known))}")
        keep = [i for i in items if metas[i] and metas[i]["id"] in wanted]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
    # Checks that change the board for good run last, after every other check saw it; the factory
    # reset last of all (the others need the device provisioned).
    items.sort(key=lambda item: ("sbd_destructive" in getattr(item, "fixturenames", ()),
                                 (metas[item] or {}).get("id") == "factory-reset-erases-identity"))


# fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sbd_bundle(pytestconfig: pytest.Config) -> FirmwareBundle:
    fw = pytestconfig.getoption("--sbd-firmware")
    return FirmwareBundle.from_dir(Path(fw) if fw else None)


def _progress_printer(label: str):
    try:
        from rich.progress import Progress
    except ImportError:  # pragma: no cover
        return None, None
    progress = Progress(transient=True)
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


@pytest.fixture(scope="session")
def sbd_board(pytestconfig: pytest.Config, sbd_bundle: FirmwareBundle) -> Iterator[Board]:
    """The board under test, with the firmware flashed (unless --no-flash)."""
    from sbd_harness.boards.emulated import EmulatedBoard
    from sbd_harness.boards.serial_board import SerialBoard
    from sbd_harness.boards.flashing import flash_firmware

    kind = pytestconfig.getoption("--sbd-board")
    name = pytestconfig.getoption("--sbd-board-name")
    port = pytestconfig.getoption("--sbd-port")
    place = pytestconfig.getoption("--sbd-place")
    owned = None
    held = contextlib.ExitStack()
    if sum(map(bool, (name, port, place))) > 1:
        raise pytest.UsageError("give one of --sbd-board-name, --sbd-port and --sbd-place")
    if place:
        from sbd_harness.farm.place import hold
        try:  # held for the session, released at its end (sbd verify --place holds it already)
            board = held.enter_context(hold(place, kind or "esp32", wait=pytestconfig.getoption("--sbd-place-wait")))
        except SbdError as exc:
            raise pytest.UsageError(str(exc)) from exc
    elif name:
        board: Board = EmulatedBoard(name)
        if not board.is_running():
            raise pytest.UsageError(f"emulated board {name!r} is not running: sbd board start {name}")
    elif port:
        try:
            board = SerialBoard.from_description(port, "esp32" if kind in (None, "emulated") else kind)
        except SbdError as exc:  # e.g. --sbd-board names no folder of boards/
            raise pytest.UsageError(str(exc)) from exc
    elif kind in (None, "emulated"):
        owned = EmulatedBoard(f"pytest-{os.getpid()}")
        owned.start()
        board = owned
        pytestconfig.stash[OWN_BOARD_KEY] = True
    else:
        raise pytest.UsageError(f"--sbd-board {kind} needs --sbd-port (the board's serial port)")
    try:
        if not pytestconfig.getoption("--sbd-no-flash"):
            live = next((p for p in pytestconfig.pluginmanager.get_plugins()
                         if getattr(p, "sbd_verify_progress", False)), None)
            if live is not None:  # sbd verify's progress display: one live display at a time
                with live.step(f"flashing {board.name}") as update:
                    flash_firmware(board, sbd_bundle, update)
            else:
                progress, update = _progress_printer(f"flashing {board.name}")
                if progress:
                    with progress:
                        flash_firmware(board, sbd_bundle, update)
                else:
                    flash_firmware(board, sbd_bundle)
        yield board
    finally:
        held.close()
        if owned is not None:
            owned.remove()


@pytest.fixture(scope="session")
def sbd_boot(sbd_board: Board) -> BootCapture:
    """The serial output of one fresh boot of the board under test."""
    try:
        return sbd_board.capture_boot("hard")
    except BoardError as exc:
        pytest.fail(f"could not capture a boot: {exc}")


@pytest.fixture(scope="session")
def sbd_ca(pytestconfig: pytest.Config):
    """The lab CA that provisions boards (`sbd pki init`)."""
    from sbd_harness.identity.pki import LabCA
    pki = pytestconfig.getoption("--sbd-pki")
    return LabCA(Path(pki) if pki else None)


def _broker_endpoint(config: pytest.Config, board: Board) -> tuple[str, int] | None:
    from sbd_harness.lab.broker import lab_address
    given = config.getoption("--sbd-broker")
    if given is None:
        port = getattr(board, "broker_port", None)  # an emulated board's own lab broker port
        return (lab_address(), port) if port else None
    addr, sep, port = given.rpartition(":")
    if not sep or not addr or not port.isdigit() or not 0 < int(port) < 65536:
        raise pytest.UsageError(f"--sbd-broker {given!r}: expected ADDR:PORT, e.g. 192.168.1.10:8883")
    return addr, int(port)


@pytest.fixture(scope="session")
def sbd_broker(pytestconfig: pytest.Config, sbd_board: Board, sbd_ca) -> Iterator[Any]:
    """The lab's mosquitto, where the board expects its broker, for the whole run."""
    from sbd_harness.lab.broker import Broker, BrokerError
    if not sbd_ca.exists():
        pytest.skip(f"no lab CA in {sbd_ca.dir}: the broker needs one (sbd pki init, or --pki)")
    endpoint = _broker_endpoint(pytestconfig, sbd_board)
    if endpoint is None:
        pytest.skip("give --broker ADDR:PORT (the broker address the board was provisioned with)")
    flaws = [f for f in pytestconfig.getoption("--sbd-broker-flaws").split(",") if f]
    if getattr(sbd_board, "kind", "") == "emulated":  # its clock starts in 2000: the lab's NTP server sets it
        from sbd_harness.lab import ntp
        try:
            ntp.ensure_running()
        except ntp.NtpError as exc:
            raise pytest.UsageError(str(exc)) from exc
    try:
        broker = Broker(sbd_ca, address=endpoint[0], port=endpoint[1], flaws=flaws).start()
    except BrokerError as exc:
        raise pytest.UsageError(f"cannot run the lab broker at {endpoint[0]}:{endpoint[1]}: {exc}") from exc
    try:
        yield broker
    finally:
        broker.stop(remove=True)


@pytest.fixture(scope="session")
def sbd_online(pytestconfig: pytest.Config, sbd_board: Board, sbd_boot: BootCapture, sbd_broker: Any,
               sbd_ca: Any) -> Iterator[Any]:
    """The board at the lab broker, for a product's own tests: `.device_id`, `.birth` (its birth
    message), `.telemetry(timeout)` (its next reading), `.reconnect()` and `.watcher` (every message
    on its topics: `.watcher.wait_for(match, timeout)`, `.watcher.publish(topic, payload)`).

    A fresh emulated board that the plugin started is provisioned and locked here, with the lab CA
    (--sbd-pki); any other board must already be (`sbd provision`), else the test fails saying so."""
    from sbd_harness.boards import lifecycle
    boot = sbd_boot.boot_line or {}
    security = boot.get("security", {})
    if pytestconfig.stash.get(OWN_BOARD_KEY, False) and not security.get("provisioned"):
        device_id = lifecycle.provisioned(sbd_board, sbd_ca, broker_port=sbd_broker.port).device_id
    elif security.get("provisioned") and security.get("console") == "locked":
        device_id = boot["device_id"]
    else:
        pytest.fail(f"{sbd_board.name} is not provisioned and locked, so it does not go online: "
                    f"sbd provision --board {sbd_board.name}", pytrace=False)
    try:
        with lifecycle.online(sbd_board, sbd_broker, device_id) as online:
            yield online
    except BoardError as exc:
        pytest.fail(str(exc), pytrace=False)


def run_tier(config: pytest.Config) -> str:
    """Which tier this run is: "default" (every check in its shortest form that can still fail on a
    broken device) or "soak" (--sbd-soak: the long forms)."""
    return "soak" if config.getoption("--sbd-soak") else "default"


@pytest.fixture(scope="session")
def sbd_soak(pytestconfig: pytest.Config) -> bool:
    """True in the soak tier (--sbd-soak): a check runs its long form (many rounds, every case)."""
    return run_tier(pytestconfig) == "soak"


@pytest.fixture
def sbd_destructive(pytestconfig: pytest.Config) -> None:
    """Skips a check that changes the board for good unless --destructive was given."""
    if not pytestconfig.getoption("--sbd-destructive"):
        pytest.skip("destructive (it factory-resets the board): run with --destructive")


@pytest.fixture
def sbd_evidence(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What a check saw; it goes into the report beside the verdict."""
    evidence: dict[str, Any] = {}
    request.node.sbd_evidence = evidence
    return evidence


# report ------------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    meta = check_meta(item)
    if meta is not None:  # into JUnit XML as properties, whatever the outcome
        item.user_properties.append(("check_id", meta["id"]))
        item.user_properties.append(("provisions", json.dumps(meta["provisions"])))



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    meta = check_meta(item)
    if meta is None:
        return
    report.sbd_meta = meta
    report.sbd_evidence = getattr(item, "sbd_evidence", {})
    if _xdist_worker(item.config):  # travels to the controller: plain JSON values only
        report.sbd_evidence = json.loads(json.dumps(report.sbd_evidence, default=str))
    if report.when == "call":
        if report.failed and call.excinfo is not None and not call.excinfo.errisinstance(AssertionError):
            report.sbd_error = True


class ReportCollector:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.results: dict[str, dict[str, Any]] = {}
        self.started: dict[str, float] = {}
        self.board_info: dict[str, Any] = {}
        self.firmware: dict[str, Any] = {}

        self.worker_runs: list[dict[str, Any]] = []  # under pytest-xdist: what each worker's board was

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.started[nodeid] = time.monotonic()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        run = getattr(node, "workeroutput", {}).get("sbd_run")
        if run:
            self.worker_runs.append(run)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        meta = getattr(report, "sbd_meta", None)
        if meta is None:
            return
        entry = self.results.setdefault(report.nodeid, {
            **meta, "status": "pass", "evidence": {}, "duration_s": 0.0, "message": ""})
        entry["evidence"] = report.sbd_evidence
        entry["duration_s"] = round(time.monotonic() - self.started.get(report.nodeid, time.monotonic()), 3)
        if report.skipped:
            entry["status"] = "skip"
            entry["message"] = _skip_reason(report)
        elif report.failed:
            if report.when != "call" or getattr(report, "sbd_error", False):
                entry["status"] = "error"
            elif entry["status"] != "error":
                entry["status"] = "fail"
            entry["message"] = _short_failure(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        board = session.config.stash.get(BOARD_INFO_KEY, {})
        firmware = session.config.stash.get(FIRMWARE_INFO_KEY, {})
        notes = list(session.config.stash.get(NOTES_KEY, []))
        notes += session.config.stash.get(DISALLOWED_SKIPS_KEY, [])  # SkipPolicy ran just before
        if self.worker_runs:  # pytest-xdist: the workers' runs merge into one report
            board, firmware = self.worker_runs[0]["board"], self.worker_runs[0]["firmware"]
            notes += [n for run in self.worker_runs for n in run["notes"] if n not in notes]
            names = sorted({run["board"].get("name", "?") for run in self.worker_runs})
            if len(names) > 1:
                notes.append(f"The checks ran on {len(names)} boards, one per pytest-xdist worker: "
                             f"{', '.join(names)}; the board above is the first.")
        features, context = session.config.stash.get(RUN_KEY, (None, {}))
        if self.worker_runs and self.worker_runs[0].get("facts"):
            features, context = self.worker_runs[0]["facts"]
        report = build_report(board, firmware, list(self.results.values()), notes, tier=run_tier(self.config),
                              features=features, context=context)
        json_path = self.config.getoption("--sbd-report")
        md_path = self.config.getoption("--sbd-markdown")
        if json_path:
            write_json(report, Path(json_path))
        if md_path:
            Path(md_path).write_text(to_markdown(report))
        html_path = self.config.getoption("--sbd-html")
        if html_path:
            Path(html_path).write_text(to_html(report))


DISALLOWED_SKIPS_KEY = pytest.StashKey[list]()
OWN_BOARD_KEY = pytest.StashKey[bool]()  # the plugin started the board (a fresh emulated one) itself
BOARD_INFO_KEY = pytest.StashKey[dict]()
FIRMWARE_INFO_KEY = pytest.StashKey[dict]()
NOTES_KEY = pytest.StashKey[list]()
RUN_KEY = pytest.StashKey[tuple]()


def run_facts(bundle: FirmwareBundle, broker_flaws: list[str],
              docs: str | None = None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The firmware's feature declaration (read as data) and the run's context, for the report: the
    product under test and its documents (`docs`, the --sbd-docs folder)."""
    from sbd_harness.release.product import ProductError
    from sbd_harness.reports import features as feature_decl
    from sbd_harness.reports.provenance import run_context
    try:
        decl = feature_decl.load(bundle.source) if bundle.source else None
        return decl, run_context(bundle, broker_flaws, features_path=decl["path"] if decl else None,
                                 features=decl, docs=docs)
    except (feature_decl.FeaturesError, ProductError) as exc:
        raise pytest.UsageError(str(exc)) from exc


@pytest.fixture(scope="session", autouse=True)
def _sbd_describe_run(request: pytest.FixtureRequest) -> None:
    """Puts the board and firmware under test into the report, when a check used them."""
    config = request.config
    if not _reporting(config):
        return
    board = request.getfixturevalue("sbd_board")
    bundle = request.getfixturevalue("sbd_bundle")
    config.stash[BOARD_INFO_KEY] = board.describe()
    config.stash[FIRMWARE_INFO_KEY] = {"version": bundle.version, "sha256": bundle.sha256,
                                       "files": len(bundle.files)}
    notes = []
    weakened = board.describe().get("weakened_by_loopback") or []
    if weakened:
        notes.append("No network namespace (not root): the board shares the host's loopback, so "
                     + "; ".join(weakened) + ".")
    config.stash[NOTES_KEY] = notes
    config.stash[RUN_KEY] = run_facts(bundle, [f for f in config.getoption("--sbd-broker-flaws").split(",") if f],
                                      config.getoption("--sbd-docs"))
    if _xdist_worker(config):  # handed to the controller, which writes the report (pytest_testnodedown)
        config.workeroutput["sbd_run"] = json.loads(json.dumps(
            {"board": config.stash[BOARD_INFO_KEY], "firmware": config.stash[FIRMWARE_INFO_KEY], "notes": notes,
             "facts": list(config.stash[RUN_KEY])},
            default=str))


REPORT_OPTIONS = ("--sbd-report", "--sbd-markdown", "--sbd-html")


class SkipPolicy:
    """--sbd-allowed-skips: a check that skips without being on the list fails the run. On an
    emulated board some checks cannot run (eFuses); CI lists those, and anything else that
    quietly skips (a missing CA, a board not provisioned) turns the build red."""

    def __init__(self, allowed: set[str]):
        self.allowed = allowed
        self.known: set[str] = set()
        self.skipped: dict[str, str] = {}

    @pytest.hookimpl(tryfirst=True)  # before --sbd-check and -k narrow the items
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        self.known = {m["id"] for m in map(check_meta, items) if m}
        unknown = sorted(self.allowed - self.known) if self.known else []
        if unknown:
            raise pytest.UsageError(f"--sbd-allowed-skips names no check: {', '.join(unknown)}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        meta = getattr(report, "sbd_meta", None)
        if meta and report.skipped and meta["id"] not in self.allowed:
            self.skipped[meta["id"]] = _skip_reason(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.skipped:
            return
        lines = [f"not tested, and not allowed to skip: {cid}: {why}" for cid, why in sorted(self.skipped.items())]
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        for line in lines:
            if tr is not None:
                tr.write_line(line, red=True)
        session.config.stash[DISALLOWED_SKIPS_KEY] = lines
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


class JUnitCheckNames:
    """Names each check's JUnit test case after its check ID (with the parameters, if any), so
    that CI dashboards list `console-locked`, not `test_console_locked`; the test function stays
    in the `function` property. Runs after pytest's junitxml has written the file."""

    def __init__(self, path: str):
        self.path = Path(path)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if _xdist_worker(session.config) or not self.path.is_file():
            return
        import xml.etree.ElementTree as ET
        tree = ET.parse(self.path)
        changed = False
        for case in tree.iter("testcase"):
            props = {p.get("name"): p for p in case.iter("property")}
            if "check_id" not in props:
                continue
            old = case.get("name", "")
            params = old[old.index("["):] if "[" in old else ""
            case.set("name", props["check_id"].get("value", "") + params)
            ET.SubElement(case.find("properties"), "property", name="function", value=old)
            changed = True
        if changed:
            tree.write(self.path, encoding="utf-8", xml_declaration=True)


def _reporting(config: pytest.Config) -> bool:
    return any(config.getoption(o) for o in REPORT_OPTIONS)


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def _short_failure(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0][:500]
    return str(report.longrepr).strip().splitlines()[-1][:500] if report.longrepr else ""
