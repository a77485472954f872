"""`make demo`: the story so far, on emulated boards, from nothing.

Starts a fresh emulated ESP32, flashes the reference firmware, shows its boot
line, provisions it from the lab CA (its own key, a certificate, the lab's
release key, a locked console), shows the device's birth message and telemetry
arriving at the lab broker over mutual TLS, pushes a signed update (committed),
replays it and pushes a tampered one (both refused), pushes a whole-firmware
update (an app image, committed after its trial boot), and runs
`sbd verify --destructive`. A second board gets the insecure lab build, is
provisioned the same way and verified, and the demo ends with both reports
side by side, then with how long each step took (also written to
`bench/demo.json`).

Where the time goes, and what overlaps:

- The board goes through `boards.lifecycle` (fresh -> flashed -> provisioned
  -> locked -> online) with one reset, the one whose boot line step 2 shows:
  the lab broker runs before the console locks, so the board's first locked
  boot is its connection, and the update, its replay and the tampered release
  all go over that one connection.
- Work that tells nothing by itself runs in two background threads while the
  reference's story is told: building the three updates (`sbd ota build`), and
  the insecure board's whole path (start, `sbd flash --profile insecure`,
  provisioning, `sbd verify`). They print nothing; steps 5 and 7 print what
  they did. The insecure board's broker gets a port of its own at
  provisioning, so its `sbd verify` and the reference's never share a broker
  (the lab CA, which both use, serialises its own writes).
- Almost all the remaining time is the two `sbd verify` runs, which overlap.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sbd_harness.boards import lifecycle
from sbd_harness.boards.base import BoardError
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.device.contract import ONLINE_AFTER_RESET_S, topics
from sbd_harness.emulator import netlab
from sbd_harness.errors import SbdError
from sbd_harness.identity.pki import LabCA
from sbd_harness.lab.broker import Broker, free_port, lab_address
from sbd_harness.lab.watch import Watcher, on_topic
from sbd_harness.paths import firmware_dir
from sbd_harness.release.bundle import VERSION_RE, FirmwareBundle
from sbd_harness.release.ota import OTAError, ReleaseKey, install, lab_release_key, push, verify_stream

BOARD = "demo"
INSECURE_BOARD = "demo-insecure"
TELEMETRY_TIMEOUT_S = 25  # the firmware takes a reading at boot, then every 10 s
WORK = Path("build/demo")   # the demo's release folders, update files and the insecure build
INSECURE_BUILD = WORK / "insecure"
REPORTS = Path("reports/demo")
INSECURE_REPORTS = Path("reports/demo-insecure")
BENCH = Path("bench/demo.json")
UPDATE_VERSION = "0.2.0"
NEXT_VERSION = "0.2.1"
# The whole-firmware update of step 5: an app image of the project the board runs (MicroPython),
# one secure version up. On the emulated board its code never runs: the bootloader checks and
# boots it, and the board reports its app descriptor (docs/emulated-board.md, app slots).
IMAGE_RELEASE = "0.3.0"  # the release's version, in the signed manifest
IMAGE_VERSION = "v1.29.0-demo.1"  # the app's own, in the image's app descriptor
IMAGE_SECURE_VERSION = 1
IMAGE_KIB = 256
VERIFY_REFERENCE = f"sbd verify {BOARD} --destructive"
# The reference's documented gaps, accepted by its sbd verify: plaintext NVS (docs/identity.md).
ACCEPTED_GAPS = ("keys-at-rest-protected",)
STEP_VERIFY = f"6 {VERIFY_REFERENCE}"
STEP_INSECURE = f"7 {INSECURE_BOARD}: wait for its verify to end, show it"
VERIFY_INSECURE = f"sbd verify {INSECURE_BOARD}"


# time ------------------------------------------------------------------------------------
class Clock:
    """Spans of the demo, in seconds from its start: the story's steps (one after the
    other, in the main thread) and the background work (overlapping them)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.steps: dict[str, float] = {}
        self.background: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.t0

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = self.now()
        try:
            yield
        finally:
            with self._lock:
                self.steps[name] = self.steps.get(name, 0.0) + self.now() - start

    @contextlib.contextmanager
    def task(self, name: str) -> Iterator[None]:
        start = self.now()
        try:
            yield
        finally:
            with self._lock:
                self.background[name] = (start, self.now())


