"""Signed updates on the host (sbd_harness.release.ota, `sbd ota`): the stream a
release produces verifies, and every kind of tampering a device must refuse
is refused on the host too; the MQTT push against a simulated device. No
boards: fast."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sbd_harness.release import ota
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.ota import OTAError, ReleaseKey
from sbd_harness.paths import firmware_dir
from sbd_harness.lab.watch import Message

SIG_END = 8 + 4  # + manifest length + 8 + 64


# fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle() -> FirmwareBundle:
    return FirmwareBundle.from_dir()


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory) -> FirmwareBundle:
    """Another build: the same firmware with a same-length version, so sizes match and only hashes differ."""
    root = tmp_path_factory.mktemp("fw") / "firmware"
    shutil.copytree(firmware_dir(), root, ignore=shutil.ignore_patterns("__pycache__"))
    version = root / "lib" / "sbd" / "version.py"
    src = version.read_text()
    old = ota_version(src)
    new = "".join("9" if c.isdigit() else c for c in old)
    assert new != old
    version.write_text(src.replace(f'VERSION = "{old}"', f'VERSION = "{new}"'))
    return FirmwareBundle.from_dir(root)


def ota_version(src: str) -> str:
    from sbd_harness.release.bundle import VERSION_RE
    m = VERSION_RE.search(src)
    assert m
    return m.group(1)


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> ReleaseKey:
    return ReleaseKey.generate(tmp_path_factory.mktemp("rk") / "release-key.pem")


@pytest.fixture(scope="module")
def stream(bundle, key) -> bytes:
    manifest = ota.build_manifest(bundle, "0.2.0", 2)
    return ota.build_stream(ota.encode_manifest(manifest), key, bundle.files)


def manifest_end(data: bytes) -> int:
    return SIG_END + int.from_bytes(data[8:12], "big")


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def signed_raw(key: ReleaseKey, manifest: dict[str, Any], payload: bytes = b"") -> bytes:
    """A stream framed and signed by hand, with no build-time checks: what an attacker
    holding a key (or a buggy tool) could send."""
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return ota.MAGIC + len(body).to_bytes(4, "big") + body + key.key_id + key.sign(body) + payload


# the release key -------------------------------------------------------------------------
def test_release_key_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "k" / "release.pem"
    key = ReleaseKey.generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(OTAError, match="refusing to overwrite"):
        ReleaseKey.generate(path)
    assert path.read_bytes() == before
    again = ReleaseKey.load(path)
    assert again.public_point == key.public_point and len(key.public_point) == 65 and key.public_point[0] == 4
    assert key.key_id == hashlib.sha256(key.public_point).digest()[:8]
    with pytest.raises(OTAError, match="no release key"):
        ReleaseKey.load(tmp_path / "missing.pem")
    assert sorted(p.name for p in path.parent.iterdir()) == ["release.pem"]  # nothing left beside it


def test_the_lab_release_key_is_made_once_on_first_use_even_by_runs_at_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    path = tmp_path / "release" / "release-key.pem"
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: ota.lab_release_key(path), range(8)))
    assert sum(made for _, made in got) == 1
    assert {key.public_point for key, _ in got} == {ReleaseKey.load(path).public_point}
    key, made = ota.lab_release_key(path)
    assert not made and key.public_point == got[0][0].public_point
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_signature_is_raw_r_s_over_sha256(key):
    sig = key.sign(b"manifest")
    assert len(sig) == 64
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.public_point)
    pub.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
               b"manifest", ec.ECDSA(hashes.SHA256()))
    assert ota.verify_signature(key.public_point, b"manifest", sig)
    assert not ota.verify_signature(key.public_point, b"manifesT", sig)


def test_default_key_lives_in_the_state_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SBD_STATE_DIR", str(tmp_path))
    assert ota.default_release_key_path() == tmp_path / "release" / "release-key.pem"


# manifest and stream -----------------------------------------------------------------------
def test_round_trip(bundle, key, stream):
    manifest_bytes, kid, sig, payload = ota.parse_stream(stream)
    assert stream.startswith(b"SBDOTA1\n") and kid == key.key_id and len(sig) == 64
    assert ota.encode_manifest(json.loads(manifest_bytes)) == manifest_bytes  # compact, sorted: as signed
    manifest = ota.verify_stream(stream, [key.public_point])
    paths = [f["path"] for f in manifest["files"]]
    assert paths == sorted(paths) and all(p.startswith("lib/") for p in paths)
    lib = {p[1:]: d for p, d in bundle.files.items() if p.startswith("/lib/")}
    assert set(paths) == set(lib), "every /lib file, and nothing else (boot.py, main.py stay factory)"
    assert manifest["total_size"] == len(payload) == sum(len(d) for d in lib.values())
    assert ota.split_payload(manifest, payload) == lib
    assert manifest["format"] == 1 and manifest["model"] == "sbd-reference-esp32"
    assert "expires" not in manifest and "release_keys" not in manifest


def test_expiry_and_rotation_fields(bundle, key, tmp_path):
    new = ReleaseKey.generate(tmp_path / "new.pem")
    manifest = ota.build_manifest(bundle, "0.3.0", 3, expires=1798761600,
                                  release_keys=[new.public_point, key.public_point])
    assert manifest["expires"] == "20270101000000Z"
    assert manifest["release_keys"] == [new.public_point.hex(), key.public_point.hex()]
    data = ota.build_stream(ota.encode_manifest(manifest), key, bundle.files)
    assert ota.verify_stream(data, [key.public_point])["release_keys"][0] == new.public_point.hex()
    with pytest.raises(OTAError, match="point on P-256"):
        ota.build_manifest(bundle, "0.3.0", 3, release_keys=[b"\x04" + b"\x01" * 64])
    with pytest.raises(OTAError, match="uncompressed"):
        ota.build_manifest(bundle, "0.3.0", 3, release_keys=[new.public_point[:33]])


@pytest.mark.parametrize("where", ["file", "manifest", "signature", "key id", "length"])
def test_a_flipped_bit_is_refused(stream, key, where):
    end = manifest_end(stream)
    at = {"file": len(stream) - 100, "manifest": SIG_END + 20, "signature": end + 8 + 40,
          "key id": end + 3, "length": 11}[where]
    expected = {"file": "hash mismatch", "manifest": "bad signature", "signature": "bad signature",
                "key id": "unknown release key", "length": "unknown release key|bad signature|ends inside"}[where]
    with pytest.raises(OTAError, match=expected):
        ota.verify_stream(flip(stream, at), [key.public_point])


def test_unknown_key_is_refused(stream, tmp_path):
    stranger = ReleaseKey.generate(tmp_path / "stranger.pem")
    with pytest.raises(OTAError, match="unknown release key"):
        ota.verify_stream(stream, [stranger.public_point])
    with pytest.raises(OTAError, match="unknown release key"):
        ota.verify_stream(stream, [])


def test_resigned_by_another_key_is_refused(bundle, stream, key, tmp_path):
    """An attacker's own key, signing a manifest with a higher counter over the same files."""
    stranger = ReleaseKey.generate(tmp_path / "stranger.pem")
    manifest = ota.build_manifest(bundle, "0.2.0", 99)
    forged = ota.build_stream(ota.encode_manifest(manifest), stranger, bundle.files)
    with pytest.raises(OTAError, match="unknown release key"):
        ota.verify_stream(forged, [key.public_point])
    # ... nor by taking the trusted key's ID and signature onto the attacker's manifest
    end = manifest_end(stream)
    f_end = manifest_end(forged)
    spliced = forged[:f_end] + stream[end:end + 72] + forged[f_end + 72:]
    with pytest.raises(OTAError, match="bad signature"):
        ota.verify_stream(spliced, [key.public_point])


