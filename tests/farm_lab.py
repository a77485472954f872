"""A labgrid farm on this machine, loopback only: a coordinator, the emulated boards' power
endpoint and an exporter, each on a free port, each stopped at the end (by its process group)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port}")


class Farm:
    """`with Farm(folder) as farm: farm.export(boards)`; `farm.env` reaches its coordinator."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.coordinator = f"{LOOPBACK}:{free_port()}"
        self.power_port = free_port()
        self.env = {**os.environ, "LG_COORDINATOR": self.coordinator, "TERM": "dumb"}
        self.procs: list[subprocess.Popen] = []

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> "Farm":
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._start("coordinator", [str(BIN / "labgrid-coordinator"), "--listen", self.coordinator])
            self._start("power", [str(BIN / "sbd"), "farm", "power", "--listen", f"{LOOPBACK}:{self.power_port}"])
            wait_port(int(self.coordinator.rsplit(":", 1)[1]))
            wait_port(self.power_port)
        except BaseException:
            self.__exit__()
            raise
        return self

    def client(self, *args: str, user: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(self.env, **({"LG_USERNAME": user} if user else {}))
        return subprocess.run([str(BIN / "labgrid-client"), *args], env=env, capture_output=True, text=True,
                              timeout=60, check=check)

    def export(self, boards: list, exporter: str = "farmtest") -> Path:
        """Writes the exporter configuration with `sbd farm exporter-config`, starts the exporter,
        makes a place per board and waits until the coordinator lists their resources."""
        config = self.folder / "exporter.yaml"
        subprocess.run([str(BIN / "sbd"), "farm", "exporter-config", *[b.name for b in boards],
                        "--power-url", f"http://{LOOPBACK}:{self.power_port}", "--exporter", exporter,
                        "--out", str(config)], check=True, capture_output=True, env=self.env)
        self._start("exporter", [str(BIN / "labgrid-exporter"), "--coordinator", self.coordinator,
                                 "--name", exporter, "--hostname", LOOPBACK, str(config)])
        wanted = {f"{exporter}/sbd-{b.name}/{cls}" for b in boards for cls in ("NetworkSerialPort", "NetworkPowerPort")}
        deadline = time.monotonic() + 30
        while not wanted <= set(self.client("resources", check=False).stdout.split()):
            if time.monotonic() > deadline:
                raise TimeoutError("the exporter's resources never reached the coordinator: "
                                   + (self.folder / "exporter.log").read_text()[-2000:])
            time.sleep(0.2)
        for b in boards:
            self.client("-p", b.name, "create")
            self.client("-p", b.name, "add-match", f"{exporter}/sbd-{b.name}/*")
        return config

    def holder(self, place: str) -> str | None:
        for line in self.client("-p", place, "show").stdout.splitlines():
            if line.strip().startswith("acquired:"):
                value = line.split(":", 1)[1].strip()
                return None if value == "None" else value
        return None

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):  # the exporter first: it stops its ser2net children
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
