"""`make setup-verify` from nothing, as a CI job that only verifies firmware runs it (docs/ci.md).

A clone of this repository's HEAD gets its own environment from `make setup-verify` alone; that
environment must hold the harness and what `sbd verify` needs, none of the test suite's packages,
and be enough for the README's newcomer path on an emulated board (pki init, board start, flash,
provision, verify). A second `make setup-verify` installs nothing. Minutes (pip downloads the
harness's dependencies), so this is the soak tier.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from docsteps import ISOLATION, runner_env

ROOT = Path(__file__).resolve().parents[2]
# Installed by `make setup` for the project's own tests, never by `make setup-verify` (requirements-test.txt).
TEST_ONLY = ("xdist", "cryptography_vectors")
CHECKS = ("console-locked", "identity-certified-by-lab-ca", "telemetry-over-mutual-tls")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_make_setup_verify_from_nothing_is_enough_to_verify_a_board(tmp_path):
    clone = tmp_path / "sbd"
    cloned = subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], capture_output=True, text=True)
    assert cloned.returncode == 0, cloned.stderr
    env = runner_env({k: os.environ[k] for k in ISOLATION if k in os.environ})
    made = _run(["make", "setup-verify"], clone, env)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    sbd, python = clone / ".venv/bin/sbd", clone / ".venv/bin/python"
    assert sbd.exists(), made.stdout[-2000:]
    # The plugin's own dependency (pytest) is there; the suite's packages are not.
    present = _run([str(python), "-c", "import importlib.util, json, sys; print(json.dumps("
                    "{m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))",
                    "pytest", "sbd_harness", *TEST_ONLY], clone, env)
    assert present.returncode == 0, present.stderr
    found = json.loads(present.stdout)
    assert found["pytest"] and found["sbd_harness"], found
    assert not any(found[m] for m in TEST_ONLY), f"make setup-verify installed test-only packages: {found}"
    # Nothing to add the second time (no pip run).
    again = _run(["make", "setup-verify"], clone, env, timeout=120)
    assert again.returncode == 0 and "pip install" not in again.stdout, again.stdout[-2000:]

    state = tmp_path / "state"
    user = {**env, "SBD_STATE_DIR": str(state)}
    board = "setupverify"
    try:
        for step in (["pki", "init"], ["board", "start", board], ["flash", "--board", board],
                     ["provision", "--board", board]):
            done = _run([str(sbd), *step], clone, user, timeout=300)
            assert done.returncode == 0, f"sbd {' '.join(step)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        report = tmp_path / "report.json"
        checks = [a for c in CHECKS for a in ("--check", c)]
        verified = _run([str(sbd), "verify", "--board", board, "--report", str(report), *checks], clone, user,
                        timeout=600)
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
        statuses = {c["id"]: c["status"] for c in json.loads(report.read_text())["checks"]}
        assert statuses == {c: "pass" for c in CHECKS}, statuses
    finally:
        _run([str(sbd), "board", "rm", board], clone, user, timeout=120)
