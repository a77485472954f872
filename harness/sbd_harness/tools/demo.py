"""`make demo`: the story so far, on an emulated board, from nothing.

Starts a fresh emulated ESP32, flashes the reference firmware, shows its boot
line, provisions it from the lab CA (its own key, a certificate, a locked
console), starts the lab broker and shows the device's birth message and
telemetry arriving over mutual TLS, pushes a signed update (committed) and a
tampered one (refused), and runs `sbd verify`. Then it flashes a second
board with the insecure lab build, verifies it the same way, and ends with
both reports side by side.
"""
from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sbd_harness import cli
from sbd_harness.boards.base import BoardError
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.device.contract import is_birth, topics
from sbd_harness.identity.pki import LabCA
from sbd_harness.identity.provisioning import provision
from sbd_harness.lab.broker import Broker, BrokerError, lab_address
from sbd_harness.lab.watch import Watcher, on_topic
from sbd_harness.paths import firmware_dir
from sbd_harness.release.bundle import VERSION_RE
from sbd_harness.release.ota import OTAError, ReleaseKey, default_release_key_path, verify_stream

BOARD = "demo"
BROKER_PORT = 8883      # where provisioning pointed the board (provisioning.lab_settings)
ONLINE_TIMEOUT_S = 15   # a board reset just now connects within a few seconds
TELEMETRY = 3           # readings to show: the queued ones, then a live one
TELEMETRY_TIMEOUT_S = 25  # the firmware takes a reading every 10 s by default
WORK = Path("build/demo")   # the demo's release folder and update files
INSECURE_BOARD = "demo-insecure"
REPORTS = Path("reports/demo")
INSECURE_REPORTS = Path("reports/demo-insecure")
UPDATE_VERSION = "0.2.0"


def _net_events(board: EmulatedBoard, count: int = 3) -> list[str]:
    """The firmware's last network log lines ({"sbd": "net", ...}) on the serial port."""
    return [line for line in board.serial_log()[-6000:].splitlines() if '"sbd": "net"' in line][-count:]


def _broker_user_line(broker: Broker, device_id: str, timeout: float = 3) -> str | None:
    """mosquitto's line for the device's connection: the certificate's CN as its user name."""
    deadline = time.monotonic() + timeout
    while True:
        lines = broker.log_path.read_text(errors="replace").splitlines()
        found = [line for line in lines if f"u'{device_id}'" in line]
        if found or time.monotonic() > deadline:
            return found[-1] if found else None
        time.sleep(0.1)


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def show_telemetry(console: Console, board: EmulatedBoard, ca: LabCA, device_id: str) -> bool:
    """Runs the lab broker where the board expects it, resets the board and
    shows its birth message, the broker's log line naming it and a few
    telemetry messages as they arrive. Stops the broker again before it
    returns (sbd verify starts its own on the same port)."""
    topic = topics(device_id)
    address = lab_address()
    if _listening(address, BROKER_PORT):
        console.print(f"[red]Something already listens on {address}:{BROKER_PORT}, where the board looks for "
                      "its broker: another broker, or an `sbd verify` still running. Stop it and run the "
                      "demo again.[/]")
        return False
    try:
        broker = Broker(ca, address=address, port=BROKER_PORT).start()
    except (BrokerError, OSError) as exc:
        console.print(f"[red]cannot run the lab broker on {address}:{BROKER_PORT}: {escape(str(exc))}[/]")
        return False
    try:
        console.print(f"broker       mosquitto on {broker.address}:{broker.port}, where provisioning pointed the board")
        console.print("             TLS 1.2+, lab CA client certificates required, ACL devices/%u/#",
                      highlight=False)
        with Watcher(broker, topic.all) as watcher:
            started = time.monotonic()
            board.reset("hard")  # connect now, not after the backoff its failed attempts built up
            birth = watcher.wait_for(is_birth(topic, started), ONLINE_TIMEOUT_S)
            if birth is None:
                console.print(f"[red]The device did not connect to the lab broker within {ONLINE_TIMEOUT_S} s "
                              "of its reset.[/] Its last network events on the serial port:")
                for line in _net_events(board) or ["(none)"]:
                    console.print(f"  {line}", markup=False, highlight=False)
                console.print("The end of the broker's log:")
                for line in broker.log_path.read_text(errors="replace").splitlines()[-3:] or ["(empty)"]:
                    console.print(f"  {line}", markup=False, highlight=False)
                console.print(f"Was the board provisioned for a broker at {broker.address}:{broker.port}?",
                              highlight=False)
                return False
            console.print(f"[bold]{birth.topic}[/] (birth message, retained; "
                          f"{birth.at - started:.1f} s after the reset)", highlight=False)
            console.print_json(birth.payload.decode(errors="replace"))
            user_line = _broker_user_line(broker, device_id)
            if user_line is None:
                console.print(f"[red]No line of the broker's log shows the user name {device_id!r}: "
                              f"the broker did not take the certificate's CN as the user name.[/]")
                return False
            console.print("broker log   the client certificate's CN is the device's MQTT user name:")
            console.print(f"  {user_line}", markup=False, highlight=False, soft_wrap=True)
            telemetry = []
            for m in watcher.arrivals(on_topic(topic.telemetry), TELEMETRY, TELEMETRY_TIMEOUT_S):
                telemetry.append(m)
                console.print(f"[bold]{m.topic}[/] (+{m.at - started:.1f} s)  "
                              f"{m.payload.decode(errors='replace')}", soft_wrap=True)
            if not telemetry:
                console.print(f"[red]No telemetry arrived on {topic.telemetry} within {TELEMETRY_TIMEOUT_S} s "
                              "of the birth message.[/] Its last network events on the serial port:")
                for line in _net_events(board) or ["(none)"]:
                    console.print(f"  {line}", markup=False, highlight=False)
                return False
        console.print("Each reading is stored in the flash outbox and leaves it once the broker has "
                      "acknowledged it (QoS 1): readings taken while no broker was reachable arrive first, "
                      "and seq runs on across reboots.", highlight=False)
        return True
    except BoardError as exc:
        console.print(f"[red]could not reset {board.name}: {escape(str(exc))}[/]")
        return False
    except OSError as exc:  # the harness's own MQTT client could not reach the broker
        console.print(f"[red]the harness could not subscribe on the lab broker {address}:{BROKER_PORT}: "
                      f"{escape(str(exc))}[/]")
        return False
    finally:
        broker.stop(remove=True)


