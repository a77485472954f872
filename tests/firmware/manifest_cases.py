"""Host side (CPython): the manifest field rules of docs/ota.md ("The manifest")
as test cases, one table for both sides. tests/unit/test_ota_host.py checks the
host's rules (sbd_harness.release.ota.parse_manifest) against it, and
tests/firmware/mptest_manifest.py, through write() (`# mptest-vectors:
manifest_cases`), the device's (sbd.manifest.parse): the same bytes must be
accepted by both or refused by both.

Each case changes one field of a valid manifest. `reason` is the device's
reason for refusing it (the host words its own), None where both must accept
it. The cases are where the two sides differed before the rules were written
down once (the comment says which side was lax), and their neighbours, which
show where the line is.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from sbd_harness.identity.pki import public_point

MODEL = "sbd-reference-esp32"
BASE: dict[str, Any] = {
    "format": 1, "version": "0.2.0", "security_counter": 2, "model": MODEL,
    "files": [{"path": "lib/a.mpy", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}],
    "total_size": 0,
}


def _point(scalar: int) -> str:
    """A test-only public key (a fixed scalar), as the manifest writes it."""
    return public_point(ec.derive_private_key(scalar, ec.SECP256R1()).public_key()).hex()


ABSENT: Any = object()  # a field the case leaves out
IMAGE: dict[str, Any] = {"size": 1048576, "sha256": "ab" * 32, "project": "micropython",
                         "version": "v1.29.0-sbd.2", "secure_version": 2}


def _image(**change: Any) -> dict[str, Any]:
    """A whole-firmware update's fields: the image instead of files, total_size its size."""
    image = {**IMAGE, **change}
    size = image["size"] if isinstance(image["size"], int) else 0
    return {"files": ABSENT, "image": image, "total_size": size}


