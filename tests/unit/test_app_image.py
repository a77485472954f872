"""Whole-firmware updates on the host: app images made and read with esptool's image classes,
their manifest and stream, and `sbd ota build --image` / `sbd ota inspect`."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sbd_harness.release import ota
from sbd_harness.release.app_image import (APP_OFFSET_IN_MERGED_BIN, AppDescriptor, AppImageError, app_part,
                                           build_app_image, read_app_image)

DESC = AppDescriptor("micropython", "v1.29.0-sbd.2", 2)


@pytest.fixture(scope="module")
def image() -> bytes:
    return build_app_image(DESC, 96 * 1024, b"test")


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> ota.ReleaseKey:
    return ota.ReleaseKey.generate(tmp_path_factory.mktemp("key") / "release-key.pem")


def test_an_image_made_with_esptool_reads_back_with_its_descriptor(image):
    parsed = read_app_image(image)
    assert parsed.descriptor.project_name == "micropython" and parsed.descriptor.version == "v1.29.0-sbd.2"
    assert parsed.descriptor.secure_version == 2 and parsed.descriptor.idf_ver.startswith("v5.")
    assert parsed.sha256 == hashlib.sha256(image).hexdigest() and parsed.size == len(image) >= 96 * 1024
    assert image[0] == 0xE9 and image[0x20:0x24] == bytes.fromhex("3254cdab")


@pytest.mark.parametrize("damage, message", [
    (lambda d: d + b"\xff" * 16, "bytes after the image's end"),
    (lambda d: d[:-40], "not a valid ESP32 app image"),
    (lambda d: d[:5000] + bytes([d[5000] ^ 1]) + d[5001:], "checksum"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "appended SHA-256"),
    (lambda d: d[:0x20] + b"\0\0\0\0" + d[0x24:], "appended SHA-256"),  # the magic's bytes XOR to 0
    (lambda d: b"\x00" + d[1:], "not an ESP app image"),
])
def test_a_damaged_image_is_refused(image, damage, message):
    with pytest.raises(AppImageError, match=message):
        read_app_image(damage(image))


def test_the_app_part_of_a_merged_micropython_bin_is_taken(image):
    # what the merged .bin holds at its start: the bootloader's image (magic 0xE9, no app descriptor)
    bootloader = b"\xe9\x03\x02\x20" + bytes(0x1C) + b"\x50\x00\x00\x00" + bytes(8192)
    merged = bootloader.ljust(APP_OFFSET_IN_MERGED_BIN, b"\xff") + image + b"\xff" * 4096
    assert app_part(merged) == image
    assert app_part(image) == image
    with pytest.raises(AppImageError):
        app_part(bootloader)


def test_the_manifest_comes_from_the_image_and_the_stream_verifies(image, key):
    manifest = ota.build_image_manifest(image, "0.3.0", 7)
    assert manifest["image"] == {"size": len(image), "sha256": hashlib.sha256(image).hexdigest(),
                                 "project": "micropython", "version": "v1.29.0-sbd.2", "secure_version": 2}
    assert manifest["total_size"] == len(image) and "files" not in manifest
    stream = ota.build_stream(ota.encode_manifest(manifest), key, {"image": image})
    assert ota.verify_stream(stream, [key.public_point]) == manifest
    assert ota.split_payload(manifest, ota.parse_stream(stream)[3]) == {"image": image}
    with pytest.raises(ota.OTAError, match="not the one the manifest lists"):
        ota.build_stream(ota.encode_manifest(manifest), key, {"image": image[:-1] + b"\0"})
    tampered = stream[:-100] + bytes([stream[-100] ^ 1]) + stream[-99:]
    with pytest.raises(ota.OTAError, match="hash mismatch"):
        ota.verify_stream(tampered, [key.public_point])


def test_the_host_tells_the_device_an_image_is_coming(image, key):
    stream = ota.build_stream(ota.encode_manifest(ota.build_image_manifest(image, "0.3.0", 7)), key,
                              {"image": image})
    assert ota._is_image_update(stream)
    assert not ota._is_image_update(b"SBDOTA1\n" + (2).to_bytes(4, "big") + b"{}" + bytes(72))


def sbd(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SBD_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "sbd_harness", "ota", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_builds_an_image_update_and_inspect_shows_its_app_descriptor(image, tmp_path):
    assert sbd(tmp_path, "keygen").returncode == 0
    (tmp_path / "app.bin").write_bytes(image)
    out = tmp_path / "u.sbdota"
    built = sbd(tmp_path, "build", "--image", str(tmp_path / "app.bin"), "--version", "0.3.0", "--counter", "4",
                "--out", str(out))
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["image"]["version"] == "v1.29.0-sbd.2" and report["counter"] == 4
    sbom = json.loads(Path(report["sbom"]).read_text())
    assert sbom["metadata"]["component"]["name"] == "micropython"
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == hashlib.sha256(image).hexdigest()
    inspected = sbd(tmp_path, "inspect", str(out))
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    shown = json.loads(inspected.stdout)
    assert shown["verified"] and shown["app_descriptor"]["version"] == "v1.29.0-sbd.2"
    assert shown["app_descriptor"]["secure_version"] == 2
    (tmp_path / "bad.bin").write_bytes(image[:-1])
    refused = sbd(tmp_path, "build", "--image", str(tmp_path / "bad.bin"), "--version", "0.3.0", "--counter", "4",
                  "--out", str(tmp_path / "bad.sbdota"))
    assert refused.returncode != 0 and not (tmp_path / "bad.sbdota").exists()
    assert "app image" in refused.stderr or "image" in refused.stderr
