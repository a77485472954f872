"""Whether the device's private key can be read from its flash at rest, as
anyone holding the board reads it: the NVS partition's bytes (esptool
read-flash on a real ESP32, the flash image of an emulated one), searched for
the private scalar of the public key the lab CA certified.

The search does not trust the device's word on where its key is: every
32-byte-aligned window of the partition (ESP-IDF's NVS keeps each entry, and
a blob's data, on 32-byte boundaries) is tried as a P-256 private key, and so
is every 32-byte value of the emulated board's own NVS layout. A key found
is a key stored in plaintext. With ESP-IDF's NVS encryption (XTS-AES, keys
in an `nvs_keys` partition protected by flash encryption) the partition holds
no such window, and the key is not found. The official MicroPython builds do
not enable NVS encryption.
"""
from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from sbd_harness.errors import SbdError

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ENTRY = 32  # ESP-IDF NVS entry size (components/nvs_flash: Page::ENTRY_SIZE)
READ_TIMEOUT_S = 120


class KeysAtRestError(SbdError):
    pass


@dataclass
class Finding:
    """What the search found: where the key was, if anywhere, and how much was searched."""
    offset: int | None
    windows: int
    blank: bool

    @property
    def plaintext(self) -> bool:
        return self.offset is not None


def _point(scalar: int) -> bytes:
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    nums = key.public_key().public_numbers()
    return b"\x04" + nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")


def find_private_key(partition: bytes, public_point: bytes, extra: list[bytes] | tuple[bytes, ...] = ()) -> Finding:
    """Searches `partition` (and the `extra` 32-byte candidates) for the private key of `public_point`
    (uncompressed, 65 bytes)."""
    seen: set[bytes] = set()
    windows = 0
    candidates = [(at, partition[at:at + 32]) for at in range(0, len(partition) - 31, ENTRY)]
    candidates += [(None, c) for c in extra if len(c) == 32]
    for at, window in candidates:
        if window in seen:
            continue
        seen.add(window)
        scalar = int.from_bytes(window, "big")
        if not 0 < scalar < P256_ORDER:
            continue
        windows += 1
        if _point(scalar) == public_point:
            return Finding(partition.find(window) if at is None else at, windows, False)
    return Finding(None, windows, set(partition) <= {0xFF})


def nvs_partition(partitions_csv: Path) -> tuple[int, int]:
    """Offset and size of the `nvs` partition in an ESP-IDF partition table (CSV)."""
    for row in csv.reader(io.StringIO(partitions_csv.read_text())):
        cells = [c.strip() for c in row]
        if cells and not cells[0].startswith("#") and len(cells) >= 5 and cells[0] == "nvs":
            return int(cells[3], 0), int(cells[4], 0)
    raise KeysAtRestError(f"{partitions_csv}: no nvs partition")


def read_flash(port: str, chip: str, offset: int, size: int, reset: tuple[str, str] | None = None) -> bytes:
    """`esptool read-flash` of a region of a real board's flash (the chip restarts into its ROM
    bootloader for it, and is reset afterwards)."""
    with tempfile.TemporaryDirectory(prefix="sbd-nvs-") as tmp:
        out = Path(tmp) / "nvs.bin"
        before_after = ["--before", reset[0], "--after", reset[1]] if reset else []
        cmd = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, *before_after,
               "read-flash", hex(offset), hex(size), str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=READ_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise KeysAtRestError(f"esptool did not finish within {READ_TIMEOUT_S} s: {' '.join(cmd)}") from None
        if proc.returncode != 0 or not out.exists():
            said = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
            raise KeysAtRestError(f"esptool read-flash failed ({proc.returncode}): {' / '.join(said[-3:])}")
        return out.read_bytes()
