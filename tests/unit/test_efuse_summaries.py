"""chip-security-fuses judged on espefuse summaries of chips in each state
(tests/unit/data/efuse, README.md there says how they were made): ESP-IDF's
release mode passes; development-mode flash encryption, an open UART download
mode and open JTAG each fail, with the eFuses they rest on named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sbd_harness.boards.efuse import judge, parse_summary

DATA = Path(__file__).resolve().parent / "data" / "efuse"
CHIPS = ("esp32", "esp32s3", "esp32c3")


def summary(chip: str, state: str) -> dict:
    return parse_summary((DATA / f"{chip}-{state}.json").read_text())


@pytest.mark.parametrize("chip", CHIPS)
def test_the_summaries_are_espefuse_json(chip):
    """Every field as espefuse 5 writes it: value, raw_value in hex, readable/writeable."""
    data = summary(chip, "release")
    for name, entry in data.items():
        assert entry["name"] == name
        assert {"value", "raw_value", "readable", "writeable", "efuse_type", "bit_len", "block"} <= set(entry)
        assert entry["raw_value"].startswith("0x") or entry["efuse_type"].startswith("bytes")


@pytest.mark.parametrize("chip", CHIPS)
def test_release_mode_passes(chip):
    verdict = judge(summary(chip, "release"))
    assert verdict.problems() == []
    assert verdict.encryption_release and verdict.download_mode in ("restricted", "secure")


@pytest.mark.parametrize("chip, message", [
    ("esp32", "flash encryption is in development mode (FLASH_CRYPT_CNT = 0x1, not all bits set and not "
              "write-protected"),
    ("esp32s3", "flash encryption is in development mode (SPI_BOOT_CRYPT_CNT = 0x1"),
    ("esp32c3", "flash encryption is in development mode (SPI_BOOT_CRYPT_CNT = 0x1"),
])
def test_development_mode_flash_encryption_fails(chip, message):
    verdict = judge(summary(chip, "dev-encryption"))
    assert verdict.flash_encryption and not verdict.encryption_release
    assert len(verdict.problems()) == 1 and verdict.problems()[0].startswith(message)


@pytest.mark.parametrize("chip, message", [
    ("esp32", "UART download mode is open (UART_DOWNLOAD_DIS = 0x0, DISABLE_DL_ENCRYPT = 0x0, "
              "DISABLE_DL_DECRYPT = 0x0, DISABLE_DL_CACHE = 0x0)"),
    ("esp32s3", "UART download mode is open (DIS_DOWNLOAD_MODE = 0x0, ENABLE_SECURITY_DOWNLOAD = 0x0)"),
    ("esp32c3", "UART download mode is open (DIS_DOWNLOAD_MODE = 0x0, ENABLE_SECURITY_DOWNLOAD = 0x0)"),
])
def test_an_open_download_mode_fails(chip, message):
    verdict = judge(summary(chip, "download-open"))
    assert verdict.download_mode == "enabled" and verdict.encryption_release
    assert verdict.problems() == [message]


@pytest.mark.parametrize("chip", CHIPS)
def test_open_jtag_fails(chip):
    verdict = judge(summary(chip, "jtag-open"))
    assert not verdict.jtag_disabled
    problems = verdict.problems()
    assert len(problems) == 1 and problems[0].startswith("JTAG is not disabled (")


@pytest.mark.parametrize("chip", CHIPS)
def test_a_blank_chip_fails_all_four(chip):
    problems = judge(summary(chip, "blank")).problems()
    assert [p.split(" (")[0] for p in problems] == ["secure boot is off", "flash encryption is off",
                                                   "JTAG is not disabled", "UART download mode is open"]


def test_write_protection_is_read_from_wr_dis_when_writeable_is_missing():
    """An older esptool's summary has no `writeable`: FLASH_CRYPT_CNT's WR_DIS bit (2) decides."""
    data = summary("esp32", "release")
    for entry in data.values():
        entry.pop("writeable")
    assert judge(data).encryption_release
    data["WR_DIS"] = dict(data["WR_DIS"], raw_value="0x0000")
    assert not judge(data).encryption_release


def test_all_counter_bits_burned_is_release_mode_without_write_protection():
    data = json.loads(json.dumps(summary("esp32", "dev-encryption")))
    data["FLASH_CRYPT_CNT"].update(raw_value="0x7f", value=127)
    assert judge(data).encryption_release