def cases() -> list[tuple[str, dict[str, Any], str | None]]:
    """(name, the fields changed, the device's reason or None)."""
    k1, k2 = _point(0x5BD1), _point(0x5BD2)
    nine = [_point(0x5BD0 + i) for i in range(9)]
    bad_expiry = "bad expiry"
    bad_keys = "bad release keys"
    return [
        # expires: absent, or "YYYYMMDDHHMMSSZ" naming a real UTC time
        ("expires-valid", {"expires": "20271231235959Z"}, None),
        ("expires-leap-day", {"expires": "20280229000000Z"}, None),
        ("expires-leap-day-2000", {"expires": "20000229120000Z"}, None),
        ("expires-null", {"expires": None}, bad_expiry),                   # the device took null for absent
        ("expires-lower-case-z", {"expires": "20270101000000z"}, bad_expiry),  # the host took it
        ("expires-fullwidth-digits", {"expires": "\uff12\uff10\uff12\uff17" + "0101000000Z"}, bad_expiry),  # host
        ("expires-letter-o", {"expires": "2027O101000000Z"}, bad_expiry),  # the device took any 15 characters
        ("expires-dashes", {"expires": "2027-01-01T000Z"}, bad_expiry),   # device
        ("expires-month-13", {"expires": "20271301000000Z"}, bad_expiry),  # device
        ("expires-month-0", {"expires": "20270001000000Z"}, bad_expiry),   # device
        ("expires-day-0", {"expires": "20270100000000Z"}, bad_expiry),     # device
        ("expires-april-31", {"expires": "20270431000000Z"}, bad_expiry),  # device
        ("expires-february-29-2027", {"expires": "20270229000000Z"}, bad_expiry),  # device
        ("expires-february-29-1900", {"expires": "19000229000000Z"}, bad_expiry),  # device
        ("expires-hour-24", {"expires": "20270101240000Z"}, bad_expiry),   # device
        ("expires-minute-60", {"expires": "20270101006000Z"}, bad_expiry),  # device
        ("expires-second-60", {"expires": "20270101000060Z"}, bad_expiry),  # device
        ("expires-year-0", {"expires": "00000101000000Z"}, bad_expiry),    # device
        ("expires-14-characters", {"expires": "2027010100000Z"}, bad_expiry),
        ("expires-a-number", {"expires": 20270101000000}, bad_expiry),
        # release_keys: absent, or 1 to 8 distinct P-256 points, uncompressed, lower-case hex
        ("release-keys-valid", {"release_keys": [k1, k2]}, None),
        ("release-keys-eight", {"release_keys": nine[:8]}, None),
        ("release-keys-null", {"release_keys": None}, bad_keys),          # the device took null for absent
        ("release-key-off-the-curve", {"release_keys": ["04" + "ab" * 64]}, bad_keys),  # device
        ("release-key-x-above-p", {"release_keys": ["04" + "ff" * 64]}, bad_keys),      # device
        ("release-key-twice", {"release_keys": [k1, k1]}, bad_keys),       # device
        ("release-keys-nine", {"release_keys": nine}, bad_keys),
        ("release-keys-empty", {"release_keys": []}, bad_keys),
        ("release-key-upper-case", {"release_keys": ["04" + k1[2:].upper()]}, bad_keys),
        ("release-key-compressed", {"release_keys": ["02" + k1[2:66]]}, bad_keys),
        ("release-key-bytes-as-list", {"release_keys": [[4, 1, 2]]}, bad_keys),
        # the other fields, where the two sides differed too
        ("format-true", {"format": True}, "unknown format"),              # device (true == 1)
        ("format-1.0", {"format": 1.0}, "unknown format"),                # both took it
        ("version-sixteen", {"version": "v" * 16}, None),
        ("version-newline", {"version": "0.2\n"}, "bad version"),         # device
        ("version-non-ascii", {"version": "0.2\u00e4"}, "bad version"),   # device
        ("model-empty", {"model": ""}, "bad model"),                      # device
        ("total-size-false", {"total_size": False}, "total size does not add up"),  # device (false == 0)
        ("total-size-0.0", {"total_size": 0.0}, "total size does not add up"),      # device
        # image: a whole-firmware update, instead of files
        ("image-valid", _image(), None),
        ("image-secure-version-0", _image(secure_version=0), None),
        ("image-secure-version-32", _image(secure_version=32), None),
        ("image-secure-version-33", _image(secure_version=33), "bad image"),
        ("image-secure-version-negative", _image(secure_version=-1), "bad image"),
        ("image-secure-version-true", _image(secure_version=True), "bad image"),
        ("image-version-31", _image(version="v" * 31), None),
        ("image-version-32", _image(version="v" * 32), "bad image"),
        ("image-project-empty", _image(project=""), "bad image"),
        ("image-project-newline", _image(project="micro\npython"), "bad image"),
        ("image-sha256-upper-case", _image(sha256="AB" * 32), "bad image"),
        ("image-size-under-a-descriptor", _image(size=255), "bad image"),
        ("image-size-float", _image(size=4096.0), "bad image"),
        ("image-field-missing", {"files": ABSENT, "total_size": 4096,
                                 "image": {k: v for k, v in IMAGE.items() if k != "project"}}, "bad image"),
        ("image-field-extra", _image(entry=0), "bad image"),
        ("image-null", {"files": ABSENT, "image": None}, "bad image"),
        ("image-and-files", {"image": IMAGE}, "files or image, not both"),
        ("image-total-size-differs", {**_image(), "total_size": 4096}, "total size does not add up"),
        ("neither-files-nor-image", {"files": ABSENT}, "bad file list"),
        ("image-with-a-rotation", {**_image(), "release_keys": [k1]}, None),
        ("image-bad-expiry", {**_image(), "expires": "2027"}, bad_expiry),
    ]


def manifest_bytes(change: dict[str, Any]) -> bytes:
    """The manifest as a device receives it: compact JSON, non-ASCII escaped."""
    fields = {k: v for k, v in {**BASE, **change}.items() if v is not ABSENT}
    return json.dumps(fields, separators=(",", ":")).encode()


def write(folder: Path) -> None:
    """manifest_cases.jsonl: one case a line (name, manifest text, reason)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"name": name, "manifest": manifest_bytes(change).decode(), "reason": reason})
             for name, change, reason in cases()]
    (folder / "manifest_cases.jsonl").write_text("\n".join(lines) + "\n")
