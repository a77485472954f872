"""The harness asks for version ranges (pyproject.toml) so that it installs beside other tools;
the project's own environment runs at the top of each (constraints.txt). This builds an
environment at the bottom of each (constraints-lowest.txt) and runs the host-side tests there."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_host_side_tests_pass_at_the_lowest_versions_the_harness_accepts(tmp_path):
    venv = tmp_path / "lowest"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    install = subprocess.run(pip + ["-e", f"{ROOT}[farm]", "-c", str(ROOT / "constraints-lowest.txt"),
                                    "cryptography-vectors==43.0.0", "pytest-xdist==3.5.0"],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "unit")], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-5000:]
