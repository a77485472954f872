"""`make bench`, the check run a user waits for: `verify_s`, the wall time of
the default `sbd verify` on a provisioned emulated reference board
(docs/benchmarks.md). Each run gets a fresh board, provisioned by a
throw-away lab CA with a throw-away release key, for a broker on a free port,
and times the `sbd verify` command as a user runs it, from the shell's view.

python -m sbd_harness.tools.bench_verify [--runs N]: this figure alone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from sbd_harness.boards import lifecycle
from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.ota import ReleaseKey
from sbd_harness.tools.bench_lab import fresh_lab, median

RUNS_MAX = 3  # a run is about a minute: three make a median without making the bench long


def one_run(bundle: FirmwareBundle, index: int) -> dict:
    """One provisioned board, one `sbd verify`; its wall time and how the checks came out."""
    with fresh_lab(f"bench-verify-{index}", bundle) as (tmp, ca, board):
        key = ReleaseKey.generate(tmp / "release-key.pem")
        port = free_port(lab_address())
        lifecycle.provisioned(board, ca, broker_port=port, release_keys=[key.public_point])
        report = tmp / "report.json"
        env = dict(os.environ, SBD_RELEASE_KEY=str(tmp / "release-key.pem"))
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "sbd_harness", "verify", "--board", board.name,
                               "--pki", str(ca.dir), "--broker", f"{lab_address()}:{port}",
                               "--report", str(report)], capture_output=True, text=True, env=env)
        wall = time.monotonic() - t0
        summary = json.loads(report.read_text())["summary"] if report.exists() else {}
        return {"wall_s": round(wall, 3), "exit": proc.returncode, "summary": summary}


def run(bundle: FirmwareBundle, runs: int) -> tuple[dict, dict]:
    samples = [one_run(bundle, i) for i in range(max(1, min(runs, RUNS_MAX)))]
    return ({"verify_s": median([s["wall_s"] for s in samples])},
            {"verify": {"runs": samples, "runs_max": RUNS_MAX}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS_MAX)
    args = parser.parse_args(argv)
    figures, meta = run(FirmwareBundle.from_dir(), args.runs)
    print(json.dumps({**figures, "_meta": meta}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
