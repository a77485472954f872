"""Reads the emulated board's NVS store out of a flash image (host side).

The format is the one harness/sbd_harness/emulator/rom/esp32.py writes: two banks, each
"SBDN" + sequence + length + CRC-32 + entries; the valid bank with the
highest sequence is the store. Only emulated boards can be read this way:
it is the bench looking at the flash chip, not something firmware offers.
"""
from __future__ import annotations

import struct
import zlib

MAGIC = b"SBDN"
TYPE_I32, TYPE_BLOB = 1, 2


def _bank(part: bytes, bank: int) -> tuple[int, bytes] | None:
    half = len(part) // 2
    raw = part[bank * half:(bank + 1) * half]
    if raw[:4] != MAGIC:
        return None
    seq, length, crc = struct.unpack("<III", raw[4:16])
    body = raw[16:16 + length]
    if length > half - 16 or zlib.crc32(body) != crc:
        return None
    return seq, body


def read_store(partition: bytes) -> dict[tuple[str, str], bytes | int]:
    """{(namespace, key): value} of the current store; {} for an erased partition."""
    banks = [b for b in (_bank(partition, 0), _bank(partition, 1)) if b is not None]
    if not banks:
        return {}
    body = max(banks)[1]
    store: dict[tuple[str, str], bytes | int] = {}
    i = 0
    while i < len(body):
        ns = body[i + 1:i + 1 + body[i]].decode()
        i += 1 + body[i]
        key = body[i + 1:i + 1 + body[i]].decode()
        i += 1 + body[i]
        kind, size = body[i], struct.unpack("<H", body[i + 1:i + 3])[0]
        value = body[i + 3:i + 3 + size]
        i += 3 + size
        store[(ns, key)] = struct.unpack("<i", value)[0] if kind == TYPE_I32 else bytes(value)
    return store
