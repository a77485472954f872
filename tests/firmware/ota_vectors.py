"""Host side (CPython): the signed update streams the OTA MicroPython tests feed
to the device's Receiver (mptest_ota_power_cuts.py, mptest_ota_refusals.py).

tests/firmware/conftest.py calls write(folder) before it starts MicroPython on
a test file that names this module in a `# host-vectors: ota_vectors` line, and
passes the folder in SBD_MP_VECTORS. Streams are built by the harness's own
release code (sbd_harness.release.ota: build_manifest, encode_manifest, build_stream),
signed by the `cryptography` package: the device's verifier (sbd.p256) checks
signatures it did not make. The keys are fixed, so key IDs and every byte but
the ECDSA signatures are the same from run to run.

What is written:
  vectors.json     the keys (public points, hex) and the releases (version,
                   counter, stream file)
  refusals.jsonl   one refusal case a line (read a line at a time on the
                   device-sized heap): name, stream file, the reason the
                   device must give, whether `sbd ota inspect` refuses it too
  *.sbdota      the streams
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from sbd_harness.release import ota
from sbd_harness.release.bundle import FirmwareBundle

MODEL = ota.MODEL
# Test-only release keys (never used for anything else): fixed scalars, so the
# key IDs do not change between runs.
TRUSTED = 0x5BD0_7E57_0000_0001_C0FF_EE00_1234_5678_9ABC_DEF0_0F1E_2D3C_4B5A_6978_8796_A5B4
ROTATED = 0x5BD0_7E57_0000_0002_C0FF_EE00_1234_5678_9ABC_DEF0_0F1E_2D3C_4B5A_6978_8796_A5B4
STRANGER = 0x5BD0_7E57_0000_0003_C0FF_EE00_1234_5678_9ABC_DEF0_0F1E_2D3C_4B5A_6978_8796_A5B4

# Files of a small release: a nested folder, an empty file, and sizes that put
# file boundaries inside 1024-byte chunks, so every path of Receiver._file_bytes
# and _open_next runs. Small, so that a power cut at every write stays cheap.
SIZES = {"lib/sbd/app.py": 1500, "lib/sbd/config.py": 700, "lib/sbd/empty.py": 0, "lib/data/table.bin": 2100}


def _key(scalar: int) -> ota.ReleaseKey:
    return ota.ReleaseKey(ec.derive_private_key(scalar, ec.SECP256R1()))


def _content(tag: str, size: int) -> bytes:
    out = b""
    block = 0
    while len(out) < size:
        out += hashlib.sha256(f"{tag}:{block}".encode()).digest()
        block += 1
    return out[:size]


def release_files(tag: str) -> dict[str, bytes]:
    return {path: _content(f"{tag}:{path}", size) for path, size in SIZES.items()}


def _bundle(files: dict[str, bytes]) -> FirmwareBundle:
    return FirmwareBundle({"/" + path: data for path, data in files.items()})


def stream(files: dict[str, bytes], version: str, counter: int, key: ota.ReleaseKey, **fields: Any) -> bytes:
    """A stream as `sbd ota build` makes it (every host-side rule applied)."""
    manifest = ota.build_manifest(_bundle(files), version, counter, model=MODEL)
    manifest.update(fields)
    return ota.build_stream(ota.encode_manifest(manifest), key, files)


def signed_raw(key: ota.ReleaseKey, manifest: Any, payload: bytes = b"", body: bytes | None = None) -> bytes:
    """A stream framed and signed by hand, without the host's checks: what a buggy
    tool or the holder of a trusted key could send. The signature is valid."""
    if body is None:
        body = json.dumps(manifest, separators=(",", ":")).encode()
    return ota.MAGIC + len(body).to_bytes(4, "big") + body + key.key_id + key.sign(body) + payload


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def _entry(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def refusal_cases(key: ota.ReleaseKey, stranger: ota.ReleaseKey, rotated: ota.ReleaseKey,
                  rel: dict[str, dict[str, bytes]]) -> list[tuple[str, bytes, str]]:
    """(name, stream, reason) for a device that runs release 2 (counter 2) and
    trusts `key` only. Each is pushed whole: `begin` with the stream's own size."""
    good = stream(rel["3"], "0.3.0", 3, key)
    manifest_bytes, _, _, payload = ota.parse_stream(good)
    head = len(good) - len(payload)          # magic, length, manifest, key ID, signature
    mend = 12 + len(manifest_bytes)          # where the key ID starts
    cases = [
        # the cases of tests/test_ota.py::test_a_bad_update_is_refused_and_the_old_version_keeps_running
        # files go in manifest (path) order: table.bin, app.py, config.py, empty.py
        ("bit-in-file", _flip(good, head + len(payload) // 2), "hash mismatch lib/sbd/app.py"),
        ("bit-in-manifest", _flip(good, 12 + len(manifest_bytes) // 2), "bad signature"),
        ("bit-in-signature", _flip(good, head - 10), "bad signature"),
        ("unknown-key", stream(rel["3"], "0.3.0", 3, stranger), "unknown release key"),
        # the first 72 file bytes take the place of key ID and signature
        ("no-signature", good[:mend] + payload, "unknown release key"),
        ("downgrade", stream(rel["1b"], "0.1.9", 1, key), "rollback: security counter not higher"),
        ("replay-of-current", stream(rel["2"], "0.2.0", 2, key), "rollback: security counter not higher"),
        ("wrong-board", stream(rel["3"], "0.3.0", 3, key, model="sbd-other-device"), "wrong model"),
        ("expired", stream(rel["3"], "0.3.0", 3, key, expires="20250101000000Z"), "expired"),
        ("truncated", good[:-700], "size does not match the manifest"),
        ("larger-than-declared", good + b"\x00" * 100, "size does not match the manifest"),
        ("extra-unlisted-file", good + rel["1"]["lib/sbd/app.py"], "size does not match the manifest"),
        ("mix-and-match", good[:head] + ota.parse_stream(stream(rel["3x"], "0.3.0", 3, key))[3],
         "hash mismatch lib/data/table.bin"),
        # tests/test_ota_host.py's refusals that a device makes
        ("bit-in-key-id", _flip(good, mend + 3), "unknown release key"),
        ("resigned-by-stranger", _spliced(good, key, stranger, rel), "bad signature"),
        ("not-an-update", b"SBDOTA2\n" + good[8:], "not an update"),
        ("manifest-length-over-8192", good[:8] + (8193).to_bytes(4, "big") + good[12:], "manifest too large"),
        ("ends-inside-its-header", good[:mend + 71], "truncated"),
        ("rotation-drops-its-signing-key", _dropping_rotation(key, rotated, rel["3"]),
         "key rotation drops its own signing key"),
    ]
    # Validly signed by the trusted key, but malformed: only the device's
    # field rules (sbd.manifest.check) stand in the way.
    files = rel["3"]
    payload = b"".join(files[p] for p in sorted(files))
    base = {"format": 1, "version": "0.3.0", "security_counter": 3, "model": MODEL,
            "files": [_entry(p, files[p]) for p in sorted(files)], "total_size": len(payload)}

    def malformed(name: str, reason: str, change: dict[str, Any], data: bytes = payload) -> None:
        cases.append((name, signed_raw(key, {**base, **change}, data), reason))

    malformed("unknown-field", "unknown field", {"extra": 1})
    malformed("format-2", "unknown format", {"format": 2})
    malformed("bad-version", "bad version", {"version": "0.3.0-with-a-long-tail"})
    malformed("counter-0", "bad security counter", {"security_counter": 0})
    malformed("counter-2**31", "bad security counter", {"security_counter": 2**31})
    malformed("counter-true", "bad security counter", {"security_counter": True})
    malformed("model-not-text", "bad model", {"model": 7})
    malformed("no-files", "bad file list", {"files": [], "total_size": 0}, b"")
    many = [_entry(f"lib/m{i}.py", b"") for i in range(65)]
    malformed("65-files", "bad file list", {"files": many, "total_size": 0}, b"")
    malformed("total-size-wrong", "total size does not add up", {"total_size": len(payload) + 1})
    malformed("expires-not-asn1", "bad expiry", {"expires": "2027-01-01T00:00:00Z"})
    malformed("release-keys-empty", "bad release keys", {"release_keys": []})
    malformed("release-key-short", "bad release keys", {"release_keys": ["04" + "ab" * 32]})
    upper = [dict(e, sha256=e["sha256"].upper()) for e in base["files"]]
    malformed("upper-case-hash", "bad file entry", {"files": upper})
    extra_key = [dict(base["files"][0], mode=0o644)] + base["files"][1:]
    malformed("file-entry-extra-field", "bad file entry", {"files": extra_key})
    first = sorted(files)[0]
    twice = [_entry(first, files[first]), _entry(first, files[first])]
    malformed("duplicate-path", "duplicate path", {"files": twice, "total_size": 2 * len(files[first])},
              files[first] * 2)
    for name, path in (("path-outside-lib", "boot.py"), ("path-main", "main.py"),
                       ("path-dot-dot", "lib/../boot.py"), ("path-double-slash", "lib/sbd//app.py"),
                       ("path-space", "lib/sbd/app v2.py"), ("path-non-ascii", "lib/sbd/\u00e4pp.py"),
                       ("path-too-long", "lib/" + "x" * 93), ("path-trailing-slash", "lib/sbd/"),
                       ("path-absolute", "/lib/sbd/app.py")):
        malformed(name, "bad path", {"files": [_entry(path, b"x")], "total_size": 1}, b"x")
    cases.append(("manifest-not-json", signed_raw(key, None, b"", body=b"{\"format\": 1,"), "bad json"))
    cases.append(("manifest-not-an-object", signed_raw(key, [1, 2]), "not an object"))
    return cases


def _dropping_rotation(key: ota.ReleaseKey, rotated: ota.ReleaseKey, files: dict[str, bytes]) -> bytes:
    """A rotation to `rotated` alone, signed by `key`: framed by hand, since the host
    refuses to build one (ota.check_rotation), as the device refuses it."""
    manifest = ota.build_manifest(_bundle(files), "0.3.0", 3, model=MODEL, release_keys=[rotated.public_point])
    body = ota.encode_manifest(manifest)
    payload = b"".join(files[f["path"]] for f in manifest["files"])
    return ota.MAGIC + len(body).to_bytes(4, "big") + body + key.key_id + key.sign(body) + payload


def _spliced(good: bytes, key: ota.ReleaseKey, stranger: ota.ReleaseKey, rel: dict[str, dict[str, bytes]]) -> bytes:
    """The attacker's manifest (counter 99, same files) under the trusted key's ID and
    the signature it made over the genuine manifest."""
    forged = stream(rel["3"], "0.3.0", 99, stranger)
    g_end = 12 + int.from_bytes(good[8:12], "big")
    f_end = 12 + int.from_bytes(forged[8:12], "big")
    return forged[:f_end] + good[g_end:g_end + 72] + forged[f_end + 72:]


def write(folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key, rotated, stranger = _key(TRUSTED), _key(ROTATED), _key(STRANGER)
    rel = {tag: release_files(tag) for tag in ("1", "1b", "2", "3")}
    # Another build of release 3: the same paths and sizes, other bytes.
    rel["3x"] = release_files("3x")
    releases = {
        # installed one after the other to make the starting state (slot a: 1, slot b: 2)
        "r1": ("1", stream(rel["1"], "0.1.0", 1, key)),
        "r2": ("2", stream(rel["2"], "0.2.0", 2, key)),
        # the update the power-cut tests install: a key rotation, so that its
        # commit writes the slot record, the counter and the keys
        "r3": ("3", stream(rel["3"], "0.3.0", 3, key,
                           release_keys=[key.public_point.hex(), rotated.public_point.hex()])),
        # the same release without a rotation
        "r3plain": ("3", stream(rel["3"], "0.3.0", 3, key)),
    }
    doc: dict[str, Any] = {
        "keys": {"trusted": key.public_point.hex(), "rotated": rotated.public_point.hex(),
                 "stranger": stranger.public_point.hex()},
        "releases": {},
    }
    for name, (tag, data) in releases.items():
        manifest = ota.verify_stream(data, [key.public_point])  # the host accepts what the device must
        assert ota.split_payload(manifest, ota.parse_stream(data)[3]) == rel[tag]
        (folder / f"{name}.sbdota").write_bytes(data)
        doc["releases"][name] = {"version": manifest["version"], "counter": manifest["security_counter"],
                                 "stream": f"{name}.sbdota"}
    lines = []
    for name, data, reason in refusal_cases(key, stranger, rotated, rel):
        try:
            ota.verify_stream(data, [key.public_point])
            host_refuses = False
        except ota.OTAError:
            host_refuses = True
        (folder / f"bad-{name}.sbdota").write_bytes(data)
        lines.append(json.dumps({"name": name, "stream": f"bad-{name}.sbdota", "reason": reason,
                                 "host_refuses": host_refuses}))
    (folder / "vectors.json").write_text(json.dumps(doc))
    (folder / "refusals.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import sys
    write(Path(sys.argv[1]))
