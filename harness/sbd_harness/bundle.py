"""The firmware as a set of files for the device filesystem, with their hashes."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .paths import firmware_dir

APP_ROOTS = ("boot.py", "main.py", "lib")
VERSION_RE = re.compile(r'^VERSION\s*=\s*"([^"]+)"', re.M)


class BundleError(ValueError):
    pass


@dataclass
class FirmwareBundle:
    """Device path (e.g. "/lib/sbd/boot_report.py") -> file content."""

    files: dict[str, bytes] = field(default_factory=dict)
    source: Path | None = None

    @classmethod
    def from_dir(cls, root: Path | None = None) -> "FirmwareBundle":
        root = Path(root) if root else firmware_dir()
        if not (root / "main.py").exists() and not (root / "boot.py").exists():
            raise BundleError(f"{root} holds no boot.py or main.py: not a firmware folder")
        files: dict[str, bytes] = {}
        for name in APP_ROOTS:
            path = root / name
            if path.is_file():
                files["/" + name] = path.read_bytes()
            elif path.is_dir():
                for sub in sorted(path.rglob("*")):
                    if sub.is_file() and "__pycache__" not in sub.parts and sub.suffix in (".py", ".mpy", ".json", ".der", ".pem"):
                        files["/" + sub.relative_to(root).as_posix()] = sub.read_bytes()
        return cls(files, root)

    @property
    def version(self) -> str:
        src = self.files.get("/lib/sbd/version.py", b"").decode()
        m = VERSION_RE.search(src)
        return m.group(1) if m else "unknown"

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
