"""`make demo`: the story so far, on an emulated board, from nothing.

Starts a fresh emulated ESP32, flashes the reference firmware, shows its boot
line, provisions it from the lab CA (its own key, a certificate, a locked
console), starts the lab broker and shows the device's birth message and
telemetry arriving over mutual TLS, and ends with the `sbd verify` table.
"""
from __future__ import annotations

import json
import socket
import sys
import time

from rich.console import Console
from rich.markup import escape

from . import cli
from .boards.base import BoardError
from .boards.emulated import EmulatedBoard
from .broker import Broker, BrokerError, lab_address
from .pki import LabCA
from .provisioning import provision
from .watch import Message, Watcher

BOARD = "demo"
BROKER_PORT = 8883      # where provisioning pointed the board (provisioning.lab_settings)
ONLINE_TIMEOUT_S = 15   # a board reset just now connects within a few seconds
TELEMETRY = 3           # readings to show: the queued ones, then a live one
TELEMETRY_TIMEOUT_S = 25  # the firmware takes a reading every 10 s by default


def _is_birth(base: str, since: float):
    def match(m: Message) -> bool:
        body = m.json()
        return (m.topic == f"{base}/state" and not m.retain and m.at >= since
                and isinstance(body, dict) and body.get("online") is True)
    return match


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
    base = f"devices/{device_id}"
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
        with Watcher(broker, f"{base}/#") as watcher:
            started = time.monotonic()
            board.reset("hard")  # connect now, not after the backoff its failed attempts built up
            birth = watcher.wait_for(_is_birth(base, started), ONLINE_TIMEOUT_S)
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
            is_telemetry = lambda m: m.topic == f"{base}/telemetry"  # noqa: E731
            telemetry = []
            deadline = time.monotonic() + TELEMETRY_TIMEOUT_S
            while len(telemetry) < TELEMETRY:
                m = watcher.wait_for(is_telemetry, deadline - time.monotonic())
                if m is None:
                    break
                telemetry.append(m)
                console.print(f"[bold]{m.topic}[/] (+{m.at - started:.1f} s)  "
                              f"{m.payload.decode(errors='replace')}", soft_wrap=True)
            if not telemetry:
                console.print(f"[red]No telemetry arrived on {base}/telemetry within {TELEMETRY_TIMEOUT_S} s "
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
    console.rule("[bold]6. sbd verify (with the destructive factory-reset check, run last)")
    code = cli.main(["verify", "--board", BOARD, "--report", "reports/demo/report.json",
                     "--junit", "reports/demo/junit.xml", "--destructive"])
    board.stop()
    console.print(f"\nThe board is stopped; its flash is kept. Start it again with: sbd board start {BOARD}")
    return code


if __name__ == "__main__":
    sys.exit(main())
