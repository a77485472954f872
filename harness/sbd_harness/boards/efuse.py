"""What a real ESP32's eFuses say about secure boot, flash encryption and JTAG.

The eFuses are read with espefuse (part of esptool): `espefuse --chip C
--port P summary --format json --file F`. That JSON maps each eFuse name to
its description, `value` (its meaning: True, 3, "Enable", ...), and, since
esptool 5, `raw_value` (its bits in hex, "0x1"). The judgement uses the
bits: `raw_value` when present, else a `value` that is a bool or an int.

Two families of chips, told apart by their fields (names, widths and
write-protect bits as in esptool's espefuse/efuse_defs/esp32*.yaml):

- ESP32: secure boot when ABS_DONE_0 (V1) or ABS_DONE_1 (V2) is set; flash
  encryption when FLASH_CRYPT_CNT (7 bits) has an odd number of bits set;
  JTAG off when JTAG_DISABLE is set. UART download mode is closed when
  UART_DOWNLOAD_DIS is set (ESP32 V3 and later), or restricted when
  DISABLE_DL_ENCRYPT, DISABLE_DL_DECRYPT and DISABLE_DL_CACHE are all set (the
  ROM bootloader can then neither read the flash decrypted nor encrypt).
- ESP32-S2, -S3, -C3 and later: secure boot when SECURE_BOOT_EN is set;
  flash encryption when SPI_BOOT_CRYPT_CNT (3 bits) has an odd number of bits
  set; pad JTAG off when DIS_PAD_JTAG (HARD_DIS_JTAG on the S2) is set (or SOFT_DIS_JTAG has an odd number
  of bits: off until re-enabled with an HMAC key), and USB JTAG off when
  DIS_USB_JTAG or DIS_USB_SERIAL_JTAG is set, on chips that have it. UART
  download mode is closed when DIS_DOWNLOAD_MODE is set, or secure when
  ENABLE_SECURITY_DOWNLOAD is (the ROM then only writes and reads plain flash
  commands: no memory reads, no register writes).

Flash encryption counts only in release mode: development mode (ESP-IDF's
default) leaves the counter writeable, so one more bit burned (by the ROM's
download mode or any code that runs) turns encryption off and lets plaintext
firmware be flashed. Release mode is when the counter can change no more:
all its bits set (SPI_BOOT_CRYPT_CNT = 0b111, FLASH_CRYPT_CNT = 0x7f) or the
counter write-protected (its WR_DIS bit: FLASH_CRYPT_CNT's is bit 2 on the
ESP32, SPI_BOOT_CRYPT_CNT's bit 4 on the newer chips; espefuse reports it as
`writeable`). ESP-IDF's release mode does the second on the ESP32 and both on
the newer chips.

A download mode that is open is a problem: it reads and writes the flash
(and, without DISABLE_DL_* on the ESP32, decrypts it) for anyone at the
serial port who holds GPIO0 low at reset.

Provisions: ETSI EN 303 645 5.4-1 (flash encryption of stored secrets),
5.6-4A (debug interfaces disabled), 5.7-1 (secure boot); OWASP ISVS 3.1.3,
3.1.4, 5.1.1.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sbd_harness.errors import SbdError

ESPEFUSE_TIMEOUT_S = 120


class EfuseError(SbdError, RuntimeError):
    """The eFuses could not be read or the summary is not what espefuse writes."""


@dataclass
class ChipSecurity:
    family: str  # "esp32" or "esp32-s/c" (ESP32-S2, -S3, -C3 and later)
    secure_boot: bool
    flash_encryption: bool
    jtag_disabled: bool
    download_mode: str  # "enabled", "restricted" (ESP32: DISABLE_DL_*), "secure" or "disabled"
    encryption_release: bool = False  # the counter can change no more (all bits set, or write-protected)
    fuses: dict[str, int] = field(default_factory=dict)  # the bits each verdict rests on
    write_protected: list[str] = field(default_factory=list)  # of the fuses judged, those no longer writeable

    def problems(self) -> list[str]:
        out = []
        if not self.secure_boot:
            out.append("secure boot is off (" + ("ABS_DONE_0 and ABS_DONE_1 are 0" if self.family == "esp32"
                                                  else "SECURE_BOOT_EN is 0") + ")")
        if not self.flash_encryption:
            name = "FLASH_CRYPT_CNT" if self.family == "esp32" else "SPI_BOOT_CRYPT_CNT"
            out.append(f"flash encryption is off ({name} = {self.fuses.get(name, 0):#x}: an even number of bits set)")
        elif not self.encryption_release:
            name = "FLASH_CRYPT_CNT" if self.family == "esp32" else "SPI_BOOT_CRYPT_CNT"
            out.append(f"flash encryption is in development mode ({name} = {self.fuses.get(name, 0):#x}, not all "
                       "bits set and not write-protected: one more bit burned turns it off)")
        if not self.jtag_disabled:
            out.append("JTAG is not disabled (" + ", ".join(
                f"{k} = {v:#x}" for k, v in self.fuses.items() if "JTAG" in k) + ")")
        if self.download_mode == "enabled":
            names = (("UART_DOWNLOAD_DIS", "DISABLE_DL_ENCRYPT", "DISABLE_DL_DECRYPT", "DISABLE_DL_CACHE")
                     if self.family == "esp32" else ("DIS_DOWNLOAD_MODE", "ENABLE_SECURITY_DOWNLOAD"))
            out.append("UART download mode is open (" + ", ".join(
                f"{k} = {self.fuses[k]:#x}" for k in names if k in self.fuses) + ")")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bits(name: str, entry: Any) -> int:
    if not isinstance(entry, dict):
        raise EfuseError(f"eFuse {name}: expected an object with value/raw_value, got {type(entry).__name__}")
    raw = entry.get("raw_value")
    if isinstance(raw, str):
        try:
            return int(raw, 16)
        except ValueError:
            raise EfuseError(f"eFuse {name}: raw_value {raw!r} is not hex") from None
    value = entry.get("value")
    if isinstance(value, bool) or isinstance(value, int):
        return int(value)
    raise EfuseError(f"eFuse {name}: no raw_value and a value {value!r} that is not a bit pattern "
                     "(an older esptool? esptool 5 writes raw_value)")


def parse_summary(text: str | bytes) -> dict[str, Any]:
    """The eFuse entries of `espefuse summary --format json` output, checked for shape."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EfuseError(f"the eFuse summary is not JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise EfuseError("the eFuse summary is not an object of eFuse fields")
    return data


