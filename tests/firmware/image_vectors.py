"""Host side (CPython): a flash chip and the signed whole-firmware updates that
mptest_ota_image.py feeds to the device's Receiver.

The flash is the emulated board's (its partition table, MicroPython's app image in
ota_0, secure version 1, with the eFuse burnt to 1); the updates are real ESP32 app
images made with esptool's image classes (sbd_harness.release.app_image), signed
by the harness's release code (sbd_harness.release.ota) with test-only keys.

What is written:
  flash.bin        the 4 MiB flash image
  efuse            the secure-version eFuse field (4 bytes, little-endian bits)
  vectors.json     the trusted key, the ROM folder, the good update and the refusals
  *.sbdota         the streams
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from sbd_harness.emulator.flash_image import FlashImage, parse_csv
from sbd_harness.paths import boards_dir
from sbd_harness.release import ota
from sbd_harness.release.app_image import AppDescriptor, build_app_image

TRUSTED = 0x5BD0_7E57_0000_0011_C0FF_EE00_1234_5678_9ABC_DEF0_0F1E_2D3C_4B5A_6978_8796_A5B4
STRANGER = 0x5BD0_7E57_0000_0013_C0FF_EE00_1234_5678_9ABC_DEF0_0F1E_2D3C_4B5A_6978_8796_A5B4
ROM = Path(__file__).resolve().parents[2] / "harness" / "sbd_harness" / "emulator" / "rom"
IMAGE_KIB = 400  # more than the device's heap holds at once: the image must stream


def _key(scalar: int) -> ota.ReleaseKey:
    return ota.ReleaseKey(ec.derive_private_key(scalar, ec.SECP256R1()))


def image(project: str, version: str, secure_version: int, kib: int = IMAGE_KIB) -> bytes:
    return build_app_image(AppDescriptor(project, version, secure_version), kib * 1024, version.encode())


def signed(key: ota.ReleaseKey, manifest: dict[str, Any], payload: bytes) -> bytes:
    """Framed and signed by hand, without the host's checks (what a buggy tool or the
    holder of a trusted key could send)."""
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return ota.MAGIC + len(body).to_bytes(4, "big") + body + key.key_id + key.sign(body) + payload


def update(key: ota.ReleaseKey, data: bytes, counter: int, **image_fields: Any) -> bytes:
    manifest = ota.build_image_manifest(data, "0.3.0", counter)
    manifest["image"].update(image_fields)
    return signed(key, manifest, data)


def write(folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = json.loads((boards_dir() / "emulated" / "board.json").read_text())
    parts = parse_csv((boards_dir() / "emulated" / spec["partitions"]).read_text())
    flash = FlashImage.create(folder / "flash.bin", spec["flash_size"], parts, spec["partition_table_offset"])
    flash.write(flash.partition("ota_0").offset, image("micropython", "v1.29.0", 1, 64))
    (folder / "efuse").write_bytes((1).to_bytes(4, "little"))

    key, stranger = _key(TRUSTED), _key(STRANGER)
    good = image("micropython", "v1.29.0-sbd.2", 1)
    streams = {"good": update(key, good, 2)}
    flipped = bytearray(good)
    flipped[200000] ^= 0x01
    manifest = ota.build_image_manifest(good, "0.3.0", 2)
    refusals = [
        ("tampered", signed(key, manifest, bytes(flipped)), "image hash mismatch"),
        ("foreign", update(key, image("hello_world", "v1.0", 1), 2), "foreign image: project hello_world, not micropython"),
        ("downgraded", update(key, image("micropython", "v1.28.0", 0), 3),
         "rollback: secure version below the running app's"),
        ("unknown-key", update(stranger, good, 2), "unknown release key"),
        ("descriptor-differs", update(key, good, 2, version="v1.29.0-sbd.9"),
         "app descriptor does not match the manifest"),
        ("counter-not-higher", update(key, good, 2), "rollback: security counter not higher"),  # floor 2
    ]
    for name, data, _ in refusals:
        streams[name] = data
    for name, data in streams.items():
        (folder / f"{name}.sbdota").write_bytes(data)
    (folder / "vectors.json").write_text(json.dumps({
        "rom": str(ROM), "key": key.public_point.hex(),
        "good_sha256": hashlib.sha256(good).hexdigest(), "good_size": len(good),
        "refusals": [[name, reason] for name, _, reason in refusals],
    }))
