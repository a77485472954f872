"""`make bench`, signed updates: update throughput over MQTT and
TLS (files, and a whole app image), against hashing and writing alone; manifest and boot-time verification
times; the heap an update needs (docs/benchmarks.md).

One emulated board, `bench-ota`, provisioned by a throw-away lab CA with a
throw-away release key, against the lab's real mosquitto (`Broker`). The
updates are the reference firmware itself, version-stamped, signed and sent
by `sbd_harness.release.ota.push` to the locked firmware, exactly as `sbd ota push`
sends them. The on-device figures (hashing and writing alone, the manifest
check, the boot check) come from the firmware's own modules driven through
the raw REPL of the same board once it is unlocked by a signed command, with
an updated slot installed, timed on the board with time.ticks_us().
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sbd_harness.device.contract import topics
from sbd_harness.release import ota
from sbd_harness.tools.bench_lab import IDLE_HEAP, boot_with_heap, fresh_lab, lock_console, median, smallest_heap, unlock_console
from sbd_harness.boards.base import BoardError
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.lab.broker import Broker
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.identity.provisioning import lab_settings, provision
from sbd_harness.lab.watch import Message, Watcher

BOARD_NAME = "bench-ota"
EFFICIENCY_GOAL = 0.5     # the goal for ota_pipeline_efficiency (reported, not asserted)
HEAP_RESOLUTION = 1024
PUSH_TIMEOUT_S = 120      # one whole update at the board's normal heap
ONLINE_TIMEOUT_S = 60     # from power-on to the birth message
COMMIT_TIMEOUT_S = 90     # from `installed` to `committed` (the trial's health check)
ATTEMPTS = 3              # pushes per run when the device refuses one for want of memory
SAMPLES = 4               # on-device timings per run: each takes milliseconds, the host's load shows
BASELINE_DIR = "/bench_ota"
BASELINE_SRC = "/bench_ota.bin"


class _FirstChunkClock:
    """The Watcher that `ota.push` publishes through, noting when the first
    chunk of the stream (devices/<id>/ota/data) goes out."""

    def __init__(self, watcher: Watcher, data_topic: str):
        self._watcher, self._data_topic = watcher, data_topic
        self.first_chunk: float | None = None

    def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> None:
        if self.first_chunk is None and topic == self._data_topic:
            self.first_chunk = time.monotonic()
        self._watcher.publish(topic, payload, qos)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._watcher, name)


class _Lab:
    """The board, its broker watcher and release key, and the next security counter."""

    def __init__(self, board: EmulatedBoard, watcher: Watcher, key: ota.ReleaseKey,
                 bundle: FirmwareBundle, device_id: str):
        self.board, self.watcher, self.key, self.bundle = board, watcher, key, bundle
        self.device_id = device_id
        self.topic = topics(device_id)
        self.counter = 1  # the device's counter is 0 until its first commit

    def next_stream(self) -> bytes:
        """The reference firmware as a new release: version `bench-<n>`, security counter n."""
        self.counter += 1
        release = self.bundle.with_version(f"bench-{self.counter}")
        manifest = ota.build_manifest(release, release.version, self.counter)
        return ota.build_stream(ota.encode_manifest(manifest), self.key, release.files)

    def wait_event(self, match, timeout: float, since: float) -> Message | None:
        return self.watcher.wait_for(lambda m: m.at >= since and match(m), timeout)

    def online(self, since: float, timeout: float = ONLINE_TIMEOUT_S) -> bool:
        return self.wait_event(lambda m: m.topic == self.topic.state and not m.retain
                               and (m.json() or {}).get("online") is True, timeout, since) is not None

    def ota_event(self, event: str, since: float, timeout: float) -> dict | None:
        m = self.wait_event(lambda m: m.topic == self.topic.result
                            and (m.json() or {}).get("sbd") == "ota" and m.json().get("event") == event,
                            timeout, since)
        return m.json() if m else None

    def push(self, stream: bytes, timeout: float = PUSH_TIMEOUT_S) -> tuple[dict, float | None]:
        """ota.push() of `stream`; the device's verdict and when the first chunk went out."""
        clock = _FirstChunkClock(self.watcher, self.topic.ota_data)
        verdict = ota.push(clock, self.device_id, stream, timeout=timeout)
        return verdict, clock.first_chunk

    def power_on(self, heap_bytes: int | None = None) -> float:
        """Power off, optionally with another -X heapsize, and on again (locked: no
        prompt to wait for; the caller waits for what it needs). When it went on."""
        self.board.stop()
        if heap_bytes is not None:
            conf = self.board.state.load()
            conf["heap_bytes"] = heap_bytes
            self.board.state.save(conf)
        since = time.monotonic()
        try:
            self.board.start(timeout=15)
        except BoardError:
            pass  # a heap too small to boot: the caller sees no birth message
        return since


