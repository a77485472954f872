"""`sbd`: boards, flashing, console and verification from the command line.

Exit status: 0 on success, 1 when `sbd verify` found a failing check or an
error, 2 on bad input or a board that does not answer (with a message saying
what to do).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from .boards.base import Board, BoardError
from .bundle import BundleError, FirmwareBundle
from .emulator.flash_image import PartitionTableError
from .pki import LabCA, PKIError

EXIT_FAIL, EXIT_USAGE = 1, 2
ONLINE_TIMEOUT_S = 75  # longer than the device's longest reconnect backoff (60 s)
COMMIT_TIMEOUT_S = 180  # an update's trial: restart, reconnect, commit; or time out (90 s), restart, revert


class CliError(Exception):
    pass


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _emulated(name: str):
    from .boards.emulated import EmulatedBoard
    return EmulatedBoard(name)


def _existing(name: str):
    """An emulated board that was created (running or not); a clear error otherwise."""
    board = _emulated(name)
    if not board.state.exists():
        raise CliError(f"no emulated board named {name!r} (sbd board start {name})")
    return board


def _target(args: argparse.Namespace) -> Board:
    """The board named by --board (emulated) or --port (real)."""
    from .boards.serial_board import SerialBoard
    if getattr(args, "board", None) and getattr(args, "port", None):
        raise CliError("give either --board NAME (emulated) or --port PORT (real board), not both")
    if getattr(args, "board", None):
        board = _emulated(args.board)
        if not board.is_running():
            raise CliError(f"emulated board {args.board!r} is not running: sbd board start {args.board}")
        return board
    if getattr(args, "port", None):
        return SerialBoard(args.port, chip=getattr(args, "chip", "esp32"), baudrate=getattr(args, "baud", 115200))
    raise CliError("which board? give --board NAME (emulated) or --port PORT (real board)")


# board ------------------------------------------------------------------------------------
def cmd_board_start(args: argparse.Namespace) -> int:
    _print_json(_emulated(args.name).start())
    return 0


def cmd_board_stop(args: argparse.Namespace) -> int:
    board = _existing(args.name)
    board.stop()
    return 0


def cmd_board_rm(args: argparse.Namespace) -> int:
    board = _existing(args.name)
    board.remove()
    return 0


def cmd_board_list(args: argparse.Namespace) -> int:
    from .boards.emulated import EmulatedBoard
    boards = [b.describe() for b in EmulatedBoard.all()]
    if args.json:
        _print_json(boards)
        return 0
    if not boards:
        print("no emulated boards (sbd board start NAME)")
    for b in boards:
        state = "running" if b["running"] else "stopped"
        print(f"{b['name']:<20} {state:<8} {b['serial'] or '-':<14} {b['address'] or '-':<15} id {b['unique_id']}")
    return 0


def cmd_board_reset(args: argparse.Namespace) -> int:
    kind = "soft" if args.soft else "power-cut" if args.power_cut else "hard"
    board = _emulated(args.name)
    if not board.is_running():
        raise CliError(f"emulated board {args.name!r} is not running")
    board.reset(kind)
    return 0


def cmd_board_erase(args: argparse.Namespace) -> int:
    board = _existing(args.name)
    board.erase_flash()
    if board.is_running():
        board.reset("power-cut")
    return 0


def cmd_board_button(args: argparse.Namespace) -> int:
    _emulated(args.name).press_boot_button(not args.release)
    return 0


def cmd_board_link(args: argparse.Namespace) -> int:
    _emulated(args.name).set_link(args.state == "up")
    return 0


def cmd_board_log(args: argparse.Namespace) -> int:
    board = _existing(args.name)
    sys.stdout.write(board.serial_log()[-args.bytes:])
    return 0


# firmware ------------------------------------------------------------------------------
def _bundle(args: argparse.Namespace) -> FirmwareBundle:
    return FirmwareBundle.from_dir(Path(args.firmware) if args.firmware else None)


def _flash_profile(args: argparse.Namespace) -> tuple[Any, list[str] | None]:
    """The profile and mistakes asked for, checked before any board is touched."""
    from .profiles import ProfileError, get_profile, select_mistakes
    mistakes = args.mistakes.split(",") if args.mistakes is not None else None
    try:
        profile = get_profile(args.profile)
        select_mistakes(profile, mistakes)
    except ProfileError as exc:
        raise CliError(str(exc)) from exc
    if not profile.labelled and args.build_dir:
        raise CliError(f"--build-dir is for a profile that is built (--profile insecure), not {profile.name}")
    return profile, mistakes


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_") or "board"


def cmd_flash(args: argparse.Namespace) -> int:
    from .flashing import flash_firmware
    from .profiles import WARNING, ProfileError, build, read_marker
    profile, mistakes = _flash_profile(args)
    build_dir = None
    if not profile.labelled:
        bundle = _bundle(args)
    board = _target(args)
    if profile.labelled:
        # A patched copy, kept where `sbd verify --firmware` can compare the board with it.
        build_dir = Path(args.build_dir) if args.build_dir else Path("build") / "profiles" / _safe_name(board.name)
        try:
            build(profile.name, build_dir, mistakes, Path(args.firmware) if args.firmware else None)
        except ProfileError as exc:
            raise CliError(str(exc)) from exc
        bundle = FirmwareBundle.from_dir(build_dir)
    if args.micropython:
        if board.kind != "serial":
            raise CliError("--micropython writes a .bin to a real board; emulated boards already run MicroPython")
        spec = _board_spec(args.chip)
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
        target = f"--board {board.name}" if board.kind == "emulated" else f"--port {board.port}"
        print(f"profile {profile.name}: {WARNING}\n"
              f"mistakes: {', '.join(made) or 'none'}\n"
              f"build: {build_dir}\n"
              f"check it with: sbd verify {target} --firmware {build_dir}")
    return 0


def _board_spec(chip: str) -> dict[str, Any]:
    from .paths import boards_dir
    path = boards_dir() / chip / "board.json"
    if not path.exists():
        known = sorted(p.name for p in boards_dir().iterdir() if (p / "board.json").exists())
        raise CliError(f"no board description {path}; known: {', '.join(known)}")
    return json.loads(path.read_text())


def cmd_console(args: argparse.Namespace) -> int:
    board = _target(args)
    print(f"sbd: console on {board.port} (exit with Ctrl-] or Ctrl-x)", file=sys.stderr)
    os.execvp(sys.executable, [sys.executable, "-m", "mpremote", "connect", board.port, "resume", "repl"])
    return 0  # pragma: no cover


def cmd_bootline(args: argparse.Namespace) -> int:
    board = _target(args)
    capture = board.capture_boot("soft" if args.soft else "hard", timeout=args.timeout)
    if capture.boot_line is None:
        sys.stderr.write(capture.transcript[-2000:] + "\n")
        raise CliError(f"no boot line from {board.name} within {args.timeout}s")
    _print_json(capture.boot_line)
    return 0


# PKI and provisioning ---------------------------------------------------------------
def _ca(args: argparse.Namespace) -> LabCA:
    return LabCA(Path(args.pki) if getattr(args, "pki", None) else None)


def cmd_pki_init(args: argparse.Namespace) -> int:
    ca = _ca(args)
    ca.init()
    from .pki import fingerprint
    _print_json({"pki": str(ca.dir), "ca_certificate": str(ca.cert_path), "crl": str(ca.crl_path),
                 "ca_sha256": fingerprint(ca.certificate)})
    return 0


def cmd_pki_show(args: argparse.Namespace) -> int:
    ca = _ca(args)
    from .pki import fingerprint
    index = ca.index()
    _print_json({"pki": str(ca.dir), "ca_subject": ca.certificate.subject.rfc4514_string(),
                 "ca_sha256": fingerprint(ca.certificate),
                 "devices": {d: {"fingerprint": e["fingerprint"], "revoked": e["serial"] in index["revoked"]}
                             for d, e in index["devices"].items()}})
    return 0


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    ca = _ca(args)
    ca.revoke(args.device_id)
    print(f"revoked {args.device_id}; CRL: {ca.crl_path}")
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from .provisioning import provision
    board = _target(args)
    ca = _ca(args)
    if not ca.exists():
        raise CliError(f"no CA in {ca.dir}: run `sbd pki init` first")
    settings = None
    if args.wifi_ssid or args.broker:
        if not (args.wifi_ssid and args.broker and os.environ.get("SBD_WIFI_PSK")):
            raise CliError("give --wifi-ssid and --broker ADDR[:PORT], and the passphrase in SBD_WIFI_PSK")
        addr, _, port = args.broker.partition(":")
        settings = {"wifi_ssid": args.wifi_ssid, "wifi_psk": os.environ["SBD_WIFI_PSK"], "broker_addr": addr,
                    "broker_port": int(port or 8883), "ntp_host": args.ntp}
    result = provision(board, ca, lock=not args.no_lock, settings=settings)
    cert = result.issued.certificate
    _print_json({"device_id": result.device_id, "subject": cert.subject.rfc4514_string(),
                 "fingerprint_sha256": result.issued.fingerprint, "serial": format(cert.serial_number, "x"),
                 "not_after": cert.not_valid_after_utc.isoformat(), "locked": not args.no_lock,
                 "boot_line": result.boot_line})
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    board = _target(args)
    ca = _ca(args)
    device_id = args.device or _device_id_of(board)
    line = ca.sign_command(device_id, args.name)
    reply = board.console_request(line, follow="status" if args.name == "status" else None)
    _print_json(reply)
    return 0 if reply.get("ok") else EXIT_FAIL


def _device_id_of(board: Board) -> str:
    capture = board.capture_boot("hard")
    if capture.boot_line is None:
        raise CliError(f"no boot line from {board.name}: give --device ID")
    return str(capture.boot_line["device_id"])


# signed updates --------------------------------------------------------------------------
@contextlib.contextmanager
def _ota_errors() -> Iterator[None]:
    """An update refused or a broker that cannot run is bad input or setup (exit 2)."""
    from .broker import BrokerError
    from .ota import OTAError
    try:
        yield
    except (OTAError, BrokerError) as exc:
        raise CliError(str(exc)) from exc


def _release_key_path(args: argparse.Namespace) -> Path:
    from .ota import default_release_key_path
    return Path(args.key) if args.key else default_release_key_path()


def _update_file(path: str) -> bytes:
    from .ota import parse_stream
    file = Path(path)
    if not file.is_file():
        raise CliError(f"no update file {file}")
    data = file.read_bytes()
    with _ota_errors():
        parse_stream(data)  # an update at all, before anything else happens
    return data


def cmd_ota_keygen(args: argparse.Namespace) -> int:
    from .ota import ReleaseKey
    path = _release_key_path(args)
    with _ota_errors():
        key = ReleaseKey.generate(path)
    _print_json({"key": str(path), "key_id": key.key_id.hex(), "public_key": key.public_point.hex()})
    return 0


def cmd_ota_build(args: argparse.Namespace) -> int:
    import hashlib
    import time

    from .ota import ReleaseKey, build_manifest, build_stream, encode_manifest
    with _ota_errors():
        key = ReleaseKey.load(_release_key_path(args))  # before compiling: fail fast
        expires = None
        if args.expires_days is not None:
            if args.expires_days <= 0:
                raise CliError("--expires-days must be positive")
            expires = int(time.time() + args.expires_days * 86400)
        rotate = None
        if args.rotate_to:
            try:
                rotate = [bytes.fromhex(h) for h in args.rotate_to]
            except ValueError as exc:
                raise CliError(f"--rotate-to takes public keys as hex (04…, 130 digits): {exc}") from exc
        bundle = _bundle(args)
        if args.version and args.version != bundle.version:
            bundle = bundle.with_version(args.version)  # the device then reports what the manifest says
        manifest = build_manifest(bundle, bundle.version, args.counter, expires=expires,
                                  release_keys=rotate)
        stream = build_stream(encode_manifest(manifest), key, bundle.files)
    out = Path(args.out)
    sbom_path = Path(args.sbom) if args.sbom else out.with_suffix(".sbom.cdx.json")
    if sbom_path.resolve() == out.resolve():
        raise CliError("--sbom and --out must be different files")
    from .sbom import SBOMError, build_sbom, sbom_json
    try:  # before writing anything: an update is never shipped without its SBOM
        sbom = sbom_json(build_sbom(bundle, manifest["version"], update={
            "files": [f["path"] for f in manifest["files"]], "security_counter": manifest["security_counter"],
            "stream_sha256": hashlib.sha256(stream).hexdigest(), "key_id": key.key_id.hex()}))
    except SBOMError as exc:
        raise CliError(f"cannot write the SBOM: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(stream)
    sbom_path.parent.mkdir(parents=True, exist_ok=True)
    sbom_path.write_text(sbom)
    _print_json({"out": str(out), "version": manifest["version"], "counter": manifest["security_counter"],
                 "files": len(manifest["files"]), "total_size": manifest["total_size"],
                 "stream_size": len(stream), "sha256": hashlib.sha256(stream).hexdigest(),
                 "key_id": key.key_id.hex(), "expires": manifest.get("expires"),
                 "release_keys": manifest.get("release_keys"), "sbom": str(sbom_path)})
    return 0


def cmd_ota_inspect(args: argparse.Namespace) -> int:
    import hashlib

    from .ota import OTAError, ReleaseKey, key_id, parse_stream, public_key, verify_signature, verify_stream
    data = _update_file(args.file)
    manifest_bytes, kid, signature, payload = parse_stream(data)
    trusted: list[bytes] = []
    with _ota_errors():
        for h in args.trust or []:
            try:
                trusted.append(bytes.fromhex(h))
            except ValueError as exc:
                raise CliError(f"--trust takes public keys as hex (04…, 130 digits): {exc}") from exc
            public_key(trusted[-1])
        if args.key or not args.trust:
            trusted.append(ReleaseKey.load(_release_key_path(args)).public_point)
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        manifest = None
    signer = next((p for p in trusted if key_id(p) == kid), None)
    report: dict[str, Any] = {"file": args.file, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                              "key_id": kid.hex(), "key_trusted": signer is not None,
                              "signature_valid": signer is not None and verify_signature(signer, manifest_bytes,
                                                                                         signature),
                              "file_bytes": len(payload), "manifest": manifest}
    try:
        verify_stream(data, trusted)
        report.update(verified=True, error=None)
    except OTAError as exc:
        report.update(verified=False, error=str(exc))
    _print_json(report)
    return 0 if report["verified"] else EXIT_FAIL


def _online_device_id(board: Board) -> str:
    """The device ID from the boot line; only a provisioned, locked device goes online."""
    capture = board.capture_boot("hard")
    boot = capture.boot_line
    if boot is None:
        raise CliError(f"no boot line from {board.name}: is the firmware flashed? (sbd flash)")
    security = boot.get("security", {})
    if not security.get("provisioned") or security.get("console") != "locked":
        raise CliError(f"{board.name} is not provisioned and locked, so it does not go online (sbd provision)")
    return str(boot["device_id"])


def cmd_ota_push(args: argparse.Namespace) -> int:
    from .broker import Broker, lab_address
    from .ota import push
    from .watch import Watcher
    stream = _update_file(args.update)
    board = _target(args)
    ca = _ca(args)
    if not ca.exists():
        raise CliError(f"no CA in {ca.dir}: run `sbd pki init` first")
    if args.broker:
        addr, sep, port = args.broker.rpartition(":")
        if not sep or not addr or not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"--broker {args.broker!r}: expected ADDR:PORT, e.g. 192.168.1.10:8883")
        address, port_no = addr, int(port)
    elif board.kind == "emulated":
        address, port_no = lab_address(), 8883
    else:
        raise CliError("a real board: give --broker ADDR:PORT, the broker address it was provisioned with")
    device_id = args.device or _online_device_id(board)
    base = f"devices/{device_id}"
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    with _ota_errors():
        broker = Broker(ca, address=address, port=port_no).start()
        try:
            with Watcher(broker, f"{base}/#") as watcher:
                started = time.monotonic()
                board.reset("hard")  # so it connects now, not after its backoff

                def birth(m) -> bool:
                    body = m.json()
                    return (m.topic == f"{base}/state" and not m.retain and m.at >= started
                            and isinstance(body, dict) and body.get("online") is True)

                if watcher.wait_for(birth, ONLINE_TIMEOUT_S) is None:
                    raise CliError(f"{device_id} did not connect to the lab broker at {address}:{port_no} "
                                   f"within {ONLINE_TIMEOUT_S} s (is it configured for this address and port?)")
                with Progress(TextColumn(f"update to {device_id}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), transient=True, disable=not sys.stderr.isatty()) as bar:
                    task = bar.add_task("push", total=len(stream))
                    result = push(watcher, device_id, stream, timeout=args.timeout,
                                  progress=lambda sent, total: bar.update(task, completed=sent))
                if result.get("event") == "installed" and not args.no_wait_commit:
                    # The new version commits itself only once it has reached this broker:
                    # keep it running until the device says committed (or reverted).
                    print(f"sbd: installed {result.get('version')} in slot {result.get('slot')}; waiting for "
                          f"{device_id} to restart into it and commit it", file=sys.stderr)
                    installed_at = time.monotonic()

                    def outcome(m) -> bool:
                        body = m.json()
                        return (m.topic == f"{base}/result" and m.at >= installed_at and isinstance(body, dict)
                                and body.get("sbd") == "ota"
                                and body.get("event") in ("committed", "reverted", "integrity"))

                    after = watcher.wait_for(outcome, COMMIT_TIMEOUT_S)
                    if after is None:
                        raise CliError(f"{device_id} installed the update but did not report it committed or "
                                       f"reverted within {COMMIT_TIMEOUT_S} s")
                    result = after.json()
        finally:
            broker.stop(remove=True)
    _print_json(result)
    return 0 if result.get("event") in ("installed", "committed") else EXIT_FAIL


# mud --------------------------------------------------------------------------------
def cmd_mud(args: argparse.Namespace) -> int:
    """The board's MUD file (RFC 8520), from the firmware's sbd.network_policy."""
    from . import mud
    if bool(args.board) == bool(args.broker):
        raise CliError("give --board NAME (settings read off the emulated board's flash) "
                       "or --broker ADDR:PORT (the settings a real board was provisioned with)")
    try:
        if args.board:
            settings = mud.board_settings(_existing(args.board))
        else:
            addr, sep, port = args.broker.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise CliError(f"--broker {args.broker!r}: expected ADDR:PORT, e.g. 192.168.1.10:8883")
            settings = {"broker_addr": addr, "broker_port": int(port), "ntp_host": args.ntp or ""}
        document = mud.build(mud.declaration(settings, Path(args.firmware) if args.firmware else None))
    except mud.MudError as exc:
        raise CliError(str(exc)) from exc
    if args.out:
        mud.write(document, Path(args.out))
        print(f"MUD file for {document['ietf-mud:mud']['mud-url']}: {args.out}")
    else:
        _print_json(document)
    return 0


# verify -----------------------------------------------------------------------------
def _verify_paths(args: argparse.Namespace, board: Board) -> dict[str, Path]:
    """Where `sbd verify` writes: the JSON report, and beside it (unless given) the Markdown summary, the
    HTML page, the JUnit XML and the SBOM, named after the report (report.json -> report.md, ...)."""
    safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in board.name).strip("_") or "board"
    report = Path(args.report) if args.report else Path("reports") / safe_name / "report.json"
    paths = {"report": report,
             "markdown": Path(args.markdown) if args.markdown else report.with_suffix(".md"),
             "html": Path(args.html) if args.html else report.with_suffix(".html"),
             "junit": Path(args.junit) if args.junit else report.with_suffix(".junit.xml"),
             "sbom": report.with_suffix(".sbom.cdx.json")}
    if len({p.resolve() for p in paths.values()}) != len(paths):
        raise CliError("--report, --markdown, --html and --junit must be different files")
    return paths


def cmd_verify(args: argparse.Namespace) -> int:
    import pytest

    from .checks import CHECKS_DIR
    from .report import build_report, to_html, to_markdown, write_json
    from .sbom import SBOMError, write_sbom
    board = _target(args)
    bundle = _bundle(args)  # a clear error for a bad firmware folder, before any check runs
    paths = _verify_paths(args, board)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    paths["report"].unlink(missing_ok=True)  # so that a run that ends early is not mistaken for this one
    pytest_args = [str(CHECKS_DIR), "-c", str(CHECKS_DIR / "pytest.ini"), "--rootdir", str(CHECKS_DIR),
                   "-q", "--no-header", "-p", "no:cacheprovider",
                   "-W", "ignore::pytest.PytestAssertRewriteWarning",
                   "--sbd-report", str(paths["report"]),
                   "--junitxml", str(paths["junit"]), "-o", "junit_family=xunit2", "-o", "junit_suite_name=sbd-verify"]
    if board.kind == "emulated":
        pytest_args += ["--board-name", board.name]
    else:
        pytest_args += ["--port", board.port, "--board", args.chip]
    if not args.flash:
        pytest_args.append("--no-flash")
    if args.firmware:
        pytest_args += ["--firmware", args.firmware]
    if args.docs:
        if not Path(args.docs).is_dir():
            raise CliError(f"--docs {args.docs}: no such folder (the documents the device points to: SECURITY.md, ...)")
        pytest_args += ["--docs", args.docs]
    if args.k:
        pytest_args += ["-k", args.k]
    if args.broker:
        pytest_args += ["--broker", args.broker]
    if args.broker_flaws:
        from .broker import FLAWS
        unknown = sorted(set(args.broker_flaws.split(",")) - set(FLAWS))
        if unknown:
            raise CliError(f"unknown broker flaws {unknown}: choose from {', '.join(sorted(FLAWS))}")
        pytest_args += ["--broker-flaws", args.broker_flaws]
    if args.pki:
        pytest_args += ["--pki", args.pki]
    if args.destructive:
        pytest_args.append("--destructive")
    code = pytest.main(pytest_args)
    if not paths["report"].exists():
        raise CliError(f"the check run ended before writing a report (pytest exit {int(code)})")
    raw = json.loads(paths["report"].read_text())
    notes = list(raw.get("notes", []))
    sbom = None
    try:
        sbom = write_sbom(bundle, paths["sbom"])
        sbom["path"] = os.path.relpath(paths["sbom"], paths["report"].parent)
        sbom["describes"] = ("the firmware build flashed by this run" if args.flash else
                             "the firmware build the checks compare with (not flashed by this run: "
                             "firmware-matches-build says whether the board holds it)")
    except SBOMError as exc:
        notes.append(f"No SBOM: {exc}")
    report = build_report(raw["board"], raw["firmware"], raw["checks"], notes, sbom=sbom)
    write_json(report, paths["report"])
    paths["markdown"].write_text(to_markdown(report))
    paths["html"].write_text(to_html(report))
    _print_verify_table(report)
    print("  ".join(f"{k}: {p}" for k, p in paths.items() if k != "sbom" or sbom is not None))
    s = report["summary"]
    return EXIT_FAIL if s["fail"] or s["error"] or int(code) not in (0, 1) else 0


SHORT_BASELINE = {"etsi_en_303_645": "EN303645", "nist_ir_8259a": "IR8259A", "eu_cra": "CRA",
                  "uk_psti": "PSTI", "owasp_isvs": "ISVS"}


def _print_verify_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    colours = {"pass": "green", "fail": "red", "skip": "yellow", "error": "magenta"}
    table = Table(title=f"sbd verify: {report['board'].get('name')} (firmware {report['firmware'].get('version')})")
    for col in ("check", "status", "provisions", "detail"):
        table.add_column(col)
    for c in report["checks"]:
        prov = ", ".join(f"{SHORT_BASELINE[k]} {'/'.join(v)}" for k, v in c["provisions"].items() if v)
        table.add_row(c["id"], f"[{colours[c['status']]}]{c['status'].upper()}[/]", prov, c.get("message") or "")
    s = report["summary"]
    table.caption = f"{s['pass']} pass, {s['fail']} fail, {s['skip']} skip, {s['error']} error"
    Console(width=max(120, Console().width)).print(table)


# parser ---------------------------------------------------------------------------------
def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--board", help="an emulated board's name")
    p.add_argument("--port", help="a real board's serial port or rfc2217:// URL")
    p.add_argument("--chip", default="esp32", help="real board type, a folder under boards/ (default esp32)")
    p.add_argument("--baud", type=int, default=115200, help="console baud rate of a real board")


def _add_pki(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pki", help="the lab CA's folder (default: <state>/pki, or SBD_PKI_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("flash", help="put the firmware files on a board")
    _add_target(p)
    p.add_argument("--firmware", help="firmware folder (default: the project's firmware/)")
    p.add_argument("--micropython", help="real boards: first write this official MicroPython .bin with esptool")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    from .profiles import DEFAULT_PROFILE, PROFILES
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES),
                   help="reference (default): the firmware as it is; insecure: a training build that makes "
                        "the classic mistakes on purpose (docs/labs/), labelled as such on its boot line")
    p.add_argument("--mistakes", metavar="A,B",
                   help="insecure profile: only these mistakes (default: all): "
                        + ", ".join(PROFILES["insecure"].mistakes))
    p.add_argument("--build-dir", help="insecure profile: where to build the patched copy "
                                       "(default: build/profiles/<board>)")
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser("console", help="attach to a board's serial console (mpremote repl)")
    _add_target(p)
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("bootline", help="reset a board and print its boot line")
    _add_target(p)
    p.add_argument("--soft", action="store_true", help="soft reset instead of hard")
    p.add_argument("--timeout", type=float, default=20)
    p.set_defaults(func=cmd_bootline)

    pki = sub.add_parser("pki", help="the lab CA").add_subparsers(dest="action", required=True)
    for name, fn, helptext in (("init", cmd_pki_init, "create the lab CA (P-256), its CRL and index"),
                               ("show", cmd_pki_show, "the CA and the devices it certified")):
        p = pki.add_parser(name, help=helptext)
        _add_pki(p)
        p.set_defaults(func=fn)
    p = pki.add_parser("revoke", help="revoke a device's certificate and rewrite the CRL")
    p.add_argument("device_id")
    _add_pki(p)
    p.set_defaults(func=cmd_pki_revoke)

    p = sub.add_parser("provision", help="certify an unprovisioned board's own key, then lock its console")
    _add_target(p)
    _add_pki(p)
    p.add_argument("--no-lock", action="store_true", help="leave the console open (development only)")
    p.add_argument("--wifi-ssid", help="real boards: the Wi-Fi network (passphrase in SBD_WIFI_PSK)")
    p.add_argument("--broker", help="real boards: the broker's IPv4 address[:port] (default port 8883)")
    p.add_argument("--ntp", default="pool.ntp.org",
                   help="real boards: the NTP server that sets the clock before TLS (default pool.ntp.org)")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("command", help="send a command signed by the lab CA to a locked board")
    _add_target(p)
    p.add_argument("name", choices=["status", "factory_reset", "unlock_console"])
    p.add_argument("--device", help="the device ID (default: read from its boot line)")
    _add_pki(p)
    p.set_defaults(func=cmd_command)

    p = sub.add_parser("verify", help="run the conformance checks and write the report")
    _add_target(p)
    p.add_argument("--firmware", help="the build to compare with (default: the project's firmware/)")
    p.add_argument("--docs", help="the lab's copy of the documents the device points to: SECURITY.md, "
                                  "support.md (default: $SBD_DOCS_DIR or the project's docs/)")
    p.add_argument("--report", help="JSON report path (default: reports/<board>/report.json); the Markdown, "
                                    "HTML, JUnit XML and SBOM files go beside it unless given")
    p.add_argument("--markdown", help="Markdown summary path (default: the report path with .md)")
    p.add_argument("--html", help="self-contained HTML page path (default: the report path with .html)")
    p.add_argument("--junit", help="JUnit XML path (default: the report path with .junit.xml)")
    p.add_argument("--flash", action="store_true", help="flash the firmware before checking")
    p.add_argument("-k", help="only checks matching this pytest expression")
    p.add_argument("--broker", help="ADDR:PORT the board was provisioned with; the checks run the lab broker "
                                    "there (default for emulated boards: the lab address, port 8883)")
    p.add_argument("--broker-flaws", default="",
                   help="run the lab broker with deliberate flaws, for labs: comma-separated, from "
                        "open-acl, no-crl, anonymous, weak-tls")
    _add_pki(p)
    p.add_argument("--destructive", action="store_true",
                   help="also run checks that change the board for good (factory reset)")
    p.set_defaults(func=cmd_verify)

    ota = sub.add_parser("ota", help="signed updates: release key, build, inspect, push over MQTT") \
        .add_subparsers(dest="action", required=True)
    p = ota.add_parser("keygen", help="create the release key (P-256); prints its key ID and public key")
    p.add_argument("--key", help="where to write it (default: <state>/release/release-key.pem)")
    p.set_defaults(func=cmd_ota_keygen)
    p = ota.add_parser("build", help="build and sign an update stream (.sbdota) of the firmware's /lib")
    p.add_argument("--version", help="the version it reports; stamped into lib/sbd/version.py "
                   "(default: VERSION as it is there)")
    p.add_argument("--counter", type=int, required=True,
                   help="security counter: higher than the devices' current one (anti-rollback)")
    p.add_argument("--firmware", help="firmware folder (default: the project's firmware/)")
    p.add_argument("--key", help="the release key (default: <state>/release/release-key.pem)")
    p.add_argument("--expires-days", type=float, help="devices with a trusted clock refuse it after this")
    p.add_argument("--rotate-to", nargs="+", metavar="PUBHEX",
                   help="key rotation: the complete new set of trusted release keys (uncompressed points, hex)")
    p.add_argument("--out", required=True, help="the update file to write")
    p.add_argument("--sbom", help="the CycloneDX SBOM (JSON) to write (default: beside --out, "
                                  "with .sbom.cdx.json for its suffix)")
    p.set_defaults(func=cmd_ota_build)
    p = ota.add_parser("inspect", help="print an update's manifest and check its signature and hashes")
    p.add_argument("file")
    p.add_argument("--key", help="the release key to check against (default: <state>/release/release-key.pem)")
    p.add_argument("--trust", nargs="+", metavar="PUBHEX",
                   help="check against these public keys (hex) instead of the release key file")
    p.set_defaults(func=cmd_ota_inspect)
    p = ota.add_parser("push", help="run the lab broker, send an update to a board over MQTT, print its verdict")
    _add_target(p)
    p.add_argument("--update", required=True, help="the update file (sbd ota build)")
    p.add_argument("--broker", help="ADDR:PORT the board was provisioned with (default for emulated boards: "
                                    "the lab address, port 8883)")
    p.add_argument("--device", help="the device ID (default: read from its boot line)")
    p.add_argument("--timeout", type=float, default=120, help="seconds for the transfer and the verdict")
    p.add_argument("--no-wait-commit", action="store_true",
                   help="stop at `installed` (the broker stops too, so the trial cannot commit and reverts)")
    _add_pki(p)
    p.set_defaults(func=cmd_ota_push)

    p = sub.add_parser("mud", help="write the board's Manufacturer Usage Description (RFC 8520) "
                                   "from the firmware's declared network behaviour")
    p.add_argument("--board", help="an emulated board: its settings (broker, NTP) are read off its flash")
    p.add_argument("--broker", help="instead of --board: the ADDR:PORT a real board was provisioned with")
    p.add_argument("--ntp", help="with --broker: the NTP server the board was provisioned with, if any")
    p.add_argument("--firmware", help="firmware folder (default: the project's firmware/)")
    p.add_argument("--out", help="write the MUD file here (default: print it)")
    p.set_defaults(func=cmd_mud)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, BoardError, BundleError, PartitionTableError, PKIError) as exc:
        print(f"sbd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