# the sbd command, as a user runs it ------------------------------------------------------
def sbd_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sbd_harness", *args]


def shown(args: list[str]) -> str:
    return "$ sbd " + " ".join(args)


@dataclass
class Ran:
    """One `sbd` command run in the background: its arguments, exit code and output."""

    args: list[str]
    code: int
    output: str


def run_sbd(args: list[str], log: Path | None = None, started: Callable[[subprocess.Popen], None] | None = None) -> Ran:
    """Runs `sbd args` with its output kept (in `log` as it comes, when given), not printed."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with (open(log, "w+") if log is not None else contextlib.nullcontext()) as sink:
        proc = subprocess.Popen(sbd_argv(*args), stdin=subprocess.DEVNULL,
                                stdout=sink if sink is not None else subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=dict(os.environ, COLUMNS="120"))
        if started is not None:
            started(proc)
        out, _ = proc.communicate()
        if sink is not None:
            sink.seek(0)
            out = sink.read()
    return Ran(args, proc.returncode, out or "")


def stop_process(proc: subprocess.Popen | None) -> None:
    """Ends an `sbd` run this demo started as Ctrl-C would, so it stops its broker and boards' links."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# background work ---------------------------------------------------------------------------
class Background(threading.Thread):
    """Work done while the story is told. Prints nothing; `error` says what failed."""

    def __init__(self, name: str, clock: Clock):
        super().__init__(name=name, daemon=True)
        self.clock = clock
        self.error: str | None = None
        self.procs: list[subprocess.Popen] = []

    def work(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.work()
        except (SbdError, OSError) as exc:
            self.error = str(exc)
        except Exception as exc:  # shown in step 7 rather than lost with the thread
            self.error = f"{type(exc).__name__}: {exc}"

    def started(self, proc: subprocess.Popen) -> None:
        self.procs.append(proc)

    def cancel(self) -> None:
        for proc in self.procs:
            stop_process(proc)


def release_folder(version: str) -> Path:
    """A copy of the reference firmware reporting `version`: the manufacturer's next release."""
    target = WORK / f"firmware-{version}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(firmware_dir(), target, ignore=shutil.ignore_patterns("__pycache__"))
    vpath = target / "lib/sbd/version.py"
    vpath.write_text(VERSION_RE.sub(f'VERSION = "{version}"', vpath.read_text(), count=1))
    return target


def app_image_file() -> Path:
    """The app image of step 5's whole-firmware update: a real ESP32 app image (esptool's format,
    with its app descriptor), standing in for a MicroPython build, which the emulated board does
    not run."""
    from sbd_harness.release.app_image import AppDescriptor, build_app_image
    path = WORK / f"micropython-{IMAGE_VERSION}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_app_image(AppDescriptor("micropython", IMAGE_VERSION, IMAGE_SECURE_VERSION),
                                     IMAGE_KIB * 1024, b"demo"))
    return path