# -- ota_kib_per_s ----------------------------------------------------------------------------
def ota_kib_per_s(lab: _Lab, runs: int) -> tuple[float, list[float], int, list[str]]:
    """`runs` updates of the locked board, each committed before the next.
    Each: stream bytes / (first chunk published -> `installed` received).
    An update the device refuses for want of memory is pushed again (at most
    ATTEMPTS times per run) and listed in the refusals returned."""
    samples = []
    size = 0
    refusals = []
    for _ in range(runs):
        for _attempt in range(ATTEMPTS):
            stream = lab.next_stream()
            size = len(stream)
            verdict, first = lab.push(stream)
            done = time.monotonic()
            if verdict.get("event") == "installed" and first is not None:
                break
            if verdict.get("error") != "out of memory":
                raise BoardError(f"{lab.board.name} refused the update: {verdict}")
            refusals.append(f"{verdict.get('error')}, {verdict.get('free')} bytes free: "
                            + " ".join(str(verdict.get("where", "")).split())[-100:])
        else:
            raise BoardError(f"{lab.board.name} refused the update {ATTEMPTS} times in a row: {refusals[-1]}")
        samples.append(size / 1024 / (done - first))
        if not lab.ota_event("committed", first, COMMIT_TIMEOUT_S):
            raise BoardError(f"{lab.board.name} did not commit update {lab.counter}: "
                             f"{lab.board.serial_log()[-1500:]}")
    return median(samples), [round(s, 2) for s in samples], size, refusals


# -- ota_image_kib_per_s ----------------------------------------------------------------------
IMAGE_BYTES = 1024 * 1024  # at least 1 MiB of app image, as the figure is defined


def ota_image_kib_per_s(lab: _Lab, runs: int) -> tuple[float, list[float], int]:
    """`runs` whole-firmware updates of the locked board (a real ESP32 app image of at least 1 MiB,
    made with esptool's image classes), each committed before the next. Each: stream bytes /
    (first chunk published -> `installed` received)."""
    from sbd_harness.release.app_image import AppDescriptor, build_app_image
    samples, size = [], 0
    for _ in range(runs):
        lab.counter += 1
        version = f"bench-img-{lab.counter}"
        image = build_app_image(AppDescriptor("micropython", version, 0), IMAGE_BYTES, version.encode())
        manifest = ota.build_image_manifest(image, version[:16], lab.counter)
        stream = ota.build_stream(ota.encode_manifest(manifest), lab.key, {"image": image})
        size = len(stream)
        verdict, first = lab.push(stream, timeout=PUSH_TIMEOUT_S * 3)
        done = time.monotonic()
        if verdict.get("event") != "installed" or first is None:
            raise BoardError(f"{lab.board.name} refused the image update: {verdict}")
        samples.append(size / 1024 / (done - first))
        if not lab.ota_event("committed", first, COMMIT_TIMEOUT_S):
            raise BoardError(f"{lab.board.name} did not commit image update {lab.counter}: "
                             f"{lab.board.serial_log()[-1500:]}")
    return median(samples), [round(s, 2) for s in samples], size