def test_truncated_and_trailing_bytes_are_refused(stream, key):
    with pytest.raises(OTAError, match="truncated"):
        ota.verify_stream(stream[:-1], [key.public_point])
    with pytest.raises(OTAError, match="ends inside its header"):
        ota.verify_stream(stream[:manifest_end(stream) + 71], [key.public_point])
    with pytest.raises(OTAError, match="not an update"):
        ota.verify_stream(stream[:6], [key.public_point])
    with pytest.raises(OTAError, match="trailing"):
        ota.verify_stream(stream + b"\0", [key.public_point])


def test_mix_and_match_of_two_builds_is_refused(bundle, other_bundle, key, stream):
    other = ota.build_stream(ota.encode_manifest(ota.build_manifest(other_bundle, "0.2.1", 3)), key,
                             other_bundle.files)
    ota.verify_stream(other, [key.public_point])
    a_end, b_end = manifest_end(stream) + 72, manifest_end(other) + 72
    assert len(stream) - a_end == len(other) - b_end, "same sizes: only the hashes tell the builds apart"
    with pytest.raises(OTAError, match="hash mismatch"):
        ota.verify_stream(stream[:a_end] + other[b_end:], [key.public_point])
    with pytest.raises(OTAError, match="hash mismatch"):
        ota.verify_stream(other[:b_end] + stream[a_end:], [key.public_point])
    with pytest.raises(OTAError, match="not the one the manifest lists"):
        ota.build_stream(ota.parse_stream(stream)[0], key, other_bundle.files)


