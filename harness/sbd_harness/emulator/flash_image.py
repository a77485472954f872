"""The emulated board's flash: one image file holding an ESP-IDF partition table.

The table is written in ESP-IDF's binary format at 0x8000 (32-byte entries,
magic 0x50AA, then an MD5 entry), so the board-support `esp32.Partition` reads
it from flash exactly as the real chip's bootloader does, and tools that know
the format (esptool, gen_esp32part) could read our images too.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from sbd_harness.errors import SbdError

ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
TABLE_MAX_LEN = 0xC00
ERASED = 0xFF

TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    "app": {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}},
    "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
             "efuse": 0x05, "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82,
             "littlefs": 0x83},
}


class PartitionTableError(SbdError, ValueError):
    pass


@dataclass(frozen=True)
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    def pack(self) -> bytes:
        label = self.label.encode()
        if len(label) > 16:
            raise PartitionTableError(f"partition label too long: {self.label!r}")
        return (ENTRY_MAGIC + struct.pack("<BBII", self.type, self.subtype, self.offset, self.size)
                + label.ljust(16, b"\0") + struct.pack("<I", self.flags))


def _number(text: str) -> int:
    text = text.strip()
    mult = 1
    if text[-1:].upper() in ("K", "M"):
        mult = 1024 if text[-1].upper() == "K" else 1024 * 1024
        text = text[:-1]
    return int(text, 0) * mult


def parse_csv(text: str) -> list[Partition]:
    """Parses an ESP-IDF partition CSV with explicit offsets, as the MicroPython port ships."""
    parts: list[Partition] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 5:
            raise PartitionTableError(f"line {lineno}: expected name,type,subtype,offset,size")
        name, ptype, subtype, offset, size = fields[:5]
        try:
            type_id = TYPES[ptype] if ptype in TYPES else _number(ptype)
            sub_id = SUBTYPES.get(ptype, {}).get(subtype)
            if sub_id is None:
                sub_id = _number(subtype)
            parts.append(Partition(name, type_id, sub_id, _number(offset), _number(size)))
        except (ValueError, KeyError, IndexError) as exc:
            raise PartitionTableError(f"line {lineno}: {exc}") from exc
    _check_layout(parts)
    return parts


def _check_layout(parts: list[Partition]) -> None:
    spans = sorted((p.offset, p.offset + p.size, p.label) for p in parts)
    for (_s1, e1, l1), (s2, _e2, l2) in zip(spans, spans[1:], strict=False):
        if s2 < e1:
            raise PartitionTableError(f"partitions {l1} and {l2} overlap")
    for p in parts:
        if p.offset % 0x1000 or p.size % 0x1000:
            raise PartitionTableError(f"partition {p.label} is not 4 KiB aligned")


def pack_table(parts: list[Partition]) -> bytes:
    body = b"".join(p.pack() for p in parts)
    table = body + MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    if len(table) > TABLE_MAX_LEN:
        raise PartitionTableError("partition table too long")
    return table.ljust(TABLE_MAX_LEN, b"\xff")


def unpack_table(blob: bytes) -> list[Partition]:
    """Reads a binary table, checking its MD5 like the ESP-IDF bootloader does."""
    parts: list[Partition] = []
    for pos in range(0, TABLE_MAX_LEN, 32):
        entry = blob[pos:pos + 32]
        if entry[:2] == ENTRY_MAGIC:
            ptype, sub, off, size = struct.unpack("<BBII", entry[2:12])
            label = entry[12:28].rstrip(b"\0").decode()
            flags = struct.unpack("<I", entry[28:32])[0]
            parts.append(Partition(label, ptype, sub, off, size, flags))
        elif entry[:2] == MD5_MAGIC:
            if hashlib.md5(blob[:pos]).digest() != entry[16:32]:
                raise PartitionTableError("partition table MD5 mismatch")
            return parts
        else:
            break
    raise PartitionTableError("partition table has no MD5 entry")


class FlashImage:
    """One board's flash chip as a file: read, write, erase, by partition."""

    def __init__(self, path: Path, table_offset: int = 0x8000):
        self.path = Path(path)
        self.table_offset = table_offset

    @classmethod
    def create(cls, path: Path, size: int, parts: list[Partition], table_offset: int = 0x8000) -> "FlashImage":
        """A new chip: all bytes erased (0xFF) but the partition table."""
        if any(p.offset + p.size > size for p in parts):
            raise PartitionTableError("a partition does not fit in the flash")
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            chunk = bytes([ERASED]) * 0x10000
            for _ in range(size // len(chunk)):
                f.write(chunk)
            f.seek(table_offset)
            f.write(pack_table(parts))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return cls(path, table_offset)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def partitions(self) -> list[Partition]:
        with open(self.path, "rb") as f:
            f.seek(self.table_offset)
            return unpack_table(f.read(TABLE_MAX_LEN))

    def partition(self, label: str) -> Partition:
        for p in self.partitions():
            if p.label == label:
                return p
        raise KeyError(f"no partition labelled {label!r}")

    def read(self, offset: int, length: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def write(self, offset: int, data: bytes) -> None:
        """Writes bytes as a flasher does (the region erased first, then programmed)."""
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def read_partition(self, label: str) -> bytes:
        p = self.partition(label)
        return self.read(p.offset, p.size)

    def erase_partition(self, label: str) -> None:
        p = self.partition(label)
        with open(self.path, "r+b") as f:
            f.seek(p.offset)
            f.write(bytes([ERASED]) * p.size)