# -- ota_pipeline_efficiency: hashing and writing alone ------------------------------------------
# The stream's bytes, laid out as the receiver writes them: the header (magic,
# length, manifest, key ID, signature) as one file, then each file of the
# manifest at its path, every byte hashed with SHA-256 as it is written. The
# bytes come in 1024-byte chunks, as over MQTT, read from a copy of the stream
# on the device: only the work on each chunk is timed, not its read; the
# directories exist beforehand.
HASH_WRITE_TIMING = """
import gc, hashlib, os, time
plan = {plan!r}
for p in {dirs!r}:
    try:
        os.mkdir(p)
    except OSError:
        pass
buf = bytearray(1024)
mv = memoryview(buf)
ts = []
for run in range({n}):
    for path, start, end in plan:  # new files each run, as in the slot `begin` empties
        try:
            os.remove(path)
        except OSError:
            pass
    gc.collect()
    total = 0
    i = pos = 0
    out = None
    src = open({src!r}, 'rb')
    while True:
        r = src.readinto(buf)
        if not r:
            break
        t0 = time.ticks_us()
        k = 0
        while k < r:
            if out is None:
                path, start, end = plan[i]
                out = open(path, 'wb')
                h = hashlib.sha256()
            take = min(r - k, end - pos)
            out.write(mv[k:k + take])
            h.update(mv[k:k + take])
            k += take
            pos += take
            if pos == end:
                out.close()
                h.digest()
                out = None
                i += 1
        total += time.ticks_diff(time.ticks_us(), t0)
    src.close()
    t0 = time.ticks_us()
    while i < len(plan):  # empty files at the end
        open(plan[i][0], 'wb').close()
        hashlib.sha256().digest()
        i += 1
    total += time.ticks_diff(time.ticks_us(), t0)
    assert pos == {size} and out is None, (pos, i)
    ts.append(total)
print(' '.join(str(t) for t in ts))
"""


def hash_write_kib_per_s(board: EmulatedBoard, stream: bytes, runs: int) -> tuple[float, list[float]]:
    """SHA-256 and write of every byte of `stream` to the device's filesystem
    in the board's MicroPython, as the receiver lays them out; KiB/s, median of `runs`."""
    manifest_bytes, _kid, _sig, _payload = ota.parse_stream(stream)
    manifest = ota.parse_manifest(manifest_bytes)
    head = len(stream) - manifest["total_size"]
    plan, dirs, at = [(f"{BASELINE_DIR}/header", 0, head)], [BASELINE_DIR], head
    for entry in manifest["files"]:
        path = f"{BASELINE_DIR}/{entry['path']}"
        parts = path.split("/")
        for i in range(3, len(parts)):
            if "/".join(parts[:i]) not in dirs:
                dirs.append("/".join(parts[:i]))
        plan.append((path, at, at + entry["size"]))
        at += entry["size"]
    board.put_files({BASELINE_SRC: stream})
    try:
        code = HASH_WRITE_TIMING.format(plan=plan, size=len(stream), src=BASELINE_SRC, dirs=dirs, n=runs)
        us = [int(x) for x in board.exec(code, timeout=60 + runs * 10).split()]
    finally:
        board.remove_tree(BASELINE_DIR)
        board.remove_tree(BASELINE_SRC)
    samples = [len(stream) / 1024 / (t / 1e6) for t in us]
    return median(samples), [round(s, 1) for s in samples]


# -- ota_verify_ms and boot_integrity_check_ms ---------------------------------------------------
# Fresh: the sbd modules dropped and imported again from the factory image in
# /lib, as boot.py does before slots.select() (so sbd.p256 is loaded, and its
# comb table built, inside the timed call). Warm: modules and table in place.
VERIFY_TIMING = """
import gc, sys, time
def fresh():
    for name in list(sys.modules):
        if name == 'sbd' or name.startswith('sbd.'):
            del sys.modules[name]
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if not p.startswith('/ota/')]
    from sbd import slots, manifest
    sys.path[:] = saved
    gc.collect()
    return slots, manifest
slots, manifest = fresh()
slot = slots.running()
d = slots.slot_dir(slot)
mb = slots._read(d + '/manifest.json', manifest.MAX_MANIFEST)
sig = slots._read(d + '/manifest.sig', manifest.SIG_LEN)
keys = slots.trusted_keys()
boot_cold, boot_warm, verify_cold, verify_warm = [], [], [], []
for i in range({n}):
    slots, manifest = fresh()
    t = time.ticks_us(); slots.verify_slot(slot); boot_cold.append(time.ticks_diff(time.ticks_us(), t))
    gc.collect()
    t = time.ticks_us(); slots.verify_slot(slot); boot_warm.append(time.ticks_diff(time.ticks_us(), t))
    slots, manifest = fresh()
    t = time.ticks_us(); manifest.verify(mb, sig, keys); verify_cold.append(time.ticks_diff(time.ticks_us(), t))
    gc.collect()
    t = time.ticks_us(); manifest.verify(mb, sig, keys); verify_warm.append(time.ticks_diff(time.ticks_us(), t))
print(repr(slot), len(mb))
for s in (boot_cold, boot_warm, verify_cold, verify_warm):
    print(' '.join(str(t) for t in s))
"""