class Updates(Background):
    """Release 0.2.0 and the next one, 0.2.1, each built and signed with `sbd ota build`; and a
    whole-firmware update, an app image signed with `sbd ota build --image`."""

    def __init__(self, clock: Clock):
        super().__init__("updates", clock)
        self.folder = WORK / f"firmware-{UPDATE_VERSION}"
        self.update = WORK / f"update-{UPDATE_VERSION}.sbdota"
        self.next = WORK / f"update-{NEXT_VERSION}.sbdota"
        self.image = WORK / f"update-{IMAGE_VERSION}.sbdota"
        self.builds: list[Ran] = []

    def work(self) -> None:
        with self.clock.task("build the updates (three sbd ota build at once)"):
            builds = []
            for version, counter, out in ((UPDATE_VERSION, 2, self.update), (NEXT_VERSION, 3, self.next)):
                out.unlink(missing_ok=True)
                builds.append(["ota", "build", "--firmware", str(release_folder(version)), "--counter",
                               str(counter), "--out", str(out)])
            self.image.unlink(missing_ok=True)
            builds.append(["ota", "build", "--image", str(app_image_file()), "--version", IMAGE_RELEASE,
                           "--counter", "1", "--out", str(self.image)])
            with ThreadPoolExecutor(len(builds), thread_name_prefix="build") as pool:
                self.builds = list(pool.map(lambda args: run_sbd(args, started=self.started), builds))
        failed = [ran for ran in self.builds if ran.code != 0]
        if failed:
            self.error = f"{shown(failed[0].args)} exited with {failed[0].code}"


class Insecure(Background):
    """The second board's whole path: a fresh board, the insecure lab build, provisioned
    from the same lab CA for a broker port of its own, locked, and `sbd verify`."""

    def __init__(self, clock: Clock, port: int):
        super().__init__("insecure", clock)
        self.port = port
        self.board = EmulatedBoard(INSECURE_BOARD)
        self.info: dict[str, Any] = {}
        self.flash: Ran | None = None
        self.provisioned: lifecycle.ProvisionResult | None = None
        self.verify: Ran | None = None
        self.verify_args = ["verify", "--board", INSECURE_BOARD, "--firmware", str(INSECURE_BUILD),
                            "--broker", f"{lab_address()}:{port}",
                            "--report", str(INSECURE_REPORTS / "report.json")]

    def work(self) -> None:
        with self.clock.task(f"{INSECURE_BOARD}: a fresh board"):
            if self.board.state.exists():
                self.board.remove()
            self.info = self.board.start()
        with self.clock.task(f"{INSECURE_BOARD}: sbd flash --profile insecure"):
            self.flash = run_sbd(["flash", "--board", INSECURE_BOARD, "--profile", "insecure",
                                  "--build-dir", str(INSECURE_BUILD)], started=self.started)
        if self.flash.code != 0:
            self.error = f"sbd flash exited with {self.flash.code}"
            return
        with self.clock.task(f"{INSECURE_BOARD}: provision and lock"):
            self.provisioned = lifecycle.provisioned(self.board, LabCA(), broker_port=self.port)
        with self.clock.task(VERIFY_INSECURE):
            self.verify = run_sbd(self.verify_args, log=INSECURE_REPORTS / "verify.log", started=self.started)


# the story -----------------------------------------------------------------------------------
def _broker_user_line(broker: Broker, device_id: str, timeout: float = 3) -> str | None:
    """mosquitto's line for the device's connection: the certificate's CN as its user name."""
    deadline = time.monotonic() + timeout
    while True:
        lines = broker.log_path.read_text(errors="replace").splitlines()
        found = [line for line in lines if f"u'{device_id}'" in line]
        if found or time.monotonic() > deadline:
            return found[-1] if found else None
        time.sleep(0.1)


def _net_events(board: EmulatedBoard, count: int = 3) -> list[str]:
    """The firmware's last network log lines ({"sbd": "net", ...}) on the serial port."""
    return [line for line in board.serial_log()[-6000:].splitlines() if '"sbd": "net"' in line][-count:]


def two_ports(address: str) -> tuple[int, int]:
    """Two different free ports: one broker each, so that neither board's `sbd verify` meets the
    other's broker, and neither meets a broker someone else runs on the lab's usual 8883."""
    first = free_port(address)
    second = free_port(address)
    while second == first:
        second = free_port(address)
    return first, second


