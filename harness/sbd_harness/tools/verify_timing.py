"""How long `sbd verify` takes on a freshly provisioned emulated reference board,
and where the time goes: per-check durations from report.json, wall time of
the whole command, medians over a few runs.

    python -m sbd_harness.tools.verify_timing --runs 3 [--soak] [--out FILE] [-- EXTRA VERIFY ARGS]

Each run uses a scratch state folder (its own lab CA, release key and board),
does what a user does by hand (sbd board start, flash, pki init, ota keygen,
provision), then times `sbd verify --board NAME`. Nothing of the user's own
.sbd is touched.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _sbd(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbd_harness", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _must(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _broker_port() -> int:
    """8883, the lab's port, unless something (another checkout's demo) holds it: then a free one."""
    from sbd_harness.lab.broker import free_port, lab_address
    import socket
    try:
        with socket.create_server((lab_address(), 8883)):
            return 8883
    except OSError:
        return free_port(lab_address())


def one_run(name: str, extra: list[str], keep: Path | None) -> dict:
    from sbd_harness.lab.broker import lab_address
    with tempfile.TemporaryDirectory(prefix="sbd-timing-") as tmp:
        env = dict(os.environ, SBD_STATE_DIR=tmp)
        env.pop("SBD_PKI_DIR", None)
        env.pop("SBD_BROKER", None)
        try:
            _must(_sbd(env, "board", "start", name), "sbd board start")
            _must(_sbd(env, "flash", "--board", name), "sbd flash")
            _must(_sbd(env, "pki", "init"), "sbd pki init")
            _must(_sbd(env, "ota", "keygen"), "sbd ota keygen")
            port = _broker_port()
            broker = []
            if port == 8883:
                _must(_sbd(env, "provision", "--board", name), "sbd provision")
            else:  # the lab's settings, with the broker on another port
                conf = json.loads((Path(tmp) / "boards" / name / "board.json").read_text())
                broker = ["--broker", f"{lab_address()}:{port}"]
                _must(_sbd(dict(env, SBD_WIFI_PSK=conf["lab_psk"]), "provision", "--board", name,
                           "--wifi-ssid", conf["lab_ssid"], *broker), "sbd provision")
            report = Path(tmp) / "reports" / "report.json"
            started = time.monotonic()
            proc = _sbd(env, "verify", "--board", name, "--report", str(report), *broker, *extra, timeout=3600)
            wall = time.monotonic() - started
            if not report.exists():
                raise SystemExit(f"sbd verify wrote no report:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            data = json.loads(report.read_text())
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                stamp = int(time.time())
                (keep / f"report-{stamp}.json").write_text(report.read_text())
                log = Path(tmp) / "boards" / name / "serial.log"
                if log.exists():
                    (keep / f"serial-{stamp}.log").write_bytes(log.read_bytes())
        finally:
            _sbd(env, "board", "rm", name)
    return {"exit": proc.returncode, "wall_s": round(wall, 1), "tier": data.get("tier"),
            "summary": data.get("summary"),
            "checks": {c["id"]: {"status": c["status"], "duration_s": c["duration_s"],
                                 "message": c.get("message", "")} for c in data["checks"]}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--name", default=f"timing{os.getpid() % 10000}")
    p.add_argument("--soak", action="store_true", help="time sbd verify --soak")
    p.add_argument("--out", help="write every run and the medians here (JSON)")
    p.add_argument("--keep-reports", help="copy each run's report.json into this folder")
    p.add_argument("extra", nargs="*", help="more sbd verify arguments (after --)")
    args = p.parse_args(argv)
    extra = (["--soak"] if args.soak else []) + args.extra
    runs = []
    for i in range(args.runs):
        run = one_run(args.name, extra, Path(args.keep_reports) if args.keep_reports else None)
        runs.append(run)
        bad = {k: v for k, v in run["checks"].items() if v["status"] in ("fail", "error")}
        print(f"run {i + 1}: exit {run['exit']}, {run['wall_s']} s wall, {run['summary']}"
              + (f"; not passing: {json.dumps(bad)[:1500]}" if bad else ""), flush=True)
    ids = list(runs[0]["checks"])
    medians = {cid: round(statistics.median(r["checks"][cid]["duration_s"] for r in runs if cid in r["checks"]), 1)
               for cid in ids}
    wall = round(statistics.median(r["wall_s"] for r in runs), 1)
    width = max(len(c) for c in ids)
    for cid in sorted(ids, key=lambda c: -medians[c]):
        statuses = "/".join(r["checks"][cid]["status"] for r in runs if cid in r["checks"])
        print(f"{cid:<{width}}  {medians[cid]:>7.1f} s  {statuses}")
    print(f"{'sum of checks':<{width}}  {sum(medians.values()):>7.1f} s")
    print(f"{'verify wall time (median)':<{width}}  {wall:>7.1f} s  runs: {[r['wall_s'] for r in runs]}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"runs": runs, "median_duration_s": medians, "median_wall_s": wall},
                                             indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