def test_magic_and_manifest_size_limits(stream, key):
    with pytest.raises(OTAError, match="not an update"):
        ota.parse_stream(b"SBDOTA2\n" + stream[8:])
    with pytest.raises(OTAError, match="at most 8192"):
        ota.parse_stream(stream[:8] + (8193).to_bytes(4, "big") + stream[12:])


@pytest.mark.parametrize("path, reason", [
    ("/lib/../boot.py", r"'\.\.'"),
    ("/lib/sbd//app.mpy", "'//'"),
    ("/lib/sbd/app v2.mpy", "characters"),
    ("/lib/sbd/äpp.mpy", "characters"),
    ("/lib/" + "x" * 92 + ".mpy", "characters: 5 to 96"),
])
def test_path_rules_refused_at_build(bundle, path, reason):
    files = {**bundle.files, path: b"x"}
    with pytest.raises(OTAError, match=reason):
        ota.build_manifest(FirmwareBundle(files), "0.2.0", 2)


def test_build_refuses_what_devices_refuse(bundle):
    with pytest.raises(OTAError, match="no files under /lib"):
        ota.build_manifest(FirmwareBundle({"/main.py": b"", "/boot.py": b""}), "0.2.0", 2)
    many = {f"/lib/m{i}.mpy": b"" for i in range(65)}
    with pytest.raises(OTAError, match="1 to 64 files"):
        ota.build_manifest(FirmwareBundle(many), "0.2.0", 2)
    for counter in (0, -1, 2**31, True):
        with pytest.raises(OTAError, match="security counter"):
            ota.build_manifest(bundle, "0.2.0", counter)
    for version in ("", "x" * 17, "0.2\n"):
        with pytest.raises(OTAError, match="version"):
            ota.build_manifest(bundle, version, 2)
    assert ota.build_manifest(FirmwareBundle({"/lib/a.mpy": b"", "/main.py": b"m"}), "1", 1)["total_size"] == 0


@pytest.mark.parametrize("change, reason", [
    ({"extra": 1}, "unknown manifest fields"),
    ({"format": 2}, "format"),
    ({"expires": "2027-01-01T00:00:00Z"}, "expires"),
    ({"release_keys": []}, "release_keys"),
    ({"release_keys": ["04" + "ab" * 64]}, "P-256"),
    ({"total_size": 1}, "total_size"),
    ({"model": 7}, "model"),
])
def test_signed_but_malformed_manifests_are_refused(key, change, reason):
    """Validly signed, so only the field rules stand between such a manifest and a device."""
    good = {"format": 1, "version": "1", "security_counter": 5, "model": ota.MODEL,
            "files": [{"path": "lib/a.mpy", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}],
            "total_size": 0}
    assert ota.verify_stream(signed_raw(key, good), [key.public_point])
    with pytest.raises(OTAError, match=reason):
        ota.verify_stream(signed_raw(key, {**good, **change}), [key.public_point])


