"""The firmware's peak Python heap on a 32-bit MicroPython, against the 64-bit
unix port the emulated board runs (docs/emulated-board.md, Heap).

Why: the ESP32 is a 32-bit chip and the emulated board a 64-bit process, so
the same objects take more heap on the board; how much more decides the
emulated heap size (`firmware_heap_bytes` in boards/emulated/board.json).
Measured, not estimated: the same workloads of the firmware's own modules
(compiled .mpy, as on a device) run on MicroPython's WebAssembly port under
node (32-bit pointers and GC blocks, like the ESP32) and on the unix port.

Each workload runs in steps (heap32_device.py), and every figure is the
firmware's own: the "idle" workload, which sets up the stand-ins for the
chip's ROM and ESP-IDF and runs nothing of the firmware, is subtracted. The
WebAssembly build on npm (the PyScript variant) never collects while Python
code runs, only between calls from JavaScript (ports/webassembly/main.c,
gc_collect), so the driver calls one step at a time; see measure() for what
that allows to measure exactly and what only as bounds.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from sbd_harness.emulator.micropython import micropython_binary
from sbd_harness.errors import SbdError
from sbd_harness.paths import REPO_ROOT

WASM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
WASM_VERSION = "1.27.0"  # the Makefile's MPWASM_VERSION installs it
WASM_DIR = REPO_ROOT / ".venv" / "tools" / "mpwasm"
HERE = Path(__file__).parent
DEVICE_SCRIPT = HERE / "heap32_device.py"
WASM_DRIVER = HERE / "heap32_wasm.mjs"
WORKLOADS = ("idle", "p256", "manifest", "outbox", "mqtt", "connect", "ota", "ota_image")
ESP32_FIRST_HEAP_BYTES = 56 * 1024  # MICROPY_GC_INITIAL_HEAP_SIZE, ports/esp32/mpconfigport.h
FULL_HEAP = 1024 * 1024  # every workload fits in it, on both ports
RUN_TIMEOUT_S = 300


class Heap32Error(SbdError, RuntimeError):
    pass


def wasm_module() -> Path:
    """The installed WebAssembly port's micropython.mjs, at the pinned version."""
    pkg = WASM_DIR / "node_modules" / WASM_PACKAGE
    try:
        version = json.loads((pkg / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        raise Heap32Error(f"{WASM_PACKAGE} is not installed in {WASM_DIR}: run `make setup` (needs node and npm)")
    if version != WASM_VERSION:
        raise Heap32Error(f"{WASM_PACKAGE} {version} is installed, {WASM_VERSION} is pinned: run `make setup`")
    if shutil.which("node") is None:
        raise Heap32Error("node is not installed: the 32-bit MicroPython runs under node")
    return pkg / "micropython.mjs"


# -- the device's files and the inputs --------------------------------------------------------
def prepare(root: Path) -> Path:
    """Writes into `root` what every workload reads: the firmware's /lib (as
    `sbd flash` puts it on a device), heap32_device.mpy, the NVS a provisioned
    device holds, a P-256 signature and a signed update of the same firmware."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from sbd_harness.release import ota
    from sbd_harness.release.bundle import FirmwareBundle, compile_mpy
    bundle = FirmwareBundle.from_dir()
    for path, data in bundle.files.items():
        if path.startswith("/lib/"):
            target = root / path[1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    (root / "heap32_device.mpy").write_bytes(compile_mpy(DEVICE_SCRIPT))
    (root / "data").mkdir(exist_ok=True)
    inputs = root / "inputs"
    inputs.mkdir(exist_ok=True)
    key = ota.ReleaseKey(ec.generate_private_key(ec.SECP256R1()))
    device = ec.generate_private_key(ec.SECP256R1())
    sk = device.private_numbers().private_value.to_bytes(32, "big")
    pk = ota.ReleaseKey(device).public_point
    nvs = {"sk": sk, "pk": pk, "cert": hashlib.sha256(b"cert").digest() * 14,
           "ca": hashlib.sha256(b"ca").digest() * 13, "relkeys": key.public_point}
    lines = [f"sbd {k} b {v.hex()}" for k, v in nvs.items()] + ["sbd locked i 1"]
    (inputs / "nvs.txt").write_text("\n".join(lines) + "\n")
    (inputs / "p256.json").write_text(json.dumps({"pk": key.public_point.hex(), "sig": key.sign(b"heap32").hex(),
                                                  "digest": hashlib.sha256(b"heap32").hexdigest()}))
    update = bundle.with_version("9.9.9")
    manifest = ota.encode_manifest(ota.build_manifest(update, "9.9.9", 2))
    (inputs / "update.sbdota").write_bytes(ota.build_stream(manifest, key, update.files))
    # A whole-firmware update: the running app slot holds MicroPython's image, the update a newer one
    # (256 KiB: the heap does not grow with the image, which streams through one chunk at a time).
    from sbd_harness.release.app_image import AppDescriptor, build_app_image
    (inputs / "ota_0.bin").write_bytes(build_app_image(AppDescriptor("micropython", "v1.29.0", 0), 64 * 1024, b"run"))
    image = build_app_image(AppDescriptor("micropython", "v1.29.0-heap32", 1), 256 * 1024, b"new")
    image_manifest = ota.encode_manifest(ota.build_image_manifest(image, "9.9.9", 2))
    (inputs / "image.sbdota").write_bytes(ota.build_stream(image_manifest, key, {"image": image}))
    (root / "data" / "ota_1.bin").write_bytes(b"\xff" * (256 * 1024 + 4096))
    return root


# -- the two interpreters -----------------------------------------------------------------
def run_unix(root: Path, workload: str, heap: int) -> str:
    """The workload on the unix port (64-bit), what it printed. It runs on a
    copy of `root`: the device writes to its filesystem."""
    with tempfile.TemporaryDirectory(prefix="sbd-heap64-") as tmp:
        device = Path(tmp) / "device"
        shutil.copytree(root, device)
        code = (f"import sys\nsys.path.insert(0, {str(device)!r})\nimport heap32_device\n"
                f"heap32_device.main({workload!r}, {str(device)!r})")
        proc = subprocess.run([micropython_binary(), "-X", f"heapsize={heap}", "-c", code],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return proc.stdout + proc.stderr


def run_wasm(root: Path, workload: str, heap: int) -> str:
    """The workload on the WebAssembly port (32-bit) under node, what it printed."""
    proc = subprocess.run(["node", str(WASM_DRIVER), str(wasm_module()), str(heap), str(root), workload],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return proc.stdout + proc.stderr


PORTS: dict[str, Callable[[Path, str, int], str]] = {"wasm32": run_wasm, "unix64": run_unix}
_TOTAL = re.compile(r"GC: total: (\d+)")


def fitted(said: str) -> tuple[bool, str]:
    """Did the run finish with the heap it started with? (and why not)."""
    totals = _TOTAL.findall(said)
    if "HEAP32 OK" not in said:
        tail = [line for line in said.strip().splitlines() if line.strip()]
        return False, (tail[-1] if tail else "no output")[:200]
    if len(totals) < 2:
        raise Heap32Error(f"no heap figures in the output: {said[-300:]}")
    if totals[-1] != totals[0]:
        return False, f"heap grew from {totals[0]} to {totals[-1]} bytes"
    return True, "OK"


def smallest_heap(port: str, root: Path, workload: str, resolution: int = 256) -> int:
    """The smallest -X heapsize (a multiple of `resolution`) in which `workload`
    fits on `port`, by bisection. Only for a port that collects whenever it
    runs short (the unix port): the WebAssembly build here never does."""
    run = PORTS[port]
    ok, said = fitted(run(root, workload, FULL_HEAP))
    if not ok:
        raise Heap32Error(f"{workload} fails on {port} even with a {FULL_HEAP}-byte heap: {said}")
    lo, hi = 0, FULL_HEAP // resolution
    while hi - lo > 1:
        mid = (lo + hi) // 2
        # Any failure counts: the heap is all that differs from the run
        # above, and the firmware turns some MemoryErrors into refusals
        # (p256.verify reads one as an invalid signature).
        ok, said = fitted(run(root, workload, mid * resolution))
        lo, hi = (lo, mid) if ok else (mid, hi)
    return hi * resolution


def profile(port: str, root: Path, workload: str) -> tuple[int, int]:
    """One run with a heap that holds everything: (the most heap in use at
    the start of a step, after a collection; the most in use at the end of a
    step, before one)."""
    said = PORTS[port](root, workload, FULL_HEAP)
    if "HEAP32 OK" not in said:  # the heap may grow here: only success counts
        raise Heap32Error(f"{workload} fails on {port}: {said.strip()[-300:]}")
    steps = [tuple(int(x) for x in line.split()[1:3]) for line in said.splitlines() if line.startswith("STEP ")]
    if not steps:
        raise Heap32Error(f"{workload} on {port} reported no steps")
    return max(a for a, _ in steps), max(b for _, b in steps)


def measure(workloads: tuple[str, ...] = WORKLOADS[1:], resolution: int = 256) -> dict[str, dict[str, dict[str, int]]]:
    """{port: {workload: figures}}, each figure the firmware's own (the idle
    workload's subtracted):

    - resident: the most heap in use between two steps (one pass of the main
      loop, one MQTT packet, one firmware call), after a collection. Exact on
      both ports, at the same points of the same program: the ratio of the
      two is the measured 64-bit to 32-bit factor.
    - peak (unix64): the smallest heap the workload runs in (bisection).
    - stepped (wasm32): the most heap in use at the end of a step, before a
      collection: the PyScript build collects only between calls from
      JavaScript, so a step's garbage stays. An upper bound of the peak,
      tight for steps that allocate little, far off for a P-256 verify.
    - peak (wasm32): the lower of `stepped` and the 64-bit peak (no object
      takes more room on the 32-bit build): an upper bound; `resident` is a
      lower bound.
    """
    out: dict[str, dict[str, dict[str, int]]] = {"wasm32": {}, "unix64": {}}
    with tempfile.TemporaryDirectory(prefix="sbd-heap32-") as tmp:
        root = prepare(Path(tmp))
        idle32, _ = profile("wasm32", root, "idle")
        idle64, _ = profile("unix64", root, "idle")
        idle64_peak = smallest_heap("unix64", root, "idle", resolution)
        for workload in workloads:
            res64, _ = profile("unix64", root, workload)
            peak64 = smallest_heap("unix64", root, workload, resolution) - idle64_peak
            out["unix64"][workload] = {"resident": res64 - idle64, "peak": peak64}
            res32, end32 = profile("wasm32", root, workload)
            out["wasm32"][workload] = {"resident": res32 - idle32, "stepped": end32 - idle32,
                                       "peak": min(end32 - idle32, peak64)}
        out["wasm32"]["idle"] = {"resident": idle32}
        out["unix64"]["idle"] = {"resident": idle64, "peak": idle64_peak}
    return out


def ratio(figures: dict[str, dict[str, dict[str, int]]], workload: str) -> float:
    """64-bit over 32-bit heap of the same live objects (resident figures)."""
    return round(figures["unix64"][workload]["resident"] / figures["wasm32"][workload]["resident"], 3)


def bench(resolution: int = 256) -> tuple[dict, dict]:
    """`make bench`'s heap figures: the firmware's peak Python heap for connect
    + one QoS 1 publish and for receiving and installing an update, on the
    32-bit and the 64-bit MicroPython, and their ratio; the other workloads
    in the details."""
    figures = measure(resolution=resolution)
    w32, w64 = figures["wasm32"], figures["unix64"]
    results = {}
    for name in ("connect", "ota", "ota_image"):
        results[f"heap32_peak_{name}_bytes"] = w32[name]["peak"]
        results[f"heap32_resident_{name}_bytes"] = w32[name]["resident"]
        results[f"heap64_peak_{name}_bytes"] = w64[name]["peak"]
        results[f"heap64_resident_{name}_bytes"] = w64[name]["resident"]
        results[f"heap_ratio_64_to_32_{name}"] = ratio(figures, name)
    # The update figure covers both kinds: a file update and a whole-firmware (app image) one.
    results["heap32_peak_ota_files_bytes"] = w32["ota"]["peak"]
    results["heap32_peak_ota_bytes"] = max(w32["ota"]["peak"], w32["ota_image"]["peak"])
    meta = {"heap32": {"figures": figures,
                       "ratio_64_to_32": {w: ratio(figures, w) for w in w32 if w != "idle"},
                       "goal_bytes": ESP32_FIRST_HEAP_BYTES, "resolution_bytes": resolution,
                       "wasm_package": f"{WASM_PACKAGE}@{WASM_VERSION}"}}
    return results, meta


def main() -> int:
    """Prints the measurement as JSON (python -m sbd_harness.tools.heap32)."""
    results, meta = bench()
    print(json.dumps({**results, "_meta": meta}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
