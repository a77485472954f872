"""The chip's eFuses judged for secure boot, flash encryption and JTAG.

The parsing and the judgement are tested on summaries written by espefuse
itself (esptool's own virtual eFuses, `--virt`), blank and burned, for the
ESP32, ESP32-S3 and ESP32-C3, and on hand-made summaries of the same shape
for the corner cases. The check `chip-security-fuses` is run by `sbd verify`
on a serial board reading those virtual eFuses: it fails on a blank chip,
passes on one with everything burned, and skips on the emulated board.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sbd_harness.boards.efuse import EfuseError, espefuse_command, judge, parse_summary, read_summary

BURN = {  # what a production chip of each family has burned: secure boot, flash encryption in release mode
    # (every counter bit), the ROM download mode closed to decryption or secure, JTAG off
    "esp32": ["ABS_DONE_1", "1", "FLASH_CRYPT_CNT", "0x7f", "JTAG_DISABLE", "1", "DISABLE_DL_ENCRYPT", "1",
              "DISABLE_DL_DECRYPT", "1", "DISABLE_DL_CACHE", "1"],
    "esp32s3": ["SECURE_BOOT_EN", "1", "SPI_BOOT_CRYPT_CNT", "7", "DIS_PAD_JTAG", "1", "DIS_USB_JTAG", "1",
                "ENABLE_SECURITY_DOWNLOAD", "1"],
    "esp32c3": ["SECURE_BOOT_EN", "1", "SPI_BOOT_CRYPT_CNT", "7", "DIS_PAD_JTAG", "1", "DIS_USB_JTAG", "1",
                "ENABLE_SECURITY_DOWNLOAD", "1"],
}


def virtual_efuses(chip: str, path: Path, burn: list[str] | None = None) -> Path:
    """A file of espefuse's virtual eFuses for `chip`: blank, or with `burn` burned."""
    base = [sys.executable, "-m", "espefuse", "--chip", chip, "--virt", "--path-efuse-file", str(path)]
    cmd = base + (["--do-not-confirm", "burn-efuse", *burn] if burn else ["summary"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and path.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return path


def entry(raw: str | None = None, value=None, efuse_type: str = "bool") -> dict:
    """One field as espefuse writes it (the fields the judgement does not use are left out)."""
    out = {"category": "security", "efuse_type": efuse_type, "readable": True, "writeable": True, "value": value}
    if raw is not None:
        out["raw_value"] = raw
    return out


def esp32(**raw: str) -> dict:
    fields = {"ABS_DONE_0": "0x0", "ABS_DONE_1": "0x0", "FLASH_CRYPT_CNT": "0x00", "JTAG_DISABLE": "0x0",
              "UART_DOWNLOAD_DIS": "0x0", "DISABLE_DL_ENCRYPT": "0x0", "DISABLE_DL_DECRYPT": "0x0",
              "DISABLE_DL_CACHE": "0x0", **raw}
    return {k: entry(v, int(v, 16)) for k, v in fields.items()}


def esp32s3(**raw: str) -> dict:
    fields = {"SECURE_BOOT_EN": "0x0", "SPI_BOOT_CRYPT_CNT": "0x0", "DIS_PAD_JTAG": "0x0", "SOFT_DIS_JTAG": "0x0",
              "DIS_USB_JTAG": "0x0", "DIS_USB_SERIAL_JTAG": "0x0", "DIS_DOWNLOAD_MODE": "0x0",
              "ENABLE_SECURITY_DOWNLOAD": "0x0", **raw}
    return {k: entry(v, int(v, 16)) for k, v in fields.items()}


# espefuse's own output --------------------------------------------------------------
@pytest.mark.parametrize("chip, family", [("esp32", "esp32"), ("esp32s3", "esp32-s/c"), ("esp32c3", "esp32-s/c")])
def test_a_blank_chip_as_espefuse_reports_it_fails_all_four(tmp_path, chip, family):
    summary = read_summary("", chip, virtual=virtual_efuses(chip, tmp_path / "efuses.bin"))
    assert {"raw_value", "value", "efuse_type"} <= set(next(iter(summary.values())))  # esptool 5's shape
    verdict = judge(summary)
    assert (verdict.family, verdict.secure_boot, verdict.flash_encryption, verdict.jtag_disabled,
            verdict.download_mode) == (family, False, False, False, "enabled")
    problems = verdict.problems()
    assert len(problems) == 4
    assert problems[0].startswith("secure boot is off") and problems[1].startswith("flash encryption is off")
    assert problems[2].startswith("JTAG is not disabled") and problems[3].startswith("UART download mode is open")


@pytest.mark.parametrize("chip", sorted(BURN))
def test_a_chip_with_the_security_fuses_burned_passes(tmp_path, chip):
    path = virtual_efuses(chip, tmp_path / "efuses.bin", BURN[chip])
    verdict = judge(read_summary("", chip, virtual=path))
    assert verdict.problems() == []
    assert verdict.secure_boot and verdict.flash_encryption and verdict.jtag_disabled


def test_espefuse_output_with_a_value_that_is_a_meaning_still_judges_by_its_bits(tmp_path):
    """SPI_BOOT_CRYPT_CNT's value is "Enable"/"Disable" in espefuse's JSON; its bits decide."""
    summary = read_summary("", "esp32s3", virtual=virtual_efuses("esp32s3", tmp_path / "e.bin",
                                                                  ["SPI_BOOT_CRYPT_CNT", "1"]))
    assert summary["SPI_BOOT_CRYPT_CNT"]["value"] == "Enable" and summary["SPI_BOOT_CRYPT_CNT"]["raw_value"] == "0x1"
    verdict = judge(summary)
    assert verdict.flash_encryption and not verdict.secure_boot


# the judgement ----------------------------------------------------------------------
def test_esp32_secure_boot_v1_or_v2():
    assert judge(esp32(ABS_DONE_0="0x1")).secure_boot
    assert judge(esp32(ABS_DONE_1="0x1")).secure_boot
    assert not judge(esp32()).secure_boot


@pytest.mark.parametrize("count, on", [("0x00", False), ("0x01", True), ("0x03", False), ("0x07", True),
                                       ("0x3f", False), ("0x7f", True)])
def test_esp32_flash_encryption_is_on_for_an_odd_number_of_bits(count, on):
    """Turning flash encryption off again burns one more bit: 0b11 is off, 0b111 on."""
    assert judge(esp32(FLASH_CRYPT_CNT=count)).flash_encryption is on


@pytest.mark.parametrize("count, on", [("0x0", False), ("0x1", True), ("0x3", False), ("0x7", True)])
def test_newer_chips_flash_encryption_is_on_for_an_odd_number_of_bits(count, on):
    assert judge(esp32s3(SPI_BOOT_CRYPT_CNT=count)).flash_encryption is on


def test_jtag_on_newer_chips_needs_pad_and_usb_jtag_off():
    assert not judge(esp32s3(DIS_PAD_JTAG="0x1")).jtag_disabled  # USB JTAG still there
    assert not judge(esp32s3(DIS_USB_JTAG="0x1")).jtag_disabled  # pad JTAG still there
    assert judge(esp32s3(DIS_PAD_JTAG="0x1", DIS_USB_JTAG="0x1")).jtag_disabled
    assert judge(esp32s3(DIS_PAD_JTAG="0x1", DIS_USB_SERIAL_JTAG="0x1")).jtag_disabled
    # soft-disabled pad JTAG (an odd number of SOFT_DIS_JTAG bits): off until an HMAC key re-enables it
    assert judge(esp32s3(SOFT_DIS_JTAG="0x1", DIS_USB_JTAG="0x1")).jtag_disabled
    assert not judge(esp32s3(SOFT_DIS_JTAG="0x3", DIS_USB_JTAG="0x1")).jtag_disabled
    # a chip without USB JTAG fields (ESP32-S2-like): pad JTAG alone decides
    no_usb = {k: v for k, v in esp32s3(DIS_PAD_JTAG="0x1").items() if "USB" not in k}
    assert judge(no_usb).jtag_disabled


def test_download_mode_is_judged():
    assert judge(esp32(UART_DOWNLOAD_DIS="0x1")).download_mode == "disabled"
    assert judge(esp32(DISABLE_DL_ENCRYPT="0x1", DISABLE_DL_DECRYPT="0x1")).download_mode == "enabled"
    assert judge(esp32(DISABLE_DL_ENCRYPT="0x1", DISABLE_DL_DECRYPT="0x1",
                       DISABLE_DL_CACHE="0x1")).download_mode == "restricted"
    assert judge(esp32s3(ENABLE_SECURITY_DOWNLOAD="0x1")).download_mode == "secure"
    assert judge(esp32s3(DIS_DOWNLOAD_MODE="0x1", ENABLE_SECURITY_DOWNLOAD="0x1")).download_mode == "disabled"


def test_the_problems_name_the_fuses_they_rest_on():
    problems = judge(esp32(ABS_DONE_1="0x1", FLASH_CRYPT_CNT="0x03")).problems()
    assert problems == ["flash encryption is off (FLASH_CRYPT_CNT = 0x3: an even number of bits set)",
                        "JTAG is not disabled (JTAG_DISABLE = 0x0)",
                        "UART download mode is open (UART_DOWNLOAD_DIS = 0x0, DISABLE_DL_ENCRYPT = 0x0, "
                        "DISABLE_DL_DECRYPT = 0x0, DISABLE_DL_CACHE = 0x0)"]


def test_an_older_esptool_without_raw_value_is_judged_by_bool_and_int_values():
    old = {name: entry(None, value) for name, value in
           {"ABS_DONE_0": False, "ABS_DONE_1": True, "FLASH_CRYPT_CNT": 127, "JTAG_DISABLE": True,
            "UART_DOWNLOAD_DIS": True}.items()}
    assert judge(old).problems() == []
    old["FLASH_CRYPT_CNT"] = entry(None, "Enable")  # a meaning, not bits: refused, not guessed
    with pytest.raises(EfuseError, match="FLASH_CRYPT_CNT: no raw_value"):
        judge(old)


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ("[]", "not an object"),
    ("{}", "not an object"),
])
def test_malformed_summaries_are_clear_errors(text, message):
    with pytest.raises(EfuseError, match=message):
        parse_summary(text)