def _odd(n: int) -> bool:
    return bin(n).count("1") % 2 == 1


def _write_protected(summary: dict[str, Any], name: str, wr_dis_bit: int) -> bool:
    """Whether eFuse `name` is write-protected: espefuse's `writeable` when the summary has it,
    else its bit in WR_DIS (a summary of an esptool that did not write `writeable`)."""
    writeable = summary[name].get("writeable")
    if isinstance(writeable, bool):
        return not writeable
    if "WR_DIS" not in summary:
        return False  # nothing shows it is protected
    return bool(_bits("WR_DIS", summary["WR_DIS"]) >> wr_dis_bit & 1)


def judge(summary: dict[str, Any]) -> ChipSecurity:
    """Secure boot, flash encryption, JTAG and download mode from the summary's fields."""
    def bits(name: str, required: bool = True) -> int | None:
        if name not in summary:
            if required:
                raise EfuseError(f"the eFuse summary has no {name} field (a filtered summary, or another chip?)")
            return None
        fuses[name] = _bits(name, summary[name])
        return fuses[name]

    def permanent(name: str, width: int, wr_dis_bit: int) -> bool:
        """The counter can change no more: all its bits burned, or write-protected."""
        if _write_protected(summary, name, wr_dis_bit):
            protected.append(name)
            return True
        return fuses[name] == (1 << width) - 1

    fuses: dict[str, int] = {}
    protected: list[str] = []
    if "ABS_DONE_0" in summary:  # the original ESP32
        v1, v2 = bits("ABS_DONE_0"), bits("ABS_DONE_1", required=False)
        secure_boot = bool(v1) or bool(v2)
        flash_encryption = _odd(bits("FLASH_CRYPT_CNT"))
        release = flash_encryption and permanent("FLASH_CRYPT_CNT", 7, 2)
        jtag_disabled = bool(bits("JTAG_DISABLE"))
        dl = [bits(n, required=False) for n in ("DISABLE_DL_ENCRYPT", "DISABLE_DL_DECRYPT", "DISABLE_DL_CACHE")]
        if bits("UART_DOWNLOAD_DIS", required=False):
            download = "disabled"
        elif all(dl):
            download = "restricted"
        else:
            download = "enabled"
        family = "esp32"
    elif "SECURE_BOOT_EN" in summary:
        secure_boot = bool(bits("SECURE_BOOT_EN"))
        flash_encryption = _odd(bits("SPI_BOOT_CRYPT_CNT"))
        release = flash_encryption and permanent("SPI_BOOT_CRYPT_CNT", 3, 4)
        soft = bits("SOFT_DIS_JTAG", required=False)
        hard = "HARD_DIS_JTAG" if "HARD_DIS_JTAG" in summary else "DIS_PAD_JTAG"  # the ESP32-S2's name for it
        pad_off = bool(bits(hard)) or (soft is not None and _odd(soft))
        usb = [bits(n, required=False) for n in ("DIS_USB_JTAG", "DIS_USB_SERIAL_JTAG")]
        usb_off = all(v is None for v in usb) or any(v for v in usb)  # no USB JTAG on this chip, or off
        jtag_disabled = pad_off and usb_off
        if bits("DIS_DOWNLOAD_MODE", required=False):
            download = "disabled"
        elif bits("ENABLE_SECURITY_DOWNLOAD", required=False):
            download = "secure"
        else:
            download = "enabled"
        family = "esp32-s/c"
    else:
        raise EfuseError("the eFuse summary has neither ABS_DONE_0 (ESP32) nor SECURE_BOOT_EN "
                         "(ESP32-S2, -S3, -C3 and later): not a summary of a chip the harness knows")
    return ChipSecurity(family, secure_boot, flash_encryption, jtag_disabled, download, release, fuses, protected)


