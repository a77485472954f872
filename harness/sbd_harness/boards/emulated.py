"""The emulated ESP32: a SerialBoard on a PTY, plus the hands a lab bench has.

Beyond the serial port it can cut the power, press the EN and BOOT buttons,
read the flash chip, and cut the board's network link.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import serial

from sbd_harness.emulator import netlab
from sbd_harness.emulator.board_state import BoardState
from sbd_harness.emulator.flash_image import FlashImage, parse_csv
from sbd_harness.paths import boards_dir, state_dir
from sbd_harness.boards.base import (BoardError, BootButton, FlashReadback, LinkControl, PowerControl,
                                     RadioObserver, SerialLog, SyntheticAppImages)
from sbd_harness.boards.serial_board import SerialBoard

BOOT_BUTTON_GPIO = 0
NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _boards_root() -> Path:
    path = state_dir() / "boards"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_name(name: str) -> str:
    if not name or len(name) > 32 or not set(name) <= NAME_OK or name[0] in "-_":
        raise BoardError(f"invalid board name {name!r}: use 1-32 of a-z, 0-9, '-', '_'")
    return name


# Supervisors this process started: reaped here, so a stopped one is not
# mistaken for a live one while it lingers as a zombie.
_SUPERVISORS: dict[int, subprocess.Popen] = {}


def _alive(pid: int) -> bool:
    child = _SUPERVISORS.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _SUPERVISORS[pid]
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


LAB_BROKER_PORTS = range(20000, 30000)  # below Linux's ephemeral ports (32768-60999): no client takes one


def _free_lab_broker_port(taken: set[int | None]) -> int:
    """A port for a new board's lab broker: not another board's of this user, and free now on every
    address (another user's board would hold it with a running broker or show it in use)."""
    import random
    for _ in range(200):
        port = random.choice(LAB_BROKER_PORTS)
        if port in taken:
            continue
        try:
            with socket.socket() as s:
                s.bind(("", port))
            return port
        except OSError:
            continue
    raise BoardError(f"no free port for a lab broker in {LAB_BROKER_PORTS.start}-{LAB_BROKER_PORTS.stop - 1}")


def _random_unique_id() -> str:
    """Six bytes, like the ESP32's base MAC, locally administered and unicast."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] | 0x02) & 0xFE
    return raw.hex()


class EmulatedBoard(SerialBoard, PowerControl, LinkControl, FlashReadback, SerialLog, BootButton, SyntheticAppImages,
                    RadioObserver):
    kind = "emulated"

    def __init__(self, name: str):
        self.state = BoardState(_boards_root() / check_name(name))
        super().__init__(port=str(self.state.serial_link), name=name)

    # lifecycle -------------------------------------------------------------------------
    @classmethod
    def all(cls) -> list["EmulatedBoard"]:
        return [cls(p.name) for p in sorted(_boards_root().iterdir()) if (p / "board.json").exists()]

    @property
    def conf(self) -> dict[str, Any]:
        if not self.state.exists():
            raise BoardError(f"no emulated board named {self.name!r} (sbd board start {self.name})")
        return self.state.load()

    def _create(self) -> None:
        spec = json.loads((boards_dir() / "emulated" / "board.json").read_text())
        parts = parse_csv((boards_dir() / "emulated" / spec["partitions"]).read_text())
        self.state.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state.dir, 0o700)
        FlashImage.create(self.state.flash_path, spec["flash_size"], parts, spec["partition_table_offset"])
        self.state.write_pins({})
        conf = {
            "name": self.name,
            "unique_id": _random_unique_id(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "flash_size": spec["flash_size"],
            "partition_table_offset": spec["partition_table_offset"],
            "heap_bytes": spec["heap_bytes"],
            "machine_name": spec["machine_name"] + " (sbd emulated)",
            "lab_ssid": f"sbd-lab-{self.name}",
            "lab_psk": secrets.token_urlsafe(18),
            "broker_port": _free_lab_broker_port(self._ports_of_other_boards()),
        }
        self.state.save(conf)

    def _ports_of_other_boards(self) -> set[int | None]:
        taken = set()
        for board in self.all():
            try:
                if board.name != self.name:
                    taken.add(board.conf.get("broker_port"))
            except (BoardError, OSError, ValueError):  # being removed right now
                continue
        return taken

    @property
    def broker_port(self) -> int:
        """The port of this board's lab broker on the lab address. Each board has its own, chosen when
        it is made, so that two boards (one user's or several users') never meet each other's broker,
        and `sbd provision`, `sbd verify` and `sbd ota push` agree on it without being told. A board
        made before boards had their own port keeps the lab's old shared 8883."""
        return int(self.conf.get("broker_port", 8883))

    def is_running(self) -> bool:
        status = self.state.read_status()
        pid = status.get("supervisor_pid")
        if not pid or not self.state.control_socket.exists():
            return False
        return _alive(pid)

    def start(self, timeout: float = 20) -> dict[str, Any]:
        """Creates the board on first use, powers it on, waits for its port."""
        if self.is_running():
            return self.describe()
        if not self.state.exists():
            import fcntl
            # One board made at a time (several processes or threads may start boards at once):
            # the broker port it picks is then surely not another new board's.
            with open(_boards_root() / ".create.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self.state.exists():
                    self._create()
        self._install_micropython()
        conf = self.state.load()
        net = netlab.create(self.state.dir.resolve())
        conf["net"] = net.as_conf(conf["lab_ssid"], conf["lab_psk"])
        self.state.save(conf)
        self.state.mark_stopped()
        (self.state.dir / "failure.txt").unlink(missing_ok=True)
        log = open(self.state.supervisor_log, "ab")
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "sbd_harness.emulator.supervisor", str(self.state.dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
        )
        log.close()
        _SUPERVISORS[supervisor.pid] = supervisor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.state.dir / "ready").exists() and self.state.control_socket.exists():
                self._wait_booted(since=0, timeout=max(1.0, deadline - time.monotonic()))
                return self.describe()
            failure = self.state.dir / "failure.txt"
            if failure.exists():
                raise BoardError(f"board {self.name} failed to start: {failure.read_text().strip()}")
            time.sleep(0.02)
        raise BoardError(f"board {self.name} did not start within {timeout}s; see {self.state.supervisor_log}")

    def _install_micropython(self) -> None:
        """MicroPython's app image in ota_0 when no app slot holds one (a new board, or
        one made before the emulated bootloader checked images): what `esptool
        write-flash 0x1000 micropython.bin` leaves on a chip."""
        image = self.flash_image()
        slots = [p for p in image.partitions() if p.type == 0]
        if slots and all(image.read(p.offset, 1) != b"\xe9" for p in slots):
            from sbd_harness.release.app_image import micropython_image
            image.write(slots[0].offset, micropython_image())

    def stop(self, timeout: float = 10) -> None:
        if self.is_running():
            pid = self.state.read_status().get("supervisor_pid")
            try:
                self.control({"cmd": "stop"})
            except BoardError:
                if pid:
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid and _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        conf = self.conf
        net = conf.get("net") or {}
        if net.get("mode") == "netns":
            netlab.teardown(self.state.dir.resolve(), net.get("netns"), net.get("host_if"))
        self.state.mark_stopped()

    def remove(self) -> None:
        """Stops the board and throws it away: flash, identity and logs."""
        if self.state.exists():
            self.stop()
        shutil.rmtree(self.state.dir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        conf = self.conf
        running = self.is_running()
        net = (conf.get("net") or {}) if running else {}  # a stopped board holds no address: another may have it now
        return {
            "name": self.name,
            "kind": self.kind,
            "serial": conf.get("serial") if running else None,
            "serial_link": str(self.state.serial_link),
            "address": net.get("address"),
            "network": net.get("mode"),
            "netns": net.get("netns"),
            "broker_port": self.broker_port,
            "flash": str(self.state.flash_path),
            "unique_id": conf["unique_id"],
            "running": running,
            "cpu_pid": self.state.read_status().get("cpu_pid"),
            "weakened_by_loopback": netlab.LOOPBACK_WEAKENS if (conf.get("net") or {}).get("mode") == "loopback" else [],
        }

    @property
    def port(self) -> str:
        """The PTY itself (/dev/pts/N): stable for as long as the board runs."""
        conf = self.conf
        if not self.is_running() or "serial" not in conf:
            raise BoardError(f"board {self.name} is not running (sbd board start {self.name})")
        return conf["serial"]

    @property
    def address(self) -> str | None:
        return (self.conf.get("net") or {}).get("address")

    # the bench's hands -------------------------------------------------------------------
    def control(self, request: dict[str, Any], timeout: float = 5) -> dict[str, Any]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self.state.control_socket))
            sock.sendall(json.dumps(request).encode() + b"\n")
            raw = b""
            while not raw.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                raw += chunk
        except OSError as exc:
            raise BoardError(f"board {self.name} is not answering ({exc}); is it running?") from exc
        finally:
            sock.close()
        reply = json.loads(raw or b"{}")
        if not reply.get("ok"):
            raise BoardError(reply.get("error", "the board refused"))
        return reply

    def trigger_reset(self, port: serial.Serial, kind: str) -> None:
        if kind in ("hard", "power-cut"):
            self.control({"cmd": "reset", "kind": kind})
        else:
            super().trigger_reset(port, kind)

    def reset(self, kind: str = "hard", timeout: float = 15) -> None:
        """Resets and returns once the new boot shows a prompt or a boot line."""
        if kind not in ("hard", "power-cut"):
            super().reset(kind, timeout)
            return
        since = self.log_size()
        self.control({"cmd": "reset", "kind": kind})
        self._wait_booted(since, timeout, after="rst:0x")

    def power_cut(self, timeout: float = 15) -> None:
        self.reset("power-cut", timeout)

    def cpu_pid(self) -> int | None:
        return self.control({"cmd": "status"}).get("cpu_pid")

    def press_boot_button(self, pressed: bool = True) -> None:
        self.control({"cmd": "pin", "pin": BOOT_BUTTON_GPIO, "level": 0 if pressed else 1})

    def flash_image(self) -> FlashImage:
        return FlashImage(self.state.flash_path, self.conf["partition_table_offset"])

    def observed_radios(self) -> dict[str, bool]:
        """What the supervisor saw the CPU do with its radios since it last started: the board's
        own word is not asked (rom/network.py and rom/bluetooth.py tell the supervisor)."""
        radios = self.control({"cmd": "status"}).get("radios")
        return {str(k): bool(v) for k, v in radios.items()} if isinstance(radios, dict) else {}

    def erase_flash(self) -> None:
        """Every data partition back to 0xFF; the app slots, which hold MicroPython
        itself, are kept: `esptool erase-flash` then re-flashing MicroPython."""
        image = self.flash_image()
        for part in image.partitions():
            if part.type != 0:  # app slots hold "MicroPython itself"
                image.erase_partition(part.label)

    def set_link(self, up: bool) -> None:
        net = self.own_network()
        if net is None:
            raise BoardError("this board shares the host's loopback: its link cannot be cut (run as root)")
        netlab.set_link(net["host_if"], up)

    def own_network(self) -> dict[str, Any] | None:
        net = self.conf.get("net") or {}
        return net if net.get("mode") == "netns" and net.get("netns") and net.get("host_if") else None

    def log_size(self) -> int:
        try:
            return self.state.serial_log.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_output(self, marker: str, since: int = 0, timeout: float = 20, after: str | None = None) -> str:
        """Waits until the serial log, from byte `since` on (and past `after`, if given),
        shows `marker`; returns the log from `since`."""
        deadline = time.monotonic() + timeout
        while True:
            text = self._log_since(since)
            start = 0 if after is None else text.find(after)
            if start >= 0 and marker in text[start + len(after or ""):]:
                return text
            if time.monotonic() > deadline:
                raise BoardError(f"board {self.name}: no {marker!r} on the serial port within {timeout}s")
            time.sleep(0.02)

    def _wait_booted(self, since: int, timeout: float, after: str = "") -> None:
        """Until a boot shows a prompt or a boot line (a locked board shows no prompt)."""
        markers = [m.decode() for m in self.BOOTED_MARKERS]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._log_since(since)
            start = text.find(after)
            if start >= 0 and any(m in text[start:] for m in markers):
                return
            time.sleep(0.02)

    def log_since(self, since: int) -> str:
        return self._log_since(since)

    def _log_since(self, since: int) -> str:
        try:
            with open(self.state.serial_log, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def reset_and_wait(self, kind: str = "hard", marker: str = ">>> ", timeout: float = 20) -> str:
        """Resets and waits for the boot to reach `marker` (by default the REPL prompt)."""
        since = self.log_size()
        after = "MPY: soft reboot" if kind == "soft" else "rst:0x"
        if kind == "soft":
            super().reset(kind, timeout)
        else:
            self.control({"cmd": "reset", "kind": kind})
        return self.wait_for_output(marker, since, timeout, after=after)

    def serial_log(self) -> str:
        try:
            return self.state.serial_log.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""