def test_summaries_the_judgement_cannot_read_are_clear_errors():
    with pytest.raises(EfuseError, match="neither ABS_DONE_0"):
        judge({"MAC": entry("0x0", 0)})
    partial = esp32()
    del partial["JTAG_DISABLE"]
    with pytest.raises(EfuseError, match="no JTAG_DISABLE field"):
        judge(partial)
    with pytest.raises(EfuseError, match="not hex"):
        judge({**esp32(), "ABS_DONE_0": entry("0xZZ", False)})
    with pytest.raises(EfuseError, match="expected an object"):
        judge({**esp32(), "JTAG_DISABLE": True})


def test_espefuse_is_called_through_esptool_for_the_board_port(tmp_path):
    cmd = espefuse_command("/dev/ttyUSB0", "esp32", tmp_path / "e.json", 460800)
    assert cmd[:3] == [sys.executable, "-m", "espefuse"]
    assert cmd[3:] == ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800",
                       "summary", "--format", "json", "--file", str(tmp_path / "e.json")]


def test_an_unreachable_chip_is_an_error_not_a_verdict():
    with pytest.raises(EfuseError, match="espefuse failed"):
        read_summary("/dev/no-such-port-sbd", "esp32")


# the check --------------------------------------------------------------------------
def _verify(tmp_path, *target: str, env_efuses: Path | None = None) -> dict:
    import os
    report = tmp_path / "report.json"
    env = dict(os.environ)
    env.pop("SBD_EFUSE_VIRTUAL", None)
    if env_efuses is not None:
        env["SBD_EFUSE_VIRTUAL"] = str(env_efuses)
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "verify", *target, "--check", "chip-security-fuses",
                           "--report", str(report)], capture_output=True, text=True, timeout=300, env=env)
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text())
    check = next(c for c in data["checks"] if c["id"] == "chip-security-fuses")
    return {"code": proc.returncode, **check}


def test_the_check_skips_on_the_emulated_board_and_says_why(module_board, tmp_path):
    check = _verify(tmp_path, "--board", module_board.name)
    assert check["status"] == "skip" and "no eFuses on the emulated board" in check["message"]


def test_the_check_fails_on_a_blank_chip_and_passes_on_a_secured_one(module_board, tmp_path):
    """A serial board (the emulated board's PTY) whose eFuses espefuse reads from its virtual file."""
    blank = _verify(tmp_path, "--port", module_board.port,
                    env_efuses=virtual_efuses("esp32", tmp_path / "blank.bin"))
    assert blank["status"] == "fail" and blank["code"] == 1
    assert "secure boot is off" in blank["message"]
    assert blank["evidence"]["secure_boot"] is False and blank["evidence"]["fuses"]["ABS_DONE_0"] == 0
    secured = _verify(tmp_path, "--port", module_board.port,
                      env_efuses=virtual_efuses("esp32", tmp_path / "secured.bin", BURN["esp32"]))
    assert secured["status"] == "pass" and secured["code"] == 0, secured
    assert secured["evidence"]["fuses"]["ABS_DONE_1"] == 1
