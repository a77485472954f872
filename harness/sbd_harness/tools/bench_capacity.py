"""`make bench`, how many boards one machine holds (docs/benchmarks.md#capacity):

- `boards_concurrent_max`: the most emulated boards running at once, each flashed with the
  reference, provisioned, locked, online at one lab broker and sending telemetry, with none missing
  its interval for the whole observation; levels double (1, 2, 4, ...) up to --max-boards (128);
- `board_rss_mib`: memory per running online board, its supervisor and its CPU process (and the
  port's mDNS/DHCP process once it runs): PSS, so the interpreter's shared pages count once across
  boards; RSS is in `_meta.capacity` too;
- `board_idle_cpu_pct`: CPU time of those processes per board over the observation, in percent of
  one core, at the largest level that held.

The full measurement (128 boards, 5 minutes each level) takes an hour and loads every core: run
it on a machine of its own (`python -m sbd_harness.tools.bench_capacity`, or `make bench
SBD_BENCH_CAPACITY=full`). `--quick` (4 boards, 60 s, that level only) proves the path; `make bench`
runs the quick form unless told otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sbd_harness.boards import lifecycle
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.device.contract import NET_CONNECTED, topics
from sbd_harness.identity.pki import LabCA
from sbd_harness.identity.provisioning import lab_settings
from sbd_harness.lab.broker import Broker
from sbd_harness.release.bundle import FirmwareBundle

FULL = {"max_boards": 128, "duration_s": 300}
QUICK = {"max_boards": 4, "duration_s": 60}
TELEMETRY_S = 10          # the firmware's default interval
LATE_S = TELEMETRY_S / 2  # a message this late past its interval counts as missed
PREP_JOBS = 2             # boards flashed and provisioned at a time (the machine's cores)


def _processes(board: EmulatedBoard) -> list[int]:
    """The board's supervisor and everything under it (the CPU, the port's network services)."""
    root = board.state.read_status().get("supervisor_pid")
    if not root:
        return []
    children = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB from /proc/PID/smaps_rollup; (0, 0) for a process gone."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def _prepare(name: str, ca: LabCA, broker: Broker, bundle: FirmwareBundle) -> tuple[EmulatedBoard, str]:
    """A new board, flashed, provisioned for `broker`, locked, online (it said `connected`)."""
    board = EmulatedBoard(name)
    board.remove()
    board.start(timeout=120)
    lifecycle.flashed(board, bundle)
    settings = dict(lab_settings(board, broker.port), telemetry_s=TELEMETRY_S)
    result = lifecycle.provisioned(board, ca, settings=settings)
    board.wait_for_output(NET_CONNECTED, since=0, timeout=120)
    return board, result.device_id


def _observe(boards: dict[str, EmulatedBoard], broker: Broker, duration_s: float) -> dict:
    """Every board's telemetry at the broker for `duration_s`, with the CPU and memory its processes
    took meanwhile. A board misses when a gap between two of its messages (or from the start or to
    the end of the window) exceeds its interval by LATE_S, or a sequence number is skipped."""
    arrivals: dict[str, list[tuple[float, int]]] = defaultdict(list)
    lock = threading.Lock()
    device_of = {topics(d).telemetry: d for d in boards}

    def on_message(client, userdata, m):
        try:
            seq = json.loads(m.payload)["seq"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(seq, int) and m.topic in device_of:
            with lock:
                arrivals[device_of[m.topic]].append((time.monotonic(), seq))

    client = broker.monitor()
    client.on_message = on_message
    for topic in device_of:
        client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        time.sleep(2)  # subscribed before the window opens
        cpus = {d: b.state.read_status().get("cpu_pid") for d, b in boards.items()}
        pids = {d: _processes(b) for d, b in boards.items()}
        ticks0 = {d: sum(_cpu_ticks(p) for p in ps) for d, ps in pids.items()}
        sup0 = {d: _cpu_ticks(ps[0]) if ps else 0 for d, ps in pids.items()}
        t0 = time.monotonic()
        time.sleep(duration_s)
        t1 = time.monotonic()
        pids_end = {d: _processes(b) for d, b in boards.items()}
        ticks1 = {d: sum(_cpu_ticks(p) for p in ps) for d, ps in pids_end.items()}
        sup1 = {d: _cpu_ticks(ps[0]) if ps else 0 for d, ps in pids_end.items()}
        memory = {d: [sum(v) for v in zip(*(_memory_kib(p) for p in ps))] or [0, 0] for d, ps in pids_end.items()}
    finally:
        client.loop_stop()
        client.disconnect()
    hz = os.sysconf("SC_CLK_TCK")
    late = {}
    for device in boards:
        seen = [(t, s) for t, s in arrivals.get(device, []) if t0 <= t <= t1]
        times = [t0] + [t for t, _ in seen] + [t1]
        worst = max(b - a for a, b in zip(times, times[1:]))
        seqs = [s for _, s in seen]
        skipped = any(b != a + 1 for a, b in zip(seqs, seqs[1:]))
        restarted = boards[device].state.read_status().get("cpu_pid") != cpus[device]  # the board rebooted
        if worst > TELEMETRY_S + LATE_S or skipped or restarted:
            late[device] = {"worst_gap_s": round(worst, 1), "skipped": skipped, "restarted": restarted}
    span = t1 - t0
    return {
        "boards": len(boards),
        "missed": late,
        "messages": sum(len(v) for v in arrivals.values()),
        "cpu_pct": {d: round(100 * (ticks1[d] - ticks0[d]) / hz / span, 2) for d in boards},
        "supervisor_cpu_pct": {d: round(100 * (sup1[d] - sup0[d]) / hz / span, 2) for d in boards},
        "pss_mib": {d: round(m[0] / 1024, 1) for d, m in memory.items()},
        "rss_mib": {d: round(m[1] / 1024, 1) for d, m in memory.items()},
    }


def levels(max_boards: int) -> list[int]:
    out, n = [], 1
    while n < max_boards:
        out.append(n)
        n *= 2
    return out + [max_boards]


def run(bundle: FirmwareBundle, max_boards: int, duration_s: float, prefix: str = "bench-cap",
        only_max: bool = False) -> tuple[dict, dict]:
    """Ramps up to `max_boards` (only that level with only_max), observing each level for
    `duration_s`; returns (figures, meta). Every board and the broker are removed afterwards."""
    results: list[dict] = []
    boards: dict[str, EmulatedBoard] = {}
    tried: list[str] = []  # every board name started, whether its preparation ended or not
    with tempfile.TemporaryDirectory() as tmp:
        ca = LabCA(Path(tmp) / "pki")
        ca.init()
        with Broker(ca) as broker:
            try:
                for level in ([max_boards] if only_max else levels(max_boards)):
                    names = [f"{prefix}-{i}" for i in range(len(boards) + 1, level + 1)]
                    tried += names
                    with ThreadPoolExecutor(PREP_JOBS) as pool:
                        for board, device in pool.map(lambda n: _prepare(n, ca, broker, bundle), names):
                            boards[device] = board
                    seen = _observe(boards, broker, duration_s)
                    results.append(seen)
                    print(f"capacity: {level} boards, {len(seen['missed'])} missed their interval", flush=True)
                    if seen["missed"]:
                        break
            finally:  # each one on its own: one that fails to go must not leave the rest running
                for name in tried:
                    try:
                        EmulatedBoard(name).remove()
                    except Exception as exc:  # noqa: BLE001 (the others still go)
                        print(f"capacity: could not remove {name}: {exc}", file=sys.stderr)
    held = [r for r in results if not r["missed"]]
    best = held[-1] if held else results[-1]
    figures = {
        "boards_concurrent_max": held[-1]["boards"] if held else 0,
        "board_rss_mib": round(statistics.median(best["pss_mib"].values()), 1),
        "board_idle_cpu_pct": round(statistics.median(best["cpu_pct"].values()), 2),
    }
    meta = {"capacity": {
        "max_boards": max_boards, "duration_s": duration_s, "telemetry_s": TELEMETRY_S, "late_s": LATE_S,
        "memory": "PSS of the board's supervisor, CPU and network-service processes (board_rss_mib); RSS below",
        "cpu": "percent of one core per board over the window, median of the boards",
        "stopped_at_limit": bool(held) and held[-1]["boards"] == max_boards,
        "levels": [{"boards": r["boards"], "missed": r["missed"], "messages": r["messages"],
                    "cpu_pct_median": round(statistics.median(r["cpu_pct"].values()), 2),
                    "supervisor_cpu_pct_median": round(statistics.median(r["supervisor_cpu_pct"].values()), 2),
                    "pss_mib_median": round(statistics.median(r["pss_mib"].values()), 1),
                    "rss_mib_median": round(statistics.median(r["rss_mib"].values()), 1)} for r in results],
    }}
    return figures, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-boards", type=int, default=FULL["max_boards"])
    parser.add_argument("--duration", type=float, default=FULL["duration_s"], help="seconds each level is watched")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['max_boards']} boards, {QUICK['duration_s']} s, one level")
    parser.add_argument("--only-max", action="store_true", help="no ramp: just --max-boards")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_boards, args.duration, args.only_max = QUICK["max_boards"], QUICK["duration_s"], True
    figures, meta = run(FirmwareBundle.from_dir(), args.max_boards, args.duration, only_max=args.only_max)
    print(json.dumps({**figures, "_meta": meta}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
