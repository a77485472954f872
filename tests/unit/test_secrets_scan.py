"""no-default-or-shared-secrets finds secrets by what they are, in what the
device runs: the five ways a credential hid from a scan of names (each found
in the source and in the .mpy that ships), a module shipped as .mpy alone, and
no finding on the reference firmware."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from sbd_harness.checks.check_unique_identity import check_no_shared_secrets
from sbd_harness.paths import firmware_dir
from sbd_harness.release.bundle import FirmwareBundle, compile_mpy
from sbd_harness.release.secrets_scan import (ScanError, entropy, looks_random, mpy_strings, scan_files, scan_mpy,
                                              scan_source)

EXAMPLES = {  # each one a credential under a name no name pattern of passwords and PSKs caught
    "master-key": ('MASTER_KEY = b"\\x8f\\x12\\xa9\\x03\\x5c\\xe1\\x77\\x40\\x19\\xbb\\x2d\\x06\\xf4\\x31\\xc8\\x9e"\n',
                   "credential name", "MASTER_KEY"),
    "aes-key": ('AES_KEY = "k3y-0f-th3-fl33t"\n', "credential name", "AES_KEY"),
    "wifi-connect": ('import network\nwlan = network.WLAN(network.STA_IF)\nwlan.connect("net", "Sup3rS3cret!")\n',
                     "credential call", "connect(arg 2)"),
    "dict-pass": ('DEFAULTS = {"user": "root", "pass": "admin"}\n', "default credential", None),
    "login-default": ('def login(pw="admin"):\n    return pw\n', "default credential", None),
}


def _module(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "fleet.py"
    path.write_text(source)
    return path


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_is_found_in_its_source(name):
    source, rule, where = EXAMPLES[name]
    found = scan_source("/lib/fleet.py", source.encode())
    assert any(f.rule == rule and (where is None or f.where == where) for f in found), found


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_example_is_found_in_the_mpy_the_device_runs(tmp_path, name):
    source, rule, where = EXAMPLES[name]
    found = scan_mpy("/lib/fleet.mpy", compile_mpy(_module(tmp_path, source)))
    assert any(f.rule == rule and (where is None or f.where == where) for f in found), found


def _firmware_with(tmp_path: Path, rel: str, data: bytes) -> FirmwareBundle:
    root = tmp_path / "fw"
    shutil.copytree(firmware_dir(), root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / rel).write_bytes(data)
    return FirmwareBundle.from_dir(root)


def _run_check(bundle: FirmwareBundle) -> dict:
    """The check itself, on a board that is neither locked nor read back (nothing to compare but the build)."""
    evidence: dict = {}
    check_no_shared_secrets(sbd_board=SimpleNamespace(name="real", kind="serial"),
                            sbd_boot=SimpleNamespace(boot_line=None), sbd_ca=None, sbd_bundle=bundle,
                            sbd_evidence=evidence)
    return evidence


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_check_fails_on_each_example(tmp_path, name):
    bundle = _firmware_with(tmp_path, "lib/sbd/fleet.py", EXAMPLES[name][0].encode())
    with pytest.raises(AssertionError, match="credentials in the firmware image"):
        _run_check(bundle)


def test_the_check_fails_on_a_module_shipped_only_as_mpy(tmp_path):
    """No source beside it: the constants are read out of the .mpy format."""
    mpy = compile_mpy(_module(tmp_path, EXAMPLES["wifi-connect"][0]))
    bundle = _firmware_with(tmp_path, "lib/sbd/fleet.mpy", mpy)
    assert "/lib/sbd/fleet.mpy" in bundle.files and "/lib/sbd/fleet.py" not in bundle.sources
    with pytest.raises(AssertionError, match=r"fleet\.mpy: credential call: connect\(arg 2\)"):
        _run_check(bundle)


def test_the_reference_firmware_passes_with_no_allowlist():
    bundle = FirmwareBundle.from_dir()
    assert scan_files(bundle.files) == [] and scan_files(bundle.sources) == []
    evidence = _run_check(bundle)
    assert evidence["literal_credentials"] == [] and evidence["files_scanned"] >= len(bundle.files)


def test_the_mpy_reader_sees_every_string_constant_of_the_reference():
    """Each string literal of a module's source is among the constants read from its .mpy."""
    bundle = FirmwareBundle.from_dir()
    source = bundle.sources["/lib/sbd/config.py"].decode()
    strings = {s.value for s in mpy_strings("/lib/sbd/config.mpy", bundle.files["/lib/sbd/config.mpy"])}
    for literal in ("abcdefghijklmnopqrstuvwxyz0123456789.-", "broker_host", "ntp_host"):
        assert literal in source and literal in strings


