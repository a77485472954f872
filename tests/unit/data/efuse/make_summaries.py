"""Writes the eFuse summaries beside this file with espefuse itself (esptool's
virtual eFuses: `espefuse --chip C --virt --path-efuse-file F`), so that each
is what `espefuse summary --format json` prints for a chip in that state.

Run from the repository: `.venv/bin/python tests/unit/data/efuse/make_summaries.py`.
README.md says which burns make which state, and why.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# What ESP-IDF burns in release mode (bootloader_support, esp_flash_encryption_set_release_mode and
# secure boot), per chip family: (eFuse, value) burned, eFuses write-protected afterwards.
RELEASE: dict[str, tuple[list[tuple[str, str]], list[str]]] = {
    "esp32": ([("ABS_DONE_1", "1"), ("FLASH_CRYPT_CNT", "1"), ("JTAG_DISABLE", "1"), ("DISABLE_DL_ENCRYPT", "1"),
               ("DISABLE_DL_DECRYPT", "1"), ("DISABLE_DL_CACHE", "1"), ("CONSOLE_DEBUG_DISABLE", "1")],
              ["FLASH_CRYPT_CNT"]),
    "esp32s3": ([("SECURE_BOOT_EN", "1"), ("SPI_BOOT_CRYPT_CNT", "7"), ("DIS_PAD_JTAG", "1"), ("DIS_USB_JTAG", "1"),
                 ("SOFT_DIS_JTAG", "7"), ("DIS_DOWNLOAD_MANUAL_ENCRYPT", "1"), ("DIS_DOWNLOAD_ICACHE", "1"),
                 ("DIS_DOWNLOAD_DCACHE", "1"), ("ENABLE_SECURITY_DOWNLOAD", "1")],
                ["SPI_BOOT_CRYPT_CNT"]),
    "esp32c3": ([("SECURE_BOOT_EN", "1"), ("SPI_BOOT_CRYPT_CNT", "7"), ("DIS_PAD_JTAG", "1"), ("DIS_USB_JTAG", "1"),
                 ("SOFT_DIS_JTAG", "7"), ("DIS_DOWNLOAD_MANUAL_ENCRYPT", "1"), ("DIS_DOWNLOAD_ICACHE", "1"),
                 ("ENABLE_SECURITY_DOWNLOAD", "1")],
                ["SPI_BOOT_CRYPT_CNT"]),
}
DOWNLOAD = {"DISABLE_DL_ENCRYPT", "DISABLE_DL_DECRYPT", "DISABLE_DL_CACHE", "DIS_DOWNLOAD_MANUAL_ENCRYPT",
            "DIS_DOWNLOAD_ICACHE", "DIS_DOWNLOAD_DCACHE", "ENABLE_SECURITY_DOWNLOAD"}
JTAG = {"JTAG_DISABLE", "DIS_PAD_JTAG", "DIS_USB_JTAG", "SOFT_DIS_JTAG"}


def states(chip: str) -> dict[str, tuple[list[tuple[str, str]], list[str]]]:
    """Release mode, and release mode with exactly one practice left out."""
    burn, protect = RELEASE[chip]
    cnt = "FLASH_CRYPT_CNT" if chip == "esp32" else "SPI_BOOT_CRYPT_CNT"
    return {
        "blank": ([], []),
        "release": (burn, protect),
        # ESP-IDF's development mode: the counter has one bit set and can still be burned further
        "dev-encryption": ([(n, "1" if n == cnt else v) for n, v in burn], []),
        "download-open": ([(n, v) for n, v in burn if n not in DOWNLOAD], protect),
        "jtag-open": ([(n, v) for n, v in burn if n not in JTAG], protect),
    }


def espefuse(chip: str, efuses: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "espefuse", "--chip", chip, "--virt", "--path-efuse-file", str(efuses), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")


def main() -> None:
    for chip in RELEASE:
        for state, (burn, protect) in states(chip).items():
            with tempfile.TemporaryDirectory() as tmp:
                efuses = Path(tmp) / "efuses.bin"
                espefuse(chip, efuses, "summary")  # a blank chip
                if burn:
                    espefuse(chip, efuses, "--do-not-confirm", "burn-efuse", *[x for pair in burn for x in pair])
                if protect:
                    espefuse(chip, efuses, "--do-not-confirm", "write-protect-efuse", *protect)
                out = HERE / f"{chip}-{state}.json"
                espefuse(chip, efuses, "summary", "--format", "json", "--file", str(out))
                json.loads(out.read_text())
                print(out.name)


if __name__ == "__main__":
    main()