def release_key(console: Console) -> ReleaseKey:
    """The lab release key; made now if there is none, so provisioning installs it."""
    path = default_release_key_path()
    if path.exists():
        key = ReleaseKey.load(path)
        console.print(f"release key  {path} (key ID {key.key_id.hex()}), installed on the device at provisioning")
    else:
        key = ReleaseKey.generate(path)
        console.print(f"release key  made {path} (key ID {key.key_id.hex()}); provisioning installs its public key")
    return key


def release_folder(version: str) -> Path:
    """A copy of the reference firmware reporting `version`: the manufacturer's next release."""
    target = WORK / f"firmware-{version}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(firmware_dir(), target, ignore=shutil.ignore_patterns("__pycache__"))
    vpath = target / "lib/sbd/version.py"
    vpath.write_text(VERSION_RE.sub(f'VERSION = "{version}"', vpath.read_text(), count=1))
    return target


def tamper(update: Path, out: Path) -> int:
    """Flips one bit in the last byte of the update (inside its last file); returns the offset."""
    data = bytearray(update.read_bytes())
    data[-1] ^= 0x01
    out.write_bytes(bytes(data))
    return len(data) - 1


def show_update(console: Console, key: ReleaseKey) -> Path | None:
    """Builds a signed update, pushes it over the device's MQTT connection and
    shows it committed; then replays it and pushes a tampered next release,
    and shows both refused.
    Returns the new release's firmware folder (what the board now runs)."""
    folder = release_folder(UPDATE_VERSION)
    update = WORK / f"update-{UPDATE_VERSION}.sbdota"
    console.print(f"[bold]$ sbd ota build --firmware {folder} --counter 2 --out {update}[/]", highlight=False)
    if cli.main(["ota", "build", "--firmware", str(folder), "--counter", "2", "--out", str(update)]) != 0:
        return None
    console.print(f"[bold]$ sbd ota push --board {BOARD} --update {update}[/]", highlight=False)
    if cli.main(["ota", "push", "--board", BOARD, "--update", str(update)]) != 0:
        console.print("[red]The signed update was not committed.[/]")
        return None
    console.print(f"The device verified the signature and every file, switched slots, booted {UPDATE_VERSION} "
                  "on trial, reached the broker and committed it.", highlight=False)
    console.print("\nThe same update again, replayed by someone who recorded it:", highlight=False)
    console.print(f"[bold]$ sbd ota push --board {BOARD} --update {update}[/]", highlight=False)
    if cli.main(["ota", "push", "--board", BOARD, "--update", str(update)]) == 0:
        console.print("[red]The device installed a replayed update.[/]")
        return None
    nxt = WORK / "update-0.2.1.sbdota"
    if cli.main(["ota", "build", "--firmware", str(release_folder("0.2.1")), "--counter", "3",
                 "--out", str(nxt)]) != 0:
        return None
    tampered = WORK / "update-0.2.1-tampered.sbdota"
    at = tamper(nxt, tampered)
    console.print(f"\nThe next release, 0.2.1, signed, with one bit flipped at byte {at} on its way:",
                  highlight=False)
    try:
        verify_stream(tampered.read_bytes(), [key.public_point])
        console.print("[red]The host found nothing wrong with the tampered update.[/]")
        return None
    except OTAError as exc:
        console.print(f"sbd ota inspect says: {escape(str(exc))}", highlight=False)
    console.print(f"[bold]$ sbd ota push --board {BOARD} --update {tampered}[/]", highlight=False)
    if cli.main(["ota", "push", "--board", BOARD, "--update", str(tampered)]) == 0:
        console.print("[red]The device accepted a tampered update.[/]")
        return None
    console.print(f"The device refused both and keeps running {UPDATE_VERSION}: authenticity and freshness "
                  "are checked on the device, end to end, whatever the transport.", highlight=False)
    return folder


