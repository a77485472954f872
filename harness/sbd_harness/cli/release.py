"""`sbd ota ...`: release key, signed update streams, and pushing them to a board over MQTT."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from sbd_harness.boards.base import Board, BoardError
from sbd_harness.cli.common import CliError, add_pki, add_target, firmware_bundle, lab_ca, print_json, target
from sbd_harness.device.contract import ONLINE_TIMEOUT_S
from sbd_harness.errors import EXIT_FAIL


# signed updates --------------------------------------------------------------------------
@contextlib.contextmanager
def _ota_errors() -> Iterator[None]:
    """An update refused or a broker that cannot run is bad input or setup (exit 2)."""
    from sbd_harness.lab.broker import BrokerError
    from sbd_harness.release.ota import OTAError
    try:
        yield
    except (OTAError, BrokerError) as exc:
        raise CliError(str(exc)) from exc


def _release_key_path(args: argparse.Namespace) -> Path:
    from sbd_harness.release.ota import default_release_key_path
    return Path(args.key) if args.key else default_release_key_path()


def _update_file(path: str) -> bytes:
    from sbd_harness.release.ota import parse_stream
    file = Path(path)
    if not file.is_file():
        raise CliError(f"no update file {file}")
    data = file.read_bytes()
    with _ota_errors():
        parse_stream(data)  # an update at all, before anything else happens
    return data


def cmd_ota_keygen(args: argparse.Namespace) -> int:
    from sbd_harness.release.ota import lab_release_key
    path = _release_key_path(args)
    with _ota_errors():
        key, made = lab_release_key(path)
    if not made:  # never overwritten: devices that trust it would take no update again
        print(f"sbd: the release key {path} already exists (key ID {key.key_id.hex()}): kept as it is",
              file=sys.stderr)
    print_json({"key": str(path), "key_id": key.key_id.hex(), "public_key": key.public_point.hex(), "made": made})
    return 0


def cmd_ota_build(args: argparse.Namespace) -> int:
    import hashlib
    import time

    from sbd_harness.release.ota import ReleaseKey, build_manifest, build_stream, encode_manifest
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
        if args.image:
            return _build_image(args, key, expires, rotate)
        bundle = firmware_bundle(args)
        if args.version and args.version != bundle.version:
            bundle = bundle.with_version(args.version)  # the device then reports what the manifest says
        manifest = build_manifest(bundle, bundle.version, args.counter, expires=expires,
                                  release_keys=rotate)
        stream = build_stream(encode_manifest(manifest), key, bundle.files)
    out = Path(args.out)
    sbom_path = Path(args.sbom) if args.sbom else out.with_suffix(".sbom.cdx.json")
    if sbom_path.resolve() == out.resolve():
        raise CliError("--sbom and --out must be different files")
    from sbd_harness.release.sbom import SBOMError, build_sbom, sbom_json
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
    print_json({"out": str(out), "version": manifest["version"], "counter": manifest["security_counter"],
                 "files": len(manifest["files"]), "total_size": manifest["total_size"],
                 "stream_size": len(stream), "sha256": hashlib.sha256(stream).hexdigest(),
                 "key_id": key.key_id.hex(), "expires": manifest.get("expires"),
                 "release_keys": manifest.get("release_keys"), "sbom": str(sbom_path)})
    return 0


def _inspect_verdict(verified: bool, key_trusted: bool, signature_valid: bool, kid: bytes,
                     error: str | None) -> str:
    """One line a person reads first: would a device that trusts these keys install it, and why not."""
    if verified:
        return "verified: valid signature, trusted key, every file as the manifest lists it"
    if not key_trusted:
        which = f"key ID {kid.hex()}, not among the keys checked against"
        return (f"refused: valid signature, untrusted key ({which})" if signature_valid
                else f"refused: untrusted key ({which}), and the signature is not valid under it either")
    if not signature_valid:
        return f"refused: trusted key, invalid signature: the manifest is not the one key {kid.hex()} signed"
    return f"refused: valid signature, trusted key, but {error}"


def _build_image(args: argparse.Namespace, key: Any, expires: int | None, rotate: list[bytes] | None) -> int:
    """`sbd ota build --image`: a whole-firmware update, the app image signed with its manifest."""
    import hashlib

    from sbd_harness.release.app_image import AppImageError, app_part
    from sbd_harness.release.ota import build_image_manifest, build_stream, encode_manifest
    from sbd_harness.release.sbom import SBOMError, build_image_sbom, sbom_json
    try:
        image = app_part(Path(args.image).read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {args.image}: {exc}") from exc
    except AppImageError as exc:
        raise CliError(f"{args.image}: {exc}") from exc
    if not args.version:
        raise CliError("--image needs --version: the release's version (the image's own is in its app descriptor)")
    kwargs = {"model": args.model} if args.model else {}
    manifest = build_image_manifest(image, args.version, args.counter, expires=expires, release_keys=rotate,
                                    **kwargs)
    stream = build_stream(encode_manifest(manifest), key, {"image": image})
    out = Path(args.out)
    sbom_path = Path(args.sbom) if args.sbom else out.with_suffix(".sbom.cdx.json")
    if sbom_path.resolve() == out.resolve():
        raise CliError("--sbom and --out must be different files")
    try:
        sbom = sbom_json(build_image_sbom(image, manifest, hashlib.sha256(stream).hexdigest(), key.key_id.hex()))
    except SBOMError as exc:
        raise CliError(f"cannot write the SBOM: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(stream)
    sbom_path.write_text(sbom)
    print_json({"out": str(out), "version": manifest["version"], "counter": manifest["security_counter"],
                "image": manifest["image"], "total_size": manifest["total_size"], "stream_size": len(stream),
                "sha256": hashlib.sha256(stream).hexdigest(), "key_id": key.key_id.hex(),
                "expires": manifest.get("expires"), "release_keys": manifest.get("release_keys"),
                "sbom": str(sbom_path)})
    return 0


def cmd_ota_inspect(args: argparse.Namespace) -> int:
    import hashlib

    from sbd_harness.release.ota import OTAError, ReleaseKey, key_id, parse_stream, public_key, verify_signature, verify_stream
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
    from sbd_harness.release.signer import signer as recovered_signer
    trusted_signer = next((p for p in trusted if key_id(p) == kid), None)
    # Valid under the key the stream names, trusted or not: an untrusted key's valid signature is
    # somebody else's release, a bad one is damage or forgery.
    signature_valid = (verify_signature(trusted_signer, manifest_bytes, signature) if trusted_signer
                       else recovered_signer(manifest_bytes, kid, signature) is not None)
    try:
        verify_stream(data, trusted)
        verified, error = True, None
    except OTAError as exc:
        verified, error = False, str(exc)
    report: dict[str, Any] = {"verdict": _inspect_verdict(verified, trusted_signer is not None, signature_valid,
                                                          kid, error),
                              "file": args.file, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                              "key_id": kid.hex(), "key_trusted": trusted_signer is not None,
                              "signature_valid": signature_valid, "verified": verified, "error": error,
                              "file_bytes": len(payload), "manifest": manifest}
    if isinstance(manifest, dict) and "image" in manifest:  # what the image itself says (esp_app_desc_t)
        from sbd_harness.release.app_image import AppImageError, read_app_image
        try:
            report["app_descriptor"] = read_app_image(payload).descriptor.as_dict()
        except AppImageError as exc:
            report["app_descriptor"] = None
            report["image_error"] = str(exc)
    print_json(report)
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
    from sbd_harness.lab.broker import Broker, lab_address
    from sbd_harness.boards import lifecycle
    from sbd_harness.release.ota import install
    stream = _update_file(args.update)
    board = target(args)
    ca = lab_ca(args)
    if not ca.exists():
        raise CliError(f"no CA in {ca.dir}: run `sbd pki init` first")
    if args.broker:
        addr, sep, port = args.broker.rpartition(":")
        if not sep or not addr or not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"--broker {args.broker!r}: expected ADDR:PORT, e.g. 192.168.1.10:8883")
        address, port_no = addr, int(port)
    elif board.kind == "emulated":
        address, port_no = lab_address(), board.broker_port
    else:
        raise CliError("a real board: give --broker ADDR:PORT, the broker address it was provisioned with")
    device_id = args.device or _online_device_id(board)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    def installed(result: dict) -> None:
        # The new version commits itself only once it has reached this broker: it keeps running.
        print(f"sbd: installed {result.get('version')} in slot {result.get('slot')}; waiting for "
              f"{device_id} to restart into it and commit it", file=sys.stderr)

    with _ota_errors():
        broker = Broker(ca, address=address, port=port_no).start()
        try:
            with lifecycle.online(board, broker, device_id, timeout=ONLINE_TIMEOUT_S, persistent=False) as dev, \
                    Progress(TextColumn(f"update to {device_id}"), BarColumn(), DownloadColumn(),
                             TransferSpeedColumn(), transient=True, disable=not sys.stderr.isatty()) as bar:
                task = bar.add_task("push", total=len(stream))
                result = install(dev, stream, timeout=args.timeout, wait_commit=not args.no_wait_commit,
                                 progress=lambda sent, total: bar.update(task, completed=sent),
                                 on_installed=installed)
        except BoardError as exc:
            raise CliError(f"{exc} (the lab broker ran at {address}:{port_no})") from exc
        finally:
            broker.stop(remove=True)
    print_json(result)
    return 0 if result.get("event") in ("installed", "committed") else EXIT_FAIL


def add_commands(sub: argparse._SubParsersAction) -> None:
    ota = sub.add_parser("ota", help="signed updates: release key, build, inspect, push over MQTT") \
        .add_subparsers(dest="action", required=True)
    p = ota.add_parser("keygen", help="create the release key (P-256); prints its key ID and public key")
    p.add_argument("--key", help="where to write it (default: <state>/release/release-key.pem)")
    p.set_defaults(func=cmd_ota_keygen)
    p = ota.add_parser("build", help="build and sign an update stream (.sbdota) of the firmware's /lib, "
                                     "or of a whole app image (--image)")
    p.add_argument("--image", help="a whole-firmware update: an ESP32 app image (.bin), or MicroPython's "
                                   "merged .bin (the app part at 0x10000 is taken); --version names the release")
    p.add_argument("--model", help="with --image: the device model it is for (default: the reference's)")
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
    p = ota.add_parser("inspect", help="print an update's manifest and check its signature and hashes "
                                       "(and an image's app descriptor)")
    p.add_argument("file")
    p.add_argument("--key", help="the release key to check against (default: <state>/release/release-key.pem)")
    p.add_argument("--trust", nargs="+", metavar="PUBHEX",
                   help="check against these public keys (hex) instead of the release key file")
    p.set_defaults(func=cmd_ota_inspect)
    p = ota.add_parser("push", help="run the lab broker, send an update to a board over MQTT, print its verdict")
    add_target(p)
    p.add_argument("--update", required=True, help="the update file (sbd ota build)")
    p.add_argument("--broker", help="ADDR:PORT the board was provisioned with (default for emulated boards: "
                                    "the lab address and the board's own port)")
    p.add_argument("--device", help="the device ID (default: read from its boot line)")
    p.add_argument("--timeout", type=float, default=120, help="seconds for the transfer and the verdict")
    p.add_argument("--no-wait-commit", action="store_true",
                   help="stop at `installed` (the broker stops too, so the trial cannot commit and reverts)")
    add_pki(p)
    p.set_defaults(func=cmd_ota_push)

