"""ESP32 app images: made with esptool's own image classes, read back with them.

A whole-firmware update carries an app image as ESP-IDF's build writes it
(`esptool elf2image`): the 24-byte header, segments, the checksum byte and the
appended SHA-256, with the app descriptor (`esp_app_desc_t`) at the start of
the first (DROM) segment. The emulated board's bootloader
(`emulator/rom/_idfboot.py`) checks the same bytes the chip's would.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, replace

from esptool.bin_image import ELFSection, ESP32FirmwareImage, LoadFirmwareImage

from sbd_harness.errors import SbdError

APP_DESC_MAGIC = 0xABCD5432
APP_DESC_OFFSET = 0x20  # header (24) + first segment header (8)
DROM_ADDR = 0x3F400020  # where ESP-IDF's linker puts .flash.appdesc on the ESP32
IROM_ADDR = 0x400D0020
DRAM_ADDR = 0x3FFB0000
ENTRY_ADDR = 0x40080400
MICROPYTHON_VERSION = "v1.29.0-preview"  # what the pinned unix port reports (docs/emulated-board.md)
IDF_VERSION = "v5.4.2"


class AppImageError(SbdError, ValueError):
    pass


@dataclass(frozen=True)
class AppDescriptor:
    """The fields of esp_app_desc_t that a release names."""

    project_name: str
    version: str
    secure_version: int
    idf_ver: str = IDF_VERSION
    date: str = "Jan  1 2026"
    time: str = "00:00:00"
    app_elf_sha256: bytes = b"\0" * 32

    def pack(self) -> bytes:
        """The 256-byte esp_app_desc_t (esp_app_format/include/esp_app_desc.h)."""
        def text(value: str, size: int) -> bytes:
            raw = value.encode()
            if len(raw) >= size:
                raise AppImageError(f"{value!r} does not fit esp_app_desc_t ({size - 1} bytes at most)")
            return raw.ljust(size, b"\0")
        return (struct.pack("<II8x", APP_DESC_MAGIC, self.secure_version) + text(self.version, 32)
                + text(self.project_name, 32) + text(self.time, 16) + text(self.date, 16)
                + text(self.idf_ver, 32) + self.app_elf_sha256 + b"\0" * 80)

    @classmethod
    def unpack(cls, raw: bytes) -> "AppDescriptor":
        magic, secure_version = struct.unpack("<II", raw[:8])
        if magic != APP_DESC_MAGIC:
            raise AppImageError("no app descriptor (esp_app_desc_t magic 0xABCD5432) at the first segment")

        def text(a: int, b: int) -> str:
            return raw[a:b].split(b"\0")[0].decode(errors="replace")
        return cls(project_name=text(48, 80), version=text(16, 48), secure_version=secure_version,
                   time=text(80, 96), date=text(96, 112), idf_ver=text(112, 144), app_elf_sha256=raw[144:176])

    def as_dict(self) -> dict[str, object]:
        return {"project_name": self.project_name, "version": self.version,
                "secure_version": self.secure_version, "idf_ver": self.idf_ver,
                "date": self.date, "time": self.time, "app_elf_sha256": self.app_elf_sha256.hex()}


def build_app_image(desc: AppDescriptor, size: int = 64 * 1024, seed: bytes = b"") -> bytes:
    """A real ESP32 app image of about `size` bytes: DROM segment with the descriptor,
    an IROM segment of code-like bytes, a DRAM segment; checksum and SHA-256 appended.
    The bytes are derived from the descriptor and `seed`, so two releases differ."""
    def filler(n: int, tag: bytes) -> bytes:
        out = bytearray()
        block = hashlib.sha256(tag + desc.pack() + seed).digest()
        while len(out) < n:
            out += block
            block = hashlib.sha256(block).digest()
        return bytes(out[:n])
    if desc.app_elf_sha256 == b"\0" * 32:  # as if from an ELF: a digest of what the image holds
        desc = replace(desc, app_elf_sha256=hashlib.sha256(b"elf" + desc.pack() + seed).digest())
    body = max(size - 4096, 1024) & ~3
    image = ESP32FirmwareImage()
    image.entrypoint = ENTRY_ADDR
    image.flash_mode = 2  # DIO
    image.flash_size_freq = 0x20  # 4 MB, 40 MHz
    image.segments = [
        ELFSection(b".flash.appdesc", DROM_ADDR, desc.pack() + filler(1024, b"rodata"), 0),
        ELFSection(b".flash.text", IROM_ADDR, filler(body, b"text"), 0),
        ELFSection(b".dram0.data", DRAM_ADDR, filler(512, b"data"), 0),
    ]
    data = image.save(None)
    if not isinstance(data, bytes) or data[APP_DESC_OFFSET:APP_DESC_OFFSET + 4] != struct.pack("<I", APP_DESC_MAGIC):
        raise AppImageError("esptool did not place the app descriptor at 0x20")
    return data


@dataclass(frozen=True)
class AppImage:
    """An app image as esptool reads it, with its descriptor and digest."""

    data: bytes
    descriptor: AppDescriptor
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


def read_app_image(data: bytes) -> AppImage:
    """Parses and checks an image with esptool (header, segments, checksum, appended
    SHA-256) and reads its app descriptor; AppImageError says what is wrong."""
    if data[:1] != b"\xe9":
        raise AppImageError("not an ESP app image (magic 0xE9): an official MicroPython .bin "
                            "holds the bootloader first; take the app part at its offset (0x10000)")
    try:
        image = LoadFirmwareImage("esp32", data)
    except Exception as exc:  # esptool raises FatalError and struct errors alike
        raise AppImageError(f"not a valid ESP32 app image: {exc}") from exc
    if image.chip_id != 0:
        raise AppImageError(f"not an ESP32 image (chip id {image.chip_id})")
    if image.checksum != image.calculate_checksum():
        raise AppImageError("app image checksum is wrong")
    if not getattr(image, "append_digest", False) or image.stored_digest != image.calc_digest:
        raise AppImageError("app image has no valid appended SHA-256")
    length = image.data_length + 32
    if length != len(data):
        raise AppImageError(f"{len(data) - length} bytes after the image's end")
    desc = AppDescriptor.unpack(data[APP_DESC_OFFSET:APP_DESC_OFFSET + 256])
    return AppImage(data=data, descriptor=desc, sha256=hashlib.sha256(data).hexdigest())


APP_OFFSET_IN_MERGED_BIN = 0x10000 - 0x1000  # the ESP32 bootloader is written at 0x1000, the app at 0x10000


def app_part(data: bytes) -> bytes:
    """The app image itself: `data` when it is one; else the app part of a merged .bin as
    MicroPython publishes it for the ESP32 (bootloader at 0x1000, app at 0x10000), cut at
    the image's end."""
    desc_magic = struct.pack("<I", APP_DESC_MAGIC)
    if data[:1] == b"\xe9" and data[APP_DESC_OFFSET:APP_DESC_OFFSET + 4] == desc_magic:
        return data
    app = data[APP_OFFSET_IN_MERGED_BIN:]
    if data[:1] == b"\xe9" and app[:1] == b"\xe9" and app[APP_DESC_OFFSET:APP_DESC_OFFSET + 4] == desc_magic:
        try:
            image = LoadFirmwareImage("esp32", app)
        except Exception as exc:
            raise AppImageError(f"the app part at 0x10000 is not a valid image: {exc}") from exc
        return app[:image.data_length + 32]
    raise AppImageError("neither an ESP32 app image nor a merged .bin with the app at 0x10000")


def micropython_image() -> bytes:
    """The emulated board's MicroPython, as the app image in ota_0 of a new board
    (the interpreter that runs is the host's unix port; this is what the chip would hold)."""
    return build_app_image(AppDescriptor(project_name="micropython", version=MICROPYTHON_VERSION,
                                         secure_version=0), 64 * 1024, b"micropython")