def espefuse_command(port: str, chip: str, out: Path, baud: int | None = None,
                     virtual: Path | None = None) -> list[str]:
    """The espefuse call that writes the JSON summary to `out`. With `virtual`,
    espefuse's own host-test mode: the eFuses kept in that file, no chip."""
    cmd = [sys.executable, "-m", "espefuse", "--chip", chip]
    if virtual is not None:
        cmd += ["--virt", "--path-efuse-file", str(virtual)]
    else:
        cmd += ["--port", port] + (["--baud", str(baud)] if baud else [])
    return cmd + ["summary", "--format", "json", "--file", str(out)]


def read_summary(port: str, chip: str, baud: int | None = None, virtual: Path | None = None) -> dict[str, Any]:
    """Runs espefuse on a real board (it resets the chip into its ROM bootloader
    and, when done, resets it again) and returns the parsed summary."""
    with tempfile.TemporaryDirectory(prefix="sbd-efuse-") as tmp:
        out = Path(tmp) / "efuses.json"
        cmd = espefuse_command(port, chip, out, baud, virtual)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ESPEFUSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise EfuseError(f"espefuse did not finish within {ESPEFUSE_TIMEOUT_S} s: {' '.join(cmd)}") from None
        if proc.returncode != 0 or not out.exists():
            said = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
            raise EfuseError(f"espefuse failed ({proc.returncode}): {' '.join(cmd)}: {' / '.join(said[-3:])} "
                             "(is the port free, and is the ROM's download mode reachable?)")
        return parse_summary(out.read_text())
