"""The flash image speaks ESP-IDF's partition table format."""
from __future__ import annotations

import hashlib
import struct

import pytest

from sbd_harness.emulator.flash_image import (FlashImage, PartitionTableError, pack_table, parse_csv,
                                              unpack_table)
from sbd_harness.paths import boards_dir

CSV = (boards_dir() / "emulated" / "partitions.csv").read_text()


def test_micropython_ota_layout_parses_to_the_published_offsets():
    parts = {p.label: p for p in parse_csv(CSV)}
    assert (parts["nvs"].type, parts["nvs"].subtype, parts["nvs"].offset, parts["nvs"].size) == (1, 2, 0x9000, 0x4000)
    assert (parts["otadata"].subtype, parts["otadata"].offset) == (0x00, 0xD000)
    assert (parts["ota_0"].type, parts["ota_0"].subtype, parts["ota_0"].offset) == (0, 0x10, 0x10000)
    assert (parts["ota_1"].subtype, parts["ota_1"].offset, parts["ota_1"].size) == (0x11, 0x190000, 0x180000)
    assert (parts["vfs"].subtype, parts["vfs"].offset, parts["vfs"].size) == (0x81, 0x310000, 0xF0000)


def test_binary_table_has_esp_idf_entries_and_md5():
    table = pack_table(parse_csv(CSV))
    assert len(table) == 0xC00
    first = table[:32]
    assert first[:2] == b"\xaa\x50"
    assert struct.unpack("<BBII", first[2:12]) == (1, 2, 0x9000, 0x4000)
    assert first[12:28].rstrip(b"\0") == b"nvs"
    n = len(parse_csv(CSV))
    md5_entry = table[32 * n:32 * n + 32]
    assert md5_entry[:2] == b"\xeb\xeb" and md5_entry[2:16] == b"\xff" * 14
    assert md5_entry[16:] == hashlib.md5(table[:32 * n]).digest()
    assert unpack_table(table) == parse_csv(CSV)


def test_a_corrupted_table_is_refused():
    table = bytearray(pack_table(parse_csv(CSV)))
    table[5] ^= 0x01
    with pytest.raises(PartitionTableError, match="MD5"):
        unpack_table(bytes(table))


@pytest.mark.parametrize("text, message", [
    ("a, data, nvs, 0x9000, 0x4000\nb, data, fat, 0xa000, 0x1000\n", "overlap"),
    ("a, data, nvs, 0x9100, 0x1000\n", "aligned"),
    ("a, data, nvs\n", "expected"),
    ("a, data, nvs, zzz, 0x1000\n", "line 1"),
    ("a-very-long-partition-label, data, nvs, 0x9000, 0x1000\n", "too long"),
])
def test_bad_partition_csv_gets_a_clear_error(text, message):
    with pytest.raises(PartitionTableError, match=message):
        pack_table(parse_csv(text))


def test_new_image_is_erased_flash_with_the_table(tmp_path):
    image = FlashImage.create(tmp_path / "f.bin", 4 * 1024 * 1024, parse_csv(CSV))
    assert image.size == 4 * 1024 * 1024
    assert image.read(0, 0x8000) == b"\xff" * 0x8000
    assert image.partition("vfs").offset == 0x310000
    assert set(image.read_partition("nvs")) == {0xFF}
    with pytest.raises(KeyError):
        image.partition("nope")
    with pytest.raises(PartitionTableError):
        FlashImage.create(tmp_path / "small.bin", 1024 * 1024, parse_csv(CSV))