def insecure_report(console: Console, ca: LabCA) -> int | None:
    """A second board with the insecure lab build, provisioned the same way,
    and the whole catalogue run against it. Its `sbd verify` exit code, or None
    when the board could not be set up."""
    board = EmulatedBoard(INSECURE_BOARD)
    if board.state.exists():
        board.remove()
    board.start()
    build = WORK / "insecure"
    try:
        console.print(f"[bold]$ sbd flash --board {INSECURE_BOARD} --profile insecure --build-dir {build}[/]",
                      highlight=False)
        if cli.main(["flash", "--board", INSECURE_BOARD, "--profile", "insecure", "--build-dir", str(build)]) != 0:
            return None
        result = provision(board, ca)
        console.print(f"boot line    {result.boot_line}", highlight=False, soft_wrap=True)
        console.print(f"[bold]$ sbd verify --board {INSECURE_BOARD} --firmware {build} "
                      f"--report {INSECURE_REPORTS / 'report.json'}[/]", highlight=False)
        return cli.main(["verify", "--board", INSECURE_BOARD, "--firmware", str(build),
                         "--report", str(INSECURE_REPORTS / "report.json")])
    finally:
        board.stop()


def compare(console: Console) -> bool:
    """Both reports side by side, check by check. True when the reference
    passed everything it ran and the insecure build failed something."""
    ref = json.loads((REPORTS / "report.json").read_text())
    bad = json.loads((INSECURE_REPORTS / "report.json").read_text())
    bad_status = {c["id"]: c["status"] for c in bad["checks"]}
    style = {"pass": "green", "fail": "bold red", "error": "bold red", "skip": "yellow"}
    table = Table(title="sbd verify: the reference firmware and the insecure lab build")
    for column in ("Check", "Reference", "Insecure lab build"):
        table.add_column(column)
    for c in ref["checks"]:
        other = bad_status.get(c["id"], "not run")
        table.add_row(c["id"], f"[{style.get(c['status'], '')}]{c['status'].upper()}[/]",
                      f"[{style.get(other, '')}]{other.upper()}[/]")
    console.print(table)
    for name, report in (("reference", REPORTS), ("insecure lab build", INSECURE_REPORTS)):
        console.print(f"{name:20} {report / 'report.html'} (open it in a browser), {report / 'report.md'}, "
                      f"{report / 'report.junit.xml'}", highlight=False)
    return ref["summary"]["fail"] == ref["summary"]["error"] == 0 and bad["summary"]["fail"] > 0


def main() -> int:
    console = Console()
    board = EmulatedBoard(BOARD)
    if board.state.exists():
        board.remove()
    console.rule("[bold]1. An emulated ESP32 powers on")
    info = board.start()
    console.print_json(json.dumps(info))
    console.rule("[bold]2. Flash the reference firmware")
    if cli.main(["flash", "--board", BOARD]) != 0:
        return 1
    console.rule("[bold]3. Its boot line, read from the serial port")
    capture = board.capture_boot("hard")
    print(capture.transcript.strip(), flush=True)
    console.rule("[bold]4. Provision: a key born on the device, a certificate from the lab CA")
    ca = LabCA()
    if not ca.exists():
        ca.init()
    key = release_key(console)
    result = provision(board, ca)
    cert = result.issued.certificate
    console.print(f"subject      {cert.subject.rfc4514_string()}")
    console.print(f"issuer       {cert.issuer.rfc4514_string()}")
    console.print(f"fingerprint  SHA-256 {result.issued.fingerprint}")
    console.print(f"valid until  {cert.not_valid_after_utc:%Y-%m-%d}")
    console.print(f"boot line    {result.boot_line}")
    console.rule("[bold]5. Telemetry over mutual TLS, through the lab broker")
    if not show_telemetry(console, board, ca, result.device_id):
        board.stop()
        return 1
    console.rule("[bold]6. A signed update over the same connection; then a tampered one")
    folder = show_update(console, key)
    if folder is None:
        board.stop()
        return 1
    console.rule("[bold]7. sbd verify (with the destructive factory-reset check, run last)")
    code = cli.main(["verify", "--board", BOARD, "--firmware", str(folder), "--report", str(REPORTS / "report.json"),
                     "--destructive"])
    board.stop()
    console.rule("[bold]8. The insecure lab build, verified the same way")
    insecure = insecure_report(console, ca)
    if insecure is None:
        return 1
    console.rule("[bold]9. The two reports")
    shown = compare(console)
    console.print(f"\nBoth boards are stopped; their flash is kept. Start them again with: sbd board start {BOARD} "
                  f"(or {INSECURE_BOARD}). The labs in docs/labs/ start from the insecure build.", highlight=False)
    if code != 0:
        return code
    return 0 if shown and insecure == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
