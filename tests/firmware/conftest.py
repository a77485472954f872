"""Collects `mptest_*.py` files and runs their `test_*` functions under MicroPython.

The firmware's own modules are unit-tested on the interpreter that runs them on
the device, with the device-sized heap, so a CPython-only idiom or an
allocation that would not fit an ESP32 fails here.

A test file can ask for more with comment lines of its own:

- `# mptest-vectors: NAME`: before MicroPython starts, the host module
  tests/firmware/NAME.py (CPython) writes test vectors with `write(folder)`
  into a fresh folder, whose path MicroPython finds in SBD_MP_VECTORS (for
  what only the host can make, such as streams signed by `cryptography`).
- `# mptest-firmware: mpy`: the firmware's /lib is imported compiled by
  mpy-cross, as `sbd flash` puts it on a device, not compiled from source at
  each import (which takes heap a device never spends on it).
- `# mptest-heap: board`: the emulated board's whole heap (`heap_bytes`), not
  only the firmware's share, for a test that loads the board's own ROM modules
  (its `esp32`, the bootloader) beside the firmware, as the board does.
- `# mptest-xfail: REASON` on the line right above a `def test_`: a known
  bug, owned elsewhere, that the test shows. It is reported as xfailed while
  it fails, and fails (strict) once it passes, so the marker goes with the fix.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
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
        previous = ""
        for line in self.path.read_text().splitlines():
            if line.startswith("def test_"):
                name = line[4:].split("(")[0]
                item = MicroPythonItem.from_parent(self, name=name)
                if previous.startswith("# mptest-xfail:"):
                    item.xfail_reason = previous.split(":", 1)[1].strip()
                yield item
            previous = line

    def directive(self, name: str) -> str | None:
        for line in self.path.read_text().splitlines():
            if line.startswith(f"# mptest-{name}:"):
                return line.split(":", 1)[1].strip()
        return None

    def results(self) -> dict[str, tuple[bool, str]]:
        if self._results is None:
            self._results = self._run()
        return self._results

    def _run(self) -> dict[str, tuple[bool, str]]:
        with tempfile.TemporaryDirectory(prefix="sbd-mptest-") as tmp:
            return self._run_in(Path(tmp))

    def _run_in(self, tmp: Path) -> dict[str, tuple[bool, str]]:
        env = dict(os.environ)
        lib = ROOT / "firmware" / "lib"
        if self.directive("firmware") == "mpy":
            lib = _compiled_lib(tmp / "lib")
        env["MICROPYPATH"] = os.pathsep.join([str(lib), str(HERE)])
        vectors = self.directive("vectors")
        if vectors:
            spec = importlib.util.spec_from_file_location(f"_mptest_{vectors}", HERE / f"{vectors}.py")
            assert spec and spec.loader, vectors
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.write(tmp / "vectors")
            env["SBD_MP_VECTORS"] = str(tmp / "vectors")
        heap = None
        if self.directive("heap") == "board":
            import json
            heap = json.loads((ROOT / "boards" / "emulated" / "board.json").read_text())["heap_bytes"]
        proc = subprocess.run(
            micropython_command(heap) + [str(RUNNER), str(self.path)],
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


def _compiled_lib(out: Path) -> Path:
    """firmware/lib compiled by mpy-cross into `out`, as a device holds it."""
    from sbd_harness.release.bundle import compile_mpy

    src = ROOT / "firmware" / "lib"
    sources = sorted(src.rglob("*.py"))

    def one(path: Path) -> None:
        target = out / path.relative_to(src).with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(compile_mpy(path))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, sources))
    return out


class MicroPythonItem(pytest.Item):
    xfail_reason: str | None = None

    def runtest(self) -> None:
        assert isinstance(self.parent, MicroPythonFile)
        ok, output = self.parent.results().get(self.name, (False, "test did not run"))
        if self.xfail_reason is not None:
            if ok:
                raise MicroPythonTestFailure(f"XPASS(strict): {self.xfail_reason}: it passes now, "
                                             "remove its mptest-xfail line")
            lines = output.strip().splitlines()
            pytest.xfail(f"{self.xfail_reason} ({lines[-1] if lines else 'no output'})")
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
