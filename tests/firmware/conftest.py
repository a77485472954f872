"""Collects `mptest_*.py` files and runs their `test_*` functions under MicroPython.

The firmware's own modules are unit-tested on the interpreter that runs them on
the device, with the device-sized heap, so a CPython-only idiom or an
allocation that would not fit an ESP32 fails here.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sbd_harness.emulator.micropython import micropython_command

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RUNNER = HERE / "mp_runner.py"


def _is_mptest(path: Path) -> bool:
    return path.name.startswith("mptest_") and path.suffix == ".py"


def pytest_collect_file(parent: pytest.Collector, file_path: Path):
    # A file named on the command line goes through pytest_pycollect_makemodule.
    if _is_mptest(file_path) and not parent.session.isinitpath(file_path):
        return MicroPythonFile.from_parent(parent, path=file_path)
    return None


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector):
    if _is_mptest(module_path):
        return MicroPythonFile.from_parent(parent, path=module_path)
    return None


class MicroPythonFile(pytest.File):
    """One MicroPython test file; runs once, each test function is an item."""

    _results: dict[str, tuple[bool, str]] | None = None

    def collect(self):
        for line in self.path.read_text().splitlines():
            if line.startswith("def test_"):
                name = line[4:].split("(")[0]
                yield MicroPythonItem.from_parent(self, name=name)

    def results(self) -> dict[str, tuple[bool, str]]:
        if self._results is None:
            self._results = self._run()
        return self._results

    def _run(self) -> dict[str, tuple[bool, str]]:
        env = dict(os.environ)
        env["MICROPYPATH"] = os.pathsep.join([str(ROOT / "firmware" / "lib"), str(HERE)])
        proc = subprocess.run(
            micropython_command() + [str(RUNNER), str(self.path)],
            capture_output=True, text=True, env=env, timeout=900, cwd=str(HERE),
        )
        results: dict[str, tuple[bool, str]] = {}
        trace: list[str] = []
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                _, name, verdict = line.split()
                results[name] = (verdict == "PASS", "\n".join(trace))
                trace = []
            elif not line.startswith("TRACEBACK "):
                trace.append(line)
        if "DONE" not in proc.stdout.splitlines():
            tail = (proc.stdout + proc.stderr)[-3000:]
            for item in self.collect():
                results.setdefault(item.name, (False, "MicroPython run aborted:\n" + tail))
        return results


class MicroPythonItem(pytest.Item):
    def runtest(self) -> None:
        assert isinstance(self.parent, MicroPythonFile)
        ok, output = self.parent.results().get(self.name, (False, "test did not run"))
        if not ok:
            raise MicroPythonTestFailure(output)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MicroPythonTestFailure):
            return "MicroPython test failed:\n" + str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"micropython: {self.name}"


class MicroPythonTestFailure(Exception):
    pass
