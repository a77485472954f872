"""`make bench`: speed and memory figures, written as JSON (docs/benchmarks.md).

Every figure comes from emulated boards, most as the median of several runs
(the heap high-water mark by bisection); the network figures are in
bench_net.py, the update figures in bench_ota.py, the firmware's heap on a
32-bit MicroPython against the 64-bit one in heap32.py. Nothing here asserts a
threshold: the numbers are for people and for trend lines.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from sbd_harness.tools import bench_capacity, bench_fleet, bench_net, bench_ota, bench_verify, heap32
from sbd_harness.tools.bench_lab import median
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.boards.flashing import flash_firmware


def board_start_ms(runs: int) -> float:
    """A new board from nothing (flash image, supervisor, CPU, first-boot
    filesystem format, boot.py) until its REPL prompt is on the serial port:
    start() returns at that moment."""
    samples = []
    for i in range(runs):
        board = EmulatedBoard(f"bench-start-{i}")
        board.remove()
        t0 = time.monotonic()
        try:
            board.start()
            samples.append((time.monotonic() - t0) * 1000)
        finally:
            board.remove()
    return median(samples)


def fw_copy_kib_per_s(board: EmulatedBoard, bundle: FirmwareBundle, runs: int) -> float:
    """Firmware files copied through the raw REPL (mpremote transport), KiB/s, hashes checked."""
    samples = []
    for _ in range(runs):
        t0 = time.monotonic()
        flash_firmware(board, bundle, reset=False)
        samples.append(bundle.total_bytes / 1024 / (time.monotonic() - t0))
    return median(samples)


def repl_roundtrip_ms(board: EmulatedBoard, runs: int) -> float:
    """One raw-REPL exec of a trivial statement, round trip, session already open."""
    samples = []
    with board.session() as t:
        for _ in range(runs):
            t0 = time.monotonic()
            t.exec_raw("pass")
            samples.append((time.monotonic() - t0) * 1000)
    return median(samples)


P256_TIMING = """
import time, hashlib
from sbd import p256
sk, pk = p256.generate_keypair()
d = hashlib.sha256(b'bench').digest()
sig = p256.sign(sk, d)
sign, verify = [], []
for i in range({n}):
    t = time.ticks_us(); s = p256.sign(sk, d); sign.append(time.ticks_diff(time.ticks_us(), t))
    t = time.ticks_us(); ok = p256.verify(pk, d, s); verify.append(time.ticks_diff(time.ticks_us(), t))
    assert ok
sign.sort(); verify.sort()
print(sign[len(sign) // 2] / 1000, verify[len(verify) // 2] / 1000)
"""


def p256_on_board(board: EmulatedBoard, runs: int) -> tuple[float, float]:
    """Median ms of one sbd.p256 sign and one verify, timed on the emulated board itself."""
    sign_ms, verify_ms = board.exec(P256_TIMING.format(n=runs), timeout=120).split()
    return float(sign_ms), float(verify_ms)


def p256_verify_cpython_ms(runs: int) -> float:
    """Median ms of one P-256 verify with CPython's cryptography (OpenSSL), for scale."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    sig = key.sign(b"bench", ec.ECDSA(hashes.SHA256()))
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        key.public_key().verify(sig, b"bench", ec.ECDSA(hashes.SHA256()))
        samples.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(samples), 4)


def provision_s_per_board(runs: int, bundle: FirmwareBundle) -> float:
    """`sbd provision` of a flashed, unprovisioned board: key, CSR, issue, install, lock, reboot."""
    import tempfile
    from sbd_harness.identity.pki import LabCA
    from sbd_harness.identity.provisioning import provision
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        ca = LabCA(Path(tmp))
        ca.init()
        for i in range(runs):
            board = EmulatedBoard(f"bench-prov-{i}")
            board.remove()
            board.start()
            try:
                flash_firmware(board, bundle)
                t0 = time.monotonic()
                provision(board, ca)
                samples.append(time.monotonic() - t0)
            finally:
                board.remove()
    return median(samples)


def run(runs: int, capacity: dict) -> dict:
    bundle = FirmwareBundle.from_dir()
    results: dict = {"board_start_ms": board_start_ms(runs)}
    board = EmulatedBoard("bench")
    board.remove()
    board.start()
    try:
        results["fw_copy_kib_per_s"] = fw_copy_kib_per_s(board, bundle, runs)
        results["repl_roundtrip_ms"] = repl_roundtrip_ms(board, runs * 10)
        results["p256_sign_ms"], results["p256_verify_ms"] = p256_on_board(board, runs * 4)
    finally:
        board.remove()
    results["p256_verify_cpython_ms"] = p256_verify_cpython_ms(runs * 20)
    results["provision_s_per_board"] = provision_s_per_board(runs, bundle)
    net, net_meta = bench_net.run(bundle, runs)
    results.update(net)
    ota_figures, ota_meta = bench_ota.run(bundle, runs)
    results.update(ota_figures)
    verify_figures, verify_meta = bench_verify.run(bundle, runs)
    results.update(verify_figures)
    fleet_figures, fleet_meta = bench_fleet.run(bundle)
    results.update(fleet_figures)
    heap_figures, heap_meta = heap32.bench()  # no board: the two MicroPythons directly
    results.update(heap_figures)
    capacity_figures, capacity_meta = bench_capacity.run(bundle, capacity["max_boards"], capacity["duration_s"],
                                                         only_max=capacity.get("only_max", False))
    capacity_meta["capacity"]["mode"] = capacity["mode"]
    results.update(capacity_figures)
    results["_meta"] = {**net_meta, **ota_meta, **verify_meta, **fleet_meta, **heap_meta, **capacity_meta}  # main() adds the run's own description in front
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--capacity", choices=("quick", "full"), default=os.environ.get("SBD_BENCH_CAPACITY", "quick"),
                        help="the capacity figures: quick (4 boards, 60 s, proves the path) or full (up to 128 "
                             "boards, 5 minutes a level: about an hour, the machine to itself); default "
                             "SBD_BENCH_CAPACITY or quick")
    parser.add_argument("--capacity-max-boards", type=int, help="the full run's limit instead of 128")
    parser.add_argument("--capacity-duration", type=float, help="seconds each level is watched instead of its mode's")
    args = parser.parse_args(argv)
    capacity = dict(bench_capacity.FULL if args.capacity == "full" else {**bench_capacity.QUICK, "only_max": True},
                    mode=args.capacity)
    if args.capacity_max_boards:
        capacity["max_boards"] = args.capacity_max_boards
    if args.capacity_duration:
        capacity["duration_s"] = args.capacity_duration
    results = run(args.runs, capacity)
    results["_meta"] = {"runs": args.runs, "statistic": "median", "python": platform.python_version(),
                        "machine": platform.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        **results.get("_meta", {})}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