def _manifest_cases():
    """The one table of field rules both sides are tested against (tests/firmware/manifest_cases.py,
    which tests/firmware/mptest_manifest.py runs on the device's sbd.manifest)."""
    path = Path(__file__).resolve().parent.parent / "firmware" / "manifest_cases.py"
    spec = importlib.util.spec_from_file_location("_manifest_cases", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MANIFEST_CASES = _manifest_cases()


@pytest.mark.parametrize("name, change, reason", MANIFEST_CASES.cases(), ids=[c[0] for c in MANIFEST_CASES.cases()])
def test_fields_follow_the_one_specification_table(name, change, reason):
    """The same bytes a device is given in mptest_manifest.py: refused where it refuses, accepted where it accepts."""
    data = MANIFEST_CASES.manifest_bytes(change)
    if reason is None:
        assert ota.parse_manifest(data) == json.loads(data)
    else:
        with pytest.raises(OTAError):
            ota.parse_manifest(data)


def test_a_rotation_that_drops_its_signing_key_is_refused(bundle, key, tmp_path):
    """As the device refuses it (Receiver._check_manifest): its own slot would fail at the next boot."""
    new = ReleaseKey.generate(tmp_path / "new.pem")
    dropping = ota.build_manifest(bundle, "0.3.0", 3, release_keys=[new.public_point])
    with pytest.raises(OTAError, match="drops its own signing key"):
        ota.build_stream(ota.encode_manifest(dropping), key, bundle.files)
    files = b"".join(bundle.files["/" + f["path"]] for f in dropping["files"])
    with pytest.raises(OTAError, match="drops its own signing key"):
        ota.verify_stream(signed_raw(key, dropping, files), [key.public_point])
    keeping = ota.build_manifest(bundle, "0.3.0", 3, release_keys=[new.public_point, key.public_point])
    assert ota.verify_stream(ota.build_stream(ota.encode_manifest(keeping), key, bundle.files),
                             [key.public_point])["release_keys"] == keeping["release_keys"]


def test_upper_case_hash_and_duplicate_paths_refused(key):
    entry = {"path": "lib/a.mpy", "size": 1, "sha256": hashlib.sha256(b"a").hexdigest()}
    base = {"format": 1, "version": "1", "security_counter": 5, "model": ota.MODEL}
    with pytest.raises(OTAError, match="lower-case hex"):
        ota.verify_stream(signed_raw(key, {**base, "files": [{**entry, "sha256": entry["sha256"].upper()}],
                                           "total_size": 1}, b"a"), [key.public_point])
    with pytest.raises(OTAError, match="listed twice"):
        ota.verify_stream(signed_raw(key, {**base, "files": [entry, entry], "total_size": 2}, b"aa"),
                          [key.public_point])


# the push, against a simulated device -------------------------------------------------------------
class FakeDevice:
    """The device side of docs/ota.md's MQTT protocol, in memory, with faults to order.
    It doubles as the Watcher push() talks to."""

    def __init__(self, trusted: list[bytes], drop_at: int | None = None, restart_at: int | None = None,
                 silent: bool = False, old_transfer: bool = False, crash_loop: bool = False):
        self.trusted, self.drop_at, self.restart_at, self.silent = trusted, drop_at, restart_at, silent
        self.crash_loop = crash_loop
        self.base = "devices/02000000d001"
        self.inbox: list[Message] = []
        self.data_chunks = 0
        self.begins = 0
        self._clear()
        if old_transfer:
            self.sha, self.size = "0" * 64, 10

    def _clear(self) -> None:
        self.sha: str | None = None
        self.size = 0
        self.buf = b""

    def _event(self, event: str, **fields: Any) -> None:
        self._say(f"{self.base}/result", {"sbd": "ota", "event": event, **fields})

    def _say(self, topic: str, body: dict[str, Any]) -> None:
        self.inbox.append(Message(topic, json.dumps(body).encode(), False, time.monotonic()))

    # Watcher
    def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> None:
        assert qos == 1
        if self.silent:
            return
        if topic == f"{self.base}/ota/ctl":
            self.control(json.loads(payload))
        elif topic == f"{self.base}/ota/data":
            self.data_chunks += 1
            self.data(bytes(payload))

    def wait_for(self, match: Callable[[Message], bool], timeout: float) -> Message | None:
        while self.inbox:
            m = self.inbox.pop(0)
            if match(m):
                return m
        time.sleep(min(timeout, 0.05))
        return None

    # the device
    def control(self, msg: dict[str, Any]) -> None:
        if msg["op"] == "begin":
            self.begins += 1
            if self.sha == msg["sha256"] and self.size == msg["size"]:
                self._event("ready", next=len(self.buf))
                return
            if self.sha is not None:
                self._event("rejected", error="superseded")
            self._clear()
            self.sha, self.size = msg["sha256"], msg["size"]
            self._event("ready", next=0)
        elif msg["op"] == "end":
            if self.sha is None:
                self._event("rejected", error="no transfer")
                return
            try:
                manifest = ota.verify_stream(self.buf, self.trusted)
            except OTAError as exc:
                self._clear()
                self._event("rejected", error=str(exc))
                return
            self._clear()
            self._event("installed", version=manifest["version"], slot="a")
        elif msg["op"] == "status":
            self._event("status", next=len(self.buf))

    def data(self, payload: bytes) -> None:
        if self.sha is None:
            return
        off = int.from_bytes(payload[:4], "big")
        if self.drop_at is not None and off == self.drop_at:
            self.drop_at = None  # lost in transit, once
            return
        if off != len(self.buf):
            self._event("resume", next=len(self.buf))
            return
        self.buf += payload[4:]
        if self.restart_at is not None and len(self.buf) >= self.restart_at:
            if not self.crash_loop:
                self.restart_at = None
            self._clear()  # power lost: the transfer is forgotten; back online
            self._say(f"{self.base}/state", {"online": True})
            return
        head = ota.HEADER_LEN
        if len(self.buf) >= head:
            end = head + int.from_bytes(self.buf[8:12], "big")
            if len(self.buf) - len(payload) + 4 < end + 72 <= len(self.buf):  # the header just completed
                kid = self.buf[end:end + 8]
                if not any(ota.key_id(p) == kid for p in self.trusted):
                    self._clear()
                    self._event("rejected", error="unknown release key")


def test_push_installs(stream, key):
    device = FakeDevice([key.public_point])
    seen: list[int] = []
    result = ota.push(device, "02000000d001", stream, timeout=10, progress=lambda sent, total: seen.append(sent))
    assert result["event"] == "installed" and result["version"] == "0.2.0"
    assert device.data_chunks == -(-len(stream) // 1024) and device.begins == 1
    assert seen[-1] == len(stream)


def test_push_resumes_after_a_lost_chunk(stream, key):
    device = FakeDevice([key.public_point], drop_at=5 * 1024)
    assert ota.push(device, "02000000d001", stream, timeout=10)["event"] == "installed"
    assert device.begins == 2


def test_push_starts_over_after_the_device_restarts(stream, key):
    device = FakeDevice([key.public_point], restart_at=20 * 1024)
    assert ota.push(device, "02000000d001", stream, timeout=10, chunk=512)["event"] == "installed"
    assert device.begins == 2


def test_push_gives_up_on_a_device_that_keeps_restarting(stream, key):
    device = FakeDevice([key.public_point], restart_at=3 * 1024, crash_loop=True)
    with pytest.raises(OTAError, match="restarted 8 times.*came back online"):
        ota.push(device, "02000000d001", stream, timeout=10)
    assert device.begins == 9


def test_push_continues_past_an_older_transfer_superseded(stream, key):
    device = FakeDevice([key.public_point], old_transfer=True)
    assert ota.push(device, "02000000d001", stream, timeout=10)["event"] == "installed"


def test_push_returns_a_rejection_at_once(stream, tmp_path):
    stranger = ReleaseKey.generate(tmp_path / "stranger.pem")
    device = FakeDevice([stranger.public_point])
    result = ota.push(device, "02000000d001", stream, timeout=10)
    assert result["event"] == "rejected" and "unknown release key" in result["error"]
    assert device.data_chunks < len(stream) // 1024, "it stops sending once the device refused"


def test_push_times_out(stream, key):
    with pytest.raises(OTAError, match="no answer from the device within 1 s"):
        ota.push(FakeDevice([key.public_point], silent=True), "02000000d001", stream, timeout=1)
    with pytest.raises(OTAError, match="chunk size"):
        ota.push(FakeDevice([key.public_point]), "02000000d001", stream, chunk=1025)


# the command line ---------------------------------------------------------------------------
def sbd(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SBD_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "sbd_harness", "ota", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_keygen_build_inspect(tmp_path):
    made = sbd(tmp_path, "keygen")
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    key_path = tmp_path / "release" / "release-key.pem"
    assert info["key"] == str(key_path) and key_path.exists()
    assert bytes.fromhex(info["key_id"]) == ReleaseKey.load(key_path).key_id
    again = sbd(tmp_path, "keygen")  # a key that exists is kept, never replaced
    assert again.returncode == 0 and "already exists" in again.stderr and "kept" in again.stderr
    assert json.loads(again.stdout)["key_id"] == info["key_id"] and not json.loads(again.stdout)["made"]
    assert bytes.fromhex(info["key_id"]) == ReleaseKey.load(key_path).key_id

    out = tmp_path / "u.sbdota"
    built = sbd(tmp_path, "build", "--version", "0.2.0", "--counter", "2", "--expires-days", "30",
                "--out", str(out))
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    data = out.read_bytes()
    assert summary["sha256"] == hashlib.sha256(data).hexdigest() and summary["key_id"] == info["key_id"]
    assert summary["version"] == "0.2.0" and summary["counter"] == 2 and summary["files"] > 0
    assert summary["total_size"] == len(ota.parse_stream(data)[3])

    shown = sbd(tmp_path, "inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["verified"] and report["signature_valid"] and report["manifest"]["security_counter"] == 2

    tampered = tmp_path / "tampered.sbdota"
    tampered.write_bytes(flip(data, len(data) - 10))
    bad = sbd(tmp_path, "inspect", str(tampered))
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert not report["verified"] and report["signature_valid"] and "hash mismatch" in report["error"]

    other = ReleaseKey.generate(tmp_path / "other.pem")
    stranger = sbd(tmp_path, "inspect", str(out), "--trust", other.public_point.hex())
    assert stranger.returncode == 1 and not json.loads(stranger.stdout)["key_trusted"]

    unknown = sbd(tmp_path, "push", "--board", "no-such-board", "--update", str(out))
    assert unknown.returncode == 2 and "no-such-board" in unknown.stderr


def test_cli_refuses_bad_input(tmp_path):
    assert sbd(tmp_path, "keygen").returncode == 0
    not_update = tmp_path / "notes.txt"
    not_update.write_text("hello")
    for args, message in [
        (("inspect", str(tmp_path / "missing.sbdota")), "no update file"),
        (("inspect", str(not_update)), "not an update"),
        (("build", "--counter", "0", "--out", str(tmp_path / "x")), "security counter"),
        (("build", "--counter", "2", "--rotate-to", "zz", "--out", str(tmp_path / "x")), "--rotate-to"),
        (("build", "--counter", "2", "--key", str(tmp_path / "none.pem"), "--out", str(tmp_path / "x")),
         "no release key"),
        (("push", "--board", "no-such-board", "--update", str(not_update)), "not an update"),
        (("push", "--board", "no-such-board-x", "--update", str(tmp_path / "missing")), "no update file"),
    ]:
        proc = sbd(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "x").exists()