def verify_times(board: EmulatedBoard, runs: int) -> dict[str, Any]:
    """verify_slot of the running slot, and manifest.verify of its manifest,
    fresh and warm, timed on the unlocked board: medians in ms, and details."""
    lines = board.exec(VERIFY_TIMING.format(n=runs), timeout=60 + runs * 20).strip().splitlines()
    slot, manifest_len = lines[-5].split()
    if slot.strip("'\"") not in ("a", "b"):
        raise BoardError(f"{board.name} runs no update slot ({slot}): nothing to verify")
    boot_cold, boot_warm, verify_cold, verify_warm = (
        median([int(t) / 1000 for t in line.split()]) for line in lines[-4:])
    return {"boot_cold_ms": boot_cold, "boot_warm_ms": boot_warm, "verify_cold_ms": verify_cold,
            "verify_warm_ms": verify_warm, "slot": slot.strip("'\""), "manifest_bytes": int(manifest_len)}


# -- heap_high_water_ota_bytes ------------------------------------------------------------------
def _ran_out_of_heap(log: str) -> bool:
    return "MemoryError" in log or "memory allocation failed" in log or "out of memory" in log


def _ota_trial(lab: _Lab, heap_bytes: int, full: int) -> tuple[bool, str]:
    """From a fresh boot of the locked board with `heap_bytes` of heap: is a
    whole update received, verified and installed? After a success the trial
    ends (commit or revert) at the board's full heap, so the next trial starts alike."""
    since_log = lab.board.log_size()
    since = lab.power_on(heap_bytes)
    if not lab.online(since):
        log = lab.board._log_since(since_log)
        return False, "no birth message" + (" (out of memory)" if _ran_out_of_heap(log) else "") \
            + f": {log.strip().splitlines()[-1][:160] if log.strip() else 'no output'}"
    try:
        verdict, _first = lab.push(lab.next_stream(), timeout=PUSH_TIMEOUT_S)
    except ota.OTAError as exc:
        log = lab.board._log_since(since_log)
        return False, f"push: {exc}" + (" (out of memory on the board)" if _ran_out_of_heap(log) else "")
    if verdict.get("event") != "installed":
        return False, f"rejected: {json.dumps(verdict)[:200]}"
    installed = time.monotonic()
    # The trial at the normal heap, so the next trial starts with no trial
    # running. The device restarts itself 0.5 s after `installed`: if that
    # boot (on the small heap) counted as the trial's one boot, this one
    # reverts it instead of committing; either ends the trial.
    lab.power_on(full)
    ended = lab.wait_event(lambda m: m.topic == f"{lab.base}/result"
                           and (m.json() or {}).get("event") in ("committed", "reverted"),
                           COMMIT_TIMEOUT_S, installed)
    if ended is None:
        raise BoardError(f"{lab.board.name}: the update installed with a {heap_bytes}-byte heap "
                         f"neither committed nor reverted at the full heap")
    return True, "installed"