class Story:
    def __init__(self, console: Console, clock: Clock):
        self.console = console
        self.clock = clock
        self.print = console.print
        self.board = EmulatedBoard(BOARD)
        self.ca = LabCA()
        self.address = lab_address()
        self.port, self.insecure_port = two_ports(self.address)
        self.key: ReleaseKey | None = None
        self.updates = Updates(clock)
        self.insecure = Insecure(clock, self.insecure_port)
        self.device_id = ""
        self.reference_verify: int | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bundle")
        self.bundle: Future[FirmwareBundle] = self.pool.submit(FirmwareBundle.from_dir)  # built while boards start

    def say(self, text: str) -> None:
        self.print(text, highlight=False, soft_wrap=True)

    def fail(self, text: str) -> bool:
        self.print(f"[red]{escape(text)}[/]", soft_wrap=True)
        return False

    # the lab: made on first use ------------------------------------------------------------
    def lab(self) -> bool:
        if self.ca.exists():
            self.say(f"lab CA       {self.ca.dir}")
        else:
            self.ca.init()
            self.say(f"lab CA       made {self.ca.dir} (first use)")
        self.key, made = lab_release_key()
        self.say(f"release key  {'made ' if made else ''}{self.key.path} (key ID {self.key.key_id.hex()})"
                 f"{' (first use)' if made else ''}; provisioning installs its public key")
        self.say(f"lab network  {'a network namespace per board' if netlab.namespaces_available() else 'loopback'}"
                 f"; the host is {self.address}")
        self.updates.start()  # both need the lab CA and the release key, nothing else
        self.insecure.start()
        self.say(f"In the background from now on: the two updates of step 5 are built, and a second board, "
                 f"{INSECURE_BOARD}, gets the insecure lab build and is verified; steps 5 and 7 show them.")
        if self.board.state.exists():
            self.board.remove()  # the story starts from a fresh board every time
        return True

    # 1 ---------------------------------------------------------------------------------------
    def start(self) -> bool:
        info = self.board.start()
        self.console.print_json(json.dumps(info))
        return True

    # 2 ---------------------------------------------------------------------------------------
    def flash(self) -> bool:
        self.say(f"[bold]$ sbd flash --board {BOARD} --no-reset[/]")
        bundle = self.bundle.result()
        lifecycle.flashed(self.board, bundle, reset=False)
        self.say(f"flashed {len(bundle.files)} files ({bundle.total_bytes} bytes), firmware {bundle.version}, "
                 f"bundle sha256 {bundle.sha256}; the device computed every file's SHA-256 and it matches")
        self.say("Then one reset (the EN button). The serial port shows the first boot of the firmware, which "
                 "makes the device's key pair:")
        capture = self.board.capture_boot("hard")
        print(capture.transcript.strip(), flush=True)
        if capture.boot_line is None:
            return self.fail(f"{BOARD} showed no boot line after flashing")
        self.device_id = str(capture.boot_line["device_id"])
        return True

    # 3, 4, 5: one broker, one connection -------------------------------------------------------
    def provision_and_connect(self) -> bool:
        """Steps 3 to 5. The broker runs and a subscriber is on the device's topics before the console
        locks, so the reboot that locks it is also the boot that brings it online: no reset."""
        topic = topics(self.device_id)
        broker = Broker(self.ca, address=self.address, port=self.port).start()
        try:
            with Watcher(broker, topic.all, persistent=True) as watcher:
                with self.clock.step("3 provision and lock"):
                    self.console.rule("[bold]3. Provision: a key born on the device, a certificate from the lab CA")
                    result = lifecycle.provisioned(self.board, self.ca, broker_port=self.port)
                    if result.device_id != self.device_id:
                        return self.fail(f"the device says it is {result.device_id}, its boot line said "
                                         f"{self.device_id}")
                    cert = result.issued.certificate
                    self.say(f"subject      {cert.subject.rfc4514_string()}")
                    self.say(f"issuer       {cert.issuer.rfc4514_string()}")
                    self.say(f"fingerprint  SHA-256 {result.issued.fingerprint}")
                    self.say(f"valid until  {cert.not_valid_after_utc:%Y-%m-%d}")
                    self.say(f"settings     the lab's Wi-Fi and its broker at {self.address}:{self.port}; "
                             f"release key {self.key.key_id.hex() if self.key else '?'} trusted for updates")
                    self.say("The console locked and the board rebooted:")
                    self.say(f"boot line    {json.dumps(result.boot_line)}")
                with self.clock.step("4 online: birth, broker log, telemetry"):
                    self.console.rule("[bold]4. Telemetry over mutual TLS, through the lab broker")
                    online = self.online(broker, watcher)
                if online is None:
                    return False
                with self.clock.step("5 signed update, replay, tampered release, app image"):
                    self.console.rule("[bold]5. A signed update over the same connection; then a replay, a "
                                      "tampered one, and a whole-firmware update")
                    return self.update(online)
        finally:
            broker.stop(remove=True)

    def online(self, broker: Broker, watcher: Watcher) -> lifecycle.Online | None:
        topic = topics(self.device_id)
        self.say(f"broker       mosquitto on {broker.address}:{broker.port}, where provisioning pointed the board, "
                 "running since before the console locked")
        self.say("             TLS 1.2+, lab CA client certificates required, ACL devices/%u/#")
        try:
            birth = lifecycle.wait_online(self.board, watcher, topic, ONLINE_AFTER_RESET_S, reset=False)
        except BoardError as exc:
            self.fail(str(exc))
            self.say("Its last network events on the serial port:")
            for line in _net_events(self.board) or ["(none)"]:
                self.print(f"  {line}", markup=False, highlight=False)
            return None
        self.say(f"[bold]{topic.state}[/] (birth message, retained; sent at the board's first boot after "
                 "locking, its first connection)")
        self.console.print_json(json.dumps(birth))
        user_line = _broker_user_line(broker, self.device_id)
        if user_line is None:
            self.fail(f"No line of the broker's log shows the user name {self.device_id!r}: the broker did not "
                      "take the certificate's CN as the user name.")
            return None
        self.say("broker log   the client certificate's CN is the device's MQTT user name:")
        self.print(f"  {user_line}", markup=False, highlight=False, soft_wrap=True)
        reading = watcher.wait_for(on_topic(topic.telemetry), TELEMETRY_TIMEOUT_S)
        if reading is None:
            self.fail(f"No telemetry arrived on {topic.telemetry} within {TELEMETRY_TIMEOUT_S} s of the birth "
                      "message.")
            for line in _net_events(self.board) or ["(none)"]:
                self.print(f"  {line}", markup=False, highlight=False)
            return None
        self.show_telemetry(reading)
        self.say("The firmware takes a reading at boot and every 10 s. Each reading is stored in the flash "
                 "outbox and leaves it once the broker has acknowledged it (QoS 1): readings taken while no "
                 "broker is reachable arrive later, in order, and seq runs on across reboots (step 5 shows "
                 "the next ones).")
        return lifecycle.Online(self.board, self.device_id, topic, watcher, birth)

    def show_telemetry(self, m: Any) -> None:
        self.say(f"[bold]{m.topic}[/]  {escape(m.payload.decode(errors='replace'))}")

    def builds(self) -> bool:
        """Step 5's updates, built in the background; their `sbd ota build` output."""
        self.updates.join()
        for ran in self.updates.builds:
            self.say(f"[bold]{escape(shown(ran.args))}[/]")
            self.print(ran.output.rstrip(), markup=False, highlight=False)
        if self.updates.error:
            return self.fail(f"The updates could not be built: {self.updates.error}")
        return True

    def update(self, online: lifecycle.Online) -> bool:
        self.say(f"(built in the background while steps 1 to 4 ran, signed with the release key "
                 f"{self.key.key_id.hex() if self.key else ''})")
        if not self.builds():
            return False
        pushed = f"--update {self.updates.update}"
        self.say(f"[bold]$ sbd ota push --board {BOARD} {pushed}[/] (what it does, done here over the "
                 "connection of step 4)")
        stream = self.updates.update.read_bytes()

        def installed(result: dict) -> None:
            self.say(f"installed {result.get('version')} in slot {result.get('slot')}; waiting for "
                     f"{self.device_id} to restart into it and commit it")

        try:
            result = install(online, stream, on_installed=installed)
        except (OTAError, BoardError) as exc:
            return self.fail(f"The signed update was not committed: {exc}")
        self.console.print_json(json.dumps(result))
        if result.get("event") != "committed":
            return self.fail("The signed update was not committed.")
        self.say(f"The device verified the signature and every file, switched slots, booted {UPDATE_VERSION} "
                 "on trial, reached the broker and committed it.")

        self.say("\nThe same update again, replayed by someone who recorded it:")
        self.say(f"[bold]$ sbd ota push --board {BOARD} {pushed}[/]")
        replay = push(online.watcher, self.device_id, stream)
        self.console.print_json(json.dumps(replay))
        if replay.get("event") != "rejected":
            return self.fail("The device installed a replayed update.")

        data = bytearray(self.updates.next.read_bytes())
        data[-1] ^= 0x01  # one bit of the last byte: inside the last file
        tampered = WORK / f"update-{NEXT_VERSION}-tampered.sbdota"
        tampered.write_bytes(bytes(data))
        self.say(f"\nThe next release, {NEXT_VERSION}, signed, with one bit flipped at byte {len(data) - 1} "
                 "on its way:")
        try:
            verify_stream(bytes(data), [self.key.public_point] if self.key else [])
            return self.fail("The host found nothing wrong with the tampered update.")
        except OTAError as exc:
            self.say(f"sbd ota inspect says: {escape(str(exc))}")
        self.say(f"[bold]$ sbd ota push --board {BOARD} --update {tampered}[/]")
        refused = push(online.watcher, self.device_id, bytes(data))
        self.console.print_json(json.dumps(refused))
        if refused.get("event") != "rejected":
            return self.fail("The device accepted a tampered update.")
        self.say(f"The device refused both and keeps running {UPDATE_VERSION}: authenticity and freshness are "
                 "checked on the device, end to end, whatever the transport.")
        later = online.watcher.seen(on_topic(online.topic.telemetry))[1:]
        if later:
            self.say("Telemetry meanwhile, across the restart into the new version:")
            for m in later:
                self.show_telemetry(m)
        return self.image_update(online)

    def image_update(self, online: lifecycle.Online) -> bool:
        """A whole-firmware update: the app image goes into the app slot not running, boots on
        trial through the bootloader and commits after the health check; the birth message then
        names the new app."""
        self.say(f"\nRelease {IMAGE_RELEASE}, a whole-firmware update: MicroPython, ESP-IDF and all, as an app "
                 f"image ({IMAGE_VERSION}, secure version {IMAGE_SECURE_VERSION}, {IMAGE_KIB} KiB) into the app "
                 "slot not running:")
        self.say(f"[bold]$ sbd ota push --board {BOARD} --update {self.updates.image}[/]")
        since = time.monotonic()

        def installed(result: dict) -> None:
            self.say(f"installed {result.get('version')} in app slot {result.get('slot')}; the bootloader boots "
                     "it on trial, and the firmware marks it valid once it has reached the broker")

        try:
            result = install(online, self.updates.image.read_bytes(), on_installed=installed)
        except (OTAError, BoardError) as exc:
            return self.fail(f"The app image was not committed: {exc}")
        self.console.print_json(json.dumps(result))
        if result.get("event") != "committed":
            return self.fail("The app image was not committed.")
        births = [m.json() for m in online.watcher.seen(
            lambda m: m.topic == online.topic.state and m.at >= since and not m.retain)]
        app = next((b.get("app") for b in reversed(births) if isinstance(b, dict) and b.get("online")), None)
        self.say(f"The birth message after the switch names the app the bootloader booted: {json.dumps(app)}")
        if not isinstance(app, dict) or app.get("version") != IMAGE_VERSION:
            return self.fail(f"The device does not report running {IMAGE_VERSION}.")
        boot = [line.strip() for line in self.board.serial_log().splitlines() if "Loaded app from partition" in line]
        if boot:
            self.say(f"serial       {escape(boot[-1])}")
        return True

    # 6 ---------------------------------------------------------------------------------------
    def verify_reference(self) -> bool:
        args = ["verify", "--board", BOARD, "--firmware", str(self.updates.folder),
                "--broker", f"{self.address}:{self.port}", "--report", str(REPORTS / "report.json"),
                "--destructive", "--accepted-failures", ",".join(ACCEPTED_GAPS)]
        self.say(f"[bold]{escape(shown(args))}[/]")
        self.say(f"(The checks of {INSECURE_BOARD} run at the same time on a broker of their own; step 7 "
                 "shows them.)")
        start = self.clock.now()
        try:
            self.reference_verify = subprocess.run(sbd_argv(*args), stdin=subprocess.DEVNULL).returncode
        finally:
            self.clock.background[VERIFY_REFERENCE] = (start, self.clock.now())
        return (REPORTS / "report.json").exists()

    # 7 ---------------------------------------------------------------------------------------
    def insecure_story(self) -> int | None:
        """What the background did with the second board; its `sbd verify` exit code."""
        bad = self.insecure
        if bad.is_alive():
            self.say(f"(waiting for the checks of {INSECURE_BOARD} to end)")
            bad.join()
        if bad.info:
            self.say(f"$ sbd board start {INSECURE_BOARD}")
            self.say(f"board        {bad.info.get('name')}: serial {bad.info.get('serial')}, "
                     f"address {bad.info.get('address')}, unique ID {bad.info.get('unique_id')}")
        if bad.flash is not None:
            self.say(f"[bold]{escape(shown(bad.flash.args))}[/]")
            self.print(bad.flash.output.rstrip(), markup=False, highlight=False)
        if bad.provisioned is not None:
            self.say(f"provisioned  {bad.provisioned.issued.certificate.subject.rfc4514_string()} by the same lab CA, "
                     f"fingerprint SHA-256 {bad.provisioned.issued.fingerprint}; its broker at "
                     f"{self.address}:{bad.port}, a port of its own")
            self.say(f"boot line    {json.dumps(bad.provisioned.boot_line)}")
        if bad.verify is not None:
            self.say(f"[bold]{escape(shown(bad.verify.args))}[/]")
            output = bad.verify.output.rstrip()
            table = output.find(f"sbd verify: {INSECURE_BOARD}")
            if table >= 0:  # its table; pytest's account of each failure stays in the log
                output = output[output.rfind("\n", 0, table) + 1:]
                self.say(f"(pytest's account of each failure: {INSECURE_REPORTS / 'verify.log'})")
            self.print(output, markup=False, highlight=False, soft_wrap=True)
        if bad.error or bad.verify is None:
            self.fail(f"{INSECURE_BOARD} could not be set up: {bad.error or 'no verify ran'}")
            return None
        return bad.verify.code

    def stop_all(self) -> None:
        self.pool.shutdown(wait=True)
        for task in (self.updates, self.insecure):
            task.cancel()
        if self.insecure.is_alive():
            self.insecure.join(30)
        for board in (self.board, self.insecure.board):
            with contextlib.suppress(SbdError, OSError):
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
    ref_failed = [c["id"] for c in ref["checks"] if c["status"] in ("fail", "error") and c["id"] not in ACCEPTED_GAPS]
    return not ref_failed and bad["summary"]["fail"] > 0