@pytest.mark.parametrize("value, random", [
    ("8c1d2e9a7f3b4c5d6e7f8091a2b3c4d5", True),       # 32 hex digits: a key
    ("q7Z!x9@Lm2#Vb8$Kp4", True),                      # a generated password
    (b"\x8f\x12\xa9\x03\x5c\xe1\x77\x40\x19\xbb\x2d\x06\xf4\x31\xc8\x9e", True),
    ("the broker refused the connection", False),     # words
    ("abcdefghijklmnopqrstuvwxyz0123456789.-", False),  # an alphabet
    ('{"format":"%s","device_id":"%s"}', False),      # a template
    ("https://docs.example.com/security", False),     # a URL without query
    ("short1!A", False),
])
def test_random_looking_literals(value, random):
    assert looks_random(value) is random


def test_entropy():
    assert entropy("aaaa") == 0 and entropy("abcd") == 2.0


def test_a_file_that_is_not_mpy_is_a_clear_error():
    with pytest.raises(ScanError, match="not a .mpy file of format 6"):
        mpy_strings("/x.mpy", b"M\x05\x00\x1f")
    with pytest.raises(ScanError, match="truncated"):
        mpy_strings("/x.mpy", b"M\x06\x00\x1f\x05")


def test_a_secret_found_is_not_repeated_in_the_report():
    """The finding goes to the report, the CI log and JUnit: it names where and how long, never the secret."""
    found = scan_source("/lib/fleet.py", EXAMPLES["wifi-connect"][0].encode())
    shown = " ".join(str(f) for f in found)
    assert "Sup3rS3cret!" not in shown and "S3cret" not in shown
    assert "12 characters" in shown


def test_a_products_own_model_is_no_secret_however_random_it_looks(tmp_path):
    """docs/product.md's example model, acme-thermo-esp32, looks random to rule 4 (17 characters, 3.57 bits
    each); the device announces it on its boot line, so the check leaves the build's own identity out,
    and only that: the same literal elsewhere in another build is still a finding."""
    from product_fixture import MODEL, build_product
    assert looks_random(MODEL)
    bundle = FirmwareBundle.from_dir(build_product(tmp_path / "acme").firmware)
    assert [f.rule for f in scan_files(bundle.files)] == ["random-looking"]  # the scan alone flags it
    assert scan_files(bundle.files, public=[MODEL]) == [] and scan_files(bundle.sources, public=[MODEL]) == []
    assert _run_check(bundle)["literal_credentials"] == []
    other = _firmware_with(tmp_path / "other", "lib/sbd/fleet.py", f'TOKEN_ID = "{MODEL}"\n'.encode())
    with pytest.raises(AssertionError, match="random-looking"):
        _run_check(other)


def test_a_cipher_suite_name_is_not_a_secret_but_a_key_beside_it_is():
    from sbd_harness.release.secrets_scan import looks_random
    assert not looks_random("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256")
    assert not looks_random("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
    assert looks_random("TLS-9fQ2xLr7Vb0KpZ3mWc8TnY4a")  # a token that merely starts like one