def heap_high_water_ota_bytes(lab: _Lab, idle: int,
                              resolution: int = HEAP_RESOLUTION) -> tuple[int, dict[str, Any]]:
    """The smallest -X heapsize (a multiple of `resolution`) in which the locked
    board, from a fresh boot, connects and receives, verifies and installs a
    whole update pushed over MQTT. Bisection between `idle` (what a fresh boot
    of the unlocked board holds) and the board's normal heap; a failure that
    shows no sign of running out of heap is tried again once; the result is
    tried once more (and raised a step at a time if that fails)."""
    full = lab.board.state.load()["heap_bytes"]
    size, trials, failure = smallest_heap(
        idle, full, resolution, lambda heap: _ota_trial(lab, heap, full),
        lambda said: "memory" in said or said.startswith("no birth"), "an update")
    detail = {"board_heap_bytes": full, "idle_heap_bytes": idle, "resolution_bytes": resolution,
              "trials": trials, "failure_below": failure}
    return size, detail


# -- all five ---------------------------------------------------------------------------------
def run(bundle: FirmwareBundle, runs: int, heap: bool = True) -> tuple[dict, dict]:
    """The five figures, and details for `_meta`, from one new board
    (`bench-ota`), a throw-away lab CA, release key and broker."""
    with fresh_lab(BOARD_NAME, bundle) as (tmp, ca, board):
        key = ota.ReleaseKey.generate(tmp / "release-key.pem")
        with Broker(ca) as broker:
            device_id = provision(board, ca, lock=False, settings=lab_settings(board, broker.port),
                                  release_keys=[key.public_point]).device_id
            full = board.state.load()["heap_bytes"]
            boot_with_heap(board, full)
            idle = int(board.exec(IDLE_HEAP).split()[-1])
            with Watcher(broker, f"devices/{device_id}/#", persistent=True) as watcher:
                lab = _Lab(board, watcher, key, bundle, device_id)
                since = time.monotonic()
                lock_console(board)
                if not lab.online(since):
                    raise BoardError(f"{board.name} did not come online: {board.serial_log()[-1500:]}")
                rate, rates, size, refusals = ota_kib_per_s(lab, runs)
                image_rate, image_rates, image_size = ota_image_kib_per_s(lab, runs)
                high_water, bisection = heap_high_water_ota_bytes(lab, idle) if heap else (None, None)
                # A fresh boot at the normal heap, online and subscribed, takes the command.
                since = lab.power_on(full)
                if not lab.online(since):
                    raise BoardError(f"{board.name} did not come online: {board.serial_log()[-1500:]}")
                try:
                    unlock_console(board, watcher, ca, device_id)
                except BoardError as exc:
                    raise BoardError(f"{exc}; serial: {board.serial_log()[-1500:]}") from exc
                # Same run, same MicroPython: the bytes of the last update.
                stream = lab.next_stream()
                lab.counter -= 1  # not sent
                base, bases = hash_write_kib_per_s(board, stream, runs * SAMPLES)
                times = verify_times(board, runs * SAMPLES)
    results = {"ota_kib_per_s": rate, "ota_image_kib_per_s": image_rate,
               "ota_pipeline_efficiency": round(rate / base, 3),
               "ota_verify_ms": times["verify_warm_ms"], "boot_integrity_check_ms": times["boot_cold_ms"]}
    if heap:
        results["heap_high_water_ota_bytes"] = high_water
    meta = {"ota": {"stream_bytes": size, "kib_per_s": rates, "image_stream_bytes": image_size,
                    "image_kib_per_s": image_rates, "hash_write_kib_per_s": base,
                    "hash_write_runs_kib_per_s": bases, "pipeline_efficiency_goal": EFFICIENCY_GOAL,
                    "manifest_bytes": times["manifest_bytes"], "verify_cold_ms": times["verify_cold_ms"],
                    "boot_integrity_check_warm_ms": times["boot_warm_ms"],
                    "refused_out_of_memory": refusals}}
    if heap:
        meta["ota_heap_bisection"] = bisection
    return results, meta


def main(argv: list[str] | None = None) -> int:
    """python -m sbd_harness.tools.bench_ota: these figures alone."""
    import argparse
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-heap", action="store_true", help="skip the heap bisection (the slow part)")
    parser.add_argument("--firmware", type=Path, default=None, help="firmware folder (default: firmware/)")
    args = parser.parse_args(argv)
    figures, details = run(FirmwareBundle.from_dir(args.firmware), args.runs, heap=not args.no_heap)
    print(json.dumps({**figures, "_meta": details}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