def timings(clock: Clock, total: float, ok: bool) -> dict[str, Any]:
    """bench/demo.json (docs/benchmarks.md#the-demo)."""
    waiting = sum(s for name, s in clock.steps.items() if name in (STEP_VERIFY, STEP_INSECURE))
    return {
        "demo_s": round(total, 1),
        "overhead_s": round(total - waiting, 1),
        "steps": {name: round(s, 1) for name, s in clock.steps.items()},
        "background": {name: {"start_s": round(a, 1), "end_s": round(b, 1), "s": round(b - a, 1)}
                       for name, (a, b) in sorted(clock.background.items(), key=lambda kv: kv[1])},
        "ok": ok,
        "_meta": {"network": "netns" if netlab.namespaces_available() else "loopback",
                  "python": platform.python_version(), "machine": platform.machine(),
                  "cpus": os.cpu_count(),
                  "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
    }


def show_timings(console: Console, figures: dict[str, Any], out: Path) -> None:
    table = Table(title=f"Where the time went: {figures['demo_s']:.0f} s in all")
    table.add_column("step (one after the other)")
    table.add_column("s", justify="right")
    for name, s in figures["steps"].items():
        table.add_row(name, f"{s:.1f}")
    console.print(table)
    table = Table(title="Overlapping them")
    for column in ("in the background, or beside the story", "from s", "to s", "s"):
        table.add_column(column, justify="left" if column.startswith("in") else "right")
    for name, span in figures["background"].items():
        table.add_row(name, f"{span['start_s']:.1f}", f"{span['end_s']:.1f}", f"{span['s']:.1f}")
    console.print(table)
    console.print(f"The demo's own time, all but running and waiting for the two sbd verify: "
                  f"{figures['overhead_s']:.1f} s. Written to {out}.", highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sbd_harness.tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BENCH, help=f"where to write the step timings (default {BENCH})")
    args = parser.parse_args(argv)
    console = Console()
    clock = Clock()
    story = Story(console, clock)
    code = 1
    try:
        code = tell(story, console, clock)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        code = 130
    except (SbdError, OSError) as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        code = 1
    finally:
        story.stop_all()
    total = clock.now()
    figures = timings(clock, total, code == 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    show_timings(console, figures, args.out)
    if code == 0:
        console.print(f"\nBoth boards are stopped; their flash is kept. Start them again with: sbd board start {BOARD} "
                      f"(or {INSECURE_BOARD}). {INSECURE_BOARD} looks for its broker at "
                      f"{story.address}:{story.insecure_port}: give `sbd verify` and `sbd ota push` "
                      f"--broker {story.address}:{story.insecure_port}. The labs in docs/labs/ start from the "
                      "insecure build.", highlight=False)
    return code


def tell(story: Story, console: Console, clock: Clock) -> int:
    with clock.step("lab: CA, release key, old boards removed"):
        console.rule("[bold]The lab")
        story.lab()
    with clock.step("1 a fresh board"):
        console.rule("[bold]1. An emulated ESP32 powers on")
        story.start()
    with clock.step("2 flash, reset, boot line"):
        console.rule("[bold]2. Flash the reference firmware; its boot line, read from the serial port")
        if not story.flash():
            return 1
    if not story.provision_and_connect():
        return 1
    with clock.step(STEP_VERIFY):
        console.rule("[bold]6. sbd verify (with the destructive factory-reset check, run last)")
        if not story.verify_reference():
            story.fail("sbd verify wrote no report for the reference")
            return 1
    with clock.step(STEP_INSECURE):
        console.rule("[bold]7. The insecure lab build, flashed, provisioned and verified the same way")
        insecure = story.insecure_story()
    if insecure is None:
        return 1
    with clock.step("8 the two reports"):
        console.rule("[bold]8. The two reports")
        both = compare(console)
    if story.reference_verify != 0:
        return story.reference_verify
    return 0 if both and insecure == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
