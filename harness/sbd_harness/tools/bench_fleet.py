"""`make bench`, a fleet in one run: `fleet_verify_s_per_board`, the wall time of one default
`sbd verify --board ... --board ...` over 8 provisioned emulated reference boards, divided by 8
(docs/benchmarks.md). The boards are fresh, flashed and provisioned by a throw-away lab CA with a
throw-away release key, each for the lab broker on its own port, and removed afterwards.

python -m sbd_harness.tools.bench_fleet [--boards N] [--out FILE]: this figure alone (N boards,
default 8); with --out, written into that results file (bench/results.json) beside its other keys.
`make bench-fleet [FLEET_BOARDS=N]` runs it so.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sbd_harness.boards import lifecycle
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.identity.pki import LabCA
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.ota import ReleaseKey

FLEET_BOARDS = 8


def run(bundle: FirmwareBundle, boards: int = FLEET_BOARDS) -> tuple[dict, dict]:
    """One fleet run over `boards` boards; (figures, what the run was)."""
    with tempfile.TemporaryDirectory() as tmp_dir, contextlib.ExitStack() as cleanup:
        tmp = Path(tmp_dir)
        ca = LabCA(tmp / "pki")
        ca.init()
        key = ReleaseKey.generate(tmp / "release-key.pem")
        fleet = []
        for i in range(boards):
            board = EmulatedBoard(f"bench-fleet-{i}")
            board.remove()
            cleanup.callback(board.remove)
            board.start()
            lifecycle.flashed(board, bundle)
            lifecycle.provisioned(board, ca, broker_port=board.broker_port, release_keys=[key.public_point])
            fleet.append(board)
        env = dict(os.environ, SBD_RELEASE_KEY=str(tmp / "release-key.pem"), TERM="dumb")
        cmd = [sys.executable, "-m", "sbd_harness", "verify", "--pki", str(ca.dir), "--report",
               str(tmp / "fleet" / "report.json")]
        for board in fleet:
            cmd += ["--board", board.name]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.monotonic() - t0
        summary_path = tmp / "fleet" / "fleet.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        per_board = [{k: b.get(k) for k in ("name", "exit", "seconds", "summary")} for b in summary.get("boards", [])]
        return ({"fleet_verify_s_per_board": round(wall / boards, 3)},
                {"fleet_verify": {"boards": boards, "wall_s": round(wall, 3), "exit": proc.returncode,
                                  "per_board": per_board, "output_tail": proc.stdout[-1500:] if proc.returncode else ""}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=FLEET_BOARDS, help=f"how many boards (default {FLEET_BOARDS})")
    parser.add_argument("--out", help="also write the figure into this results file, keeping its other keys")
    args = parser.parse_args(argv)
    if args.boards < 1:
        parser.error("--boards takes 1 or more")
    figures, meta = run(FirmwareBundle.from_dir(), args.boards)
    print(json.dumps({**figures, "_meta": meta}, indent=2))
    if args.out:
        out = Path(args.out)
        results = json.loads(out.read_text()) if out.exists() else {}
        results.update(figures)
        results["_meta"] = {**results.get("_meta", {}), **meta}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
