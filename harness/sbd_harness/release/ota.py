"""Signed updates, host side: the release key, the manifest, the update
stream (`.sbdota`) and its delivery over MQTT, exactly as docs/ota.md says.

The host checks every rule the device checks (and a few more), so a bad
release is refused at `sbd ota build`, not on a device in the field; and it
can verify any stream the way a device would (`sbd ota inspect`), which is
how tests show the device has something real to refuse.

Provisions: ETSI EN 303 645 5.3-9 (updates authentic and integral), 5.3-7
(secure update mechanism); NIST IR 8259A 5; EU CRA Annex I (2)(c), (f);
OWASP ISVS 3.4.3.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from sbd_harness.device.contract import COMMIT_TIMEOUT_S, OTA_OUTCOMES, is_ota_event, topics
from sbd_harness.errors import SbdError
from sbd_harness.identity.pki import public_point
from sbd_harness.paths import state_dir
from sbd_harness.release.bundle import FirmwareBundle

MAGIC = b"SBDOTA1\n"
FORMAT = 1
MODEL = "sbd-reference-esp32"
MAX_MANIFEST = 8192
MAX_FILES = 64
MAX_PATH = 96
MAX_RELEASE_KEYS = 8
MAX_COUNTER = 2**31 - 1
KEY_ID_LEN = 8
SIG_LEN = 64
HEADER_LEN = len(MAGIC) + 4
CHUNK_MAX = 1024
FIELDS = {"format", "version", "security_counter", "model", "files", "image", "total_size", "expires",
          "release_keys"}
REQUIRED = FIELDS - {"expires", "release_keys", "files", "image"}  # and one of files or image
IMAGE_FIELDS = {"size", "sha256", "project", "version", "secure_version"}
MAX_SECURE_VERSION = 32  # the ESP32's secure-version eFuse field (CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD)
PATH_RE = re.compile(r"[A-Za-z0-9_./-]+")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
POINT_RE = re.compile(r"04[0-9a-f]{128}")
EXPIRES_FORMAT = "%Y%m%d%H%M%SZ"
EXPIRES_RE = re.compile(r"[0-9]{14}Z")  # ASCII digits and a capital Z: strptime alone takes "z" and other digits


class OTAError(SbdError, ValueError):
    """A release, stream or transfer that is refused, with the reason."""


class ReleaseKeyExists(OTAError):
    """A release key is already where a new one was to be written; it is kept."""


def default_release_key_path() -> Path:
    """The lab release key: `SBD_RELEASE_KEY` where set (a CI's key, the bench's throw-away one),
    else <state>/release/release-key.pem."""
    given = os.environ.get("SBD_RELEASE_KEY")
    return Path(given) if given else state_dir() / "release" / "release-key.pem"


def lab_release_key(path: Path | None = None) -> tuple["ReleaseKey", bool]:
    """The lab's release key, made on first use as the lab CA is: (the key, whether it was made now).
    Two runs making it at once end up with the same key."""
    path = Path(path) if path else default_release_key_path()
    if not path.exists():
        try:
            return ReleaseKey.generate(path), True
        except ReleaseKeyExists:
            pass  # another run made it a moment ago
    return ReleaseKey.load(path), False


def key_id(point: bytes) -> bytes:
    """What the stream names its signer by: SHA-256 of the uncompressed point, first 8 bytes."""
    return hashlib.sha256(point).digest()[:KEY_ID_LEN]


def public_key(point: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 key of an uncompressed point; refuses anything that is not one (off-curve included)."""
    if len(point) != 65 or point[0] != 4:
        raise OTAError(f"not an uncompressed P-256 point (65 bytes, 04‖X‖Y): {point.hex()[:20]}…")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise OTAError(f"not a point on P-256: {point.hex()[:20]}…") from exc


class ReleaseKey:
    """The P-256 key that signs releases. It stays on the release host (PEM, owner-only)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, path: Path | None = None):
        if private_key.curve.name != "secp256r1":
            raise OTAError("a release key must be a P-256 key")
        self._key = private_key
        self.path = path

    @classmethod
    def generate(cls, path: Path) -> "ReleaseKey":
        """A new key written to `path` (mode 0600); never overwrites a key, which would orphan devices.
        The file appears whole or not at all (written aside, then linked into place)."""
        path = Path(path)
        if path.exists():
            raise ReleaseKeyExists(f"{path} already exists: refusing to overwrite a release key")
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            os.link(tmp, path)  # fails if a key appeared meanwhile: never replaces one
        except FileExistsError as exc:
            raise ReleaseKeyExists(f"{path} already exists: refusing to overwrite a release key") from exc
        finally:
            os.unlink(tmp)
        return cls(key, path)

    @classmethod
    def load(cls, path: Path) -> "ReleaseKey":
        path = Path(path)
        if not path.is_file():
            raise OTAError(f"no release key at {path} (sbd ota keygen --key {path})")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise OTAError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise OTAError(f"{path} is not an EC key")
        return cls(key, path)

    @property
    def public_point(self) -> bytes:
        return public_point(self._key.public_key())

    @property
    def key_id(self) -> bytes:
        return key_id(self.public_point)

    def sign(self, data: bytes) -> bytes:
        """ECDSA over SHA-256(data), raw r‖s (64 bytes): the form the device's verifier takes."""
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_signature(point: bytes, data: bytes, signature: bytes) -> bool:
    if len(signature) != SIG_LEN:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        public_key(point).verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


# the manifest -----------------------------------------------------------------------------
def expires_text(epoch: int) -> str:
    """`YYYYMMDDHHMMSSZ` (UTC), compared as text with the device clock."""
    return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc).strftime(EXPIRES_FORMAT)


def check_path(path: Any) -> str:
    """The path rules of docs/ota.md (the device's sbd.manifest applies the same)."""
    if not isinstance(path, str):
        raise OTAError(f"file path {path!r} is not text")
    if not path.startswith("lib/"):
        raise OTAError(f"file path {path!r} is outside lib/: an update replaces the application library only")
    if not 5 <= len(path) <= MAX_PATH:
        raise OTAError(f"file path {path!r} is {len(path)} characters: 5 to {MAX_PATH} allowed")
    if ".." in path or "//" in path or path.endswith("/"):
        raise OTAError(f"file path {path!r} holds '..', '//' or a trailing '/'")
    if not PATH_RE.fullmatch(path):
        raise OTAError(f"file path {path!r} holds characters outside a-z A-Z 0-9 _ - . /")
    return path


def _is_int(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def check_manifest(manifest: Any) -> dict[str, Any]:
    """Every field rule of docs/ota.md (its table is the one specification; the device's
    sbd/manifest.py applies the same); the manifest itself, or an OTAError naming the first fault."""
    if not isinstance(manifest, dict):
        raise OTAError("the manifest is not a JSON object")
    unknown = sorted(set(manifest) - FIELDS)
    if unknown:
        raise OTAError(f"unknown manifest fields {unknown}: a device refuses them")
    missing = sorted(REQUIRED - set(manifest))
    if missing:
        raise OTAError(f"manifest fields missing: {missing}")
    if not _is_int(manifest["format"], FORMAT, FORMAT):
        raise OTAError(f"manifest format {manifest['format']!r}: only {FORMAT} is known")
    version = manifest["version"]
    if not isinstance(version, str) or not 1 <= len(version) <= 16 or not all(" " <= c <= "~" for c in version):
        raise OTAError(f"version {version!r}: 1 to 16 printable ASCII characters")
    if not _is_int(manifest["security_counter"], 1, MAX_COUNTER):
        raise OTAError(f"security counter {manifest['security_counter']!r}: an integer 1 to {MAX_COUNTER}")
    if not isinstance(manifest["model"], str) or not manifest["model"]:
        raise OTAError(f"model {manifest['model']!r}: the device model's name")
    if "image" in manifest:
        if "files" in manifest:
            raise OTAError("a manifest carries files or an image, not both")
        _check_image(manifest)
        _check_optional(manifest)
        return manifest
    if "files" not in manifest:
        raise OTAError("manifest fields missing: files (or image)")
    files = manifest["files"]
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise OTAError(f"the manifest must list 1 to {MAX_FILES} files")
    seen: set[str] = set()
    total = 0
    for entry in files:
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
            raise OTAError(f"file entry {entry!r}: exactly path, size and sha256")
        path = check_path(entry["path"])
        if path in seen:
            raise OTAError(f"file path {path!r} listed twice")
        seen.add(path)
        if not _is_int(entry["size"], 0, MAX_COUNTER):
            raise OTAError(f"{path}: size {entry['size']!r} is not a byte count")
        if not isinstance(entry["sha256"], str) or not HEX64_RE.fullmatch(entry["sha256"]):
            raise OTAError(f"{path}: sha256 must be 64 lower-case hex digits")
        total += entry["size"]
    if not _is_int(manifest["total_size"], 0, 2**63) or manifest["total_size"] != total:
        raise OTAError(f"total_size {manifest['total_size']!r} is not the sum of the file sizes ({total})")
    _check_optional(manifest)
    return manifest


def _printable(value: Any, n: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= n and all(" " <= c <= "~" for c in value)


def _check_image(manifest: dict[str, Any]) -> None:
    """A whole-firmware update: one app image, its size and SHA-256, and the app descriptor's
    project, version (esp_app_desc_t: 31 characters each) and secure version (0 to 32)."""
    image = manifest["image"]
    if not isinstance(image, dict) or set(image) != IMAGE_FIELDS:
        raise OTAError(f"image: exactly {sorted(IMAGE_FIELDS)}")
    if not _is_int(image["size"], 256, MAX_COUNTER):
        raise OTAError(f"image size {image['size']!r}: a byte count of 256 to {MAX_COUNTER}")
    if not isinstance(image["sha256"], str) or not HEX64_RE.fullmatch(image["sha256"]):
        raise OTAError("image sha256: 64 lower-case hex digits")
    if not _printable(image["project"], 31) or not _printable(image["version"], 31):
        raise OTAError("image project and version: 1 to 31 printable ASCII characters")
    if not _is_int(image["secure_version"], 0, MAX_SECURE_VERSION):
        raise OTAError(f"image secure_version {image['secure_version']!r}: 0 to {MAX_SECURE_VERSION}")
    if not _is_int(manifest["total_size"], 0, 2**63) or manifest["total_size"] != image["size"]:
        raise OTAError(f"total_size {manifest['total_size']!r} is not the image's size ({image['size']})")


def _check_optional(manifest: dict[str, Any]) -> None:
    if "expires" in manifest:
        expires = manifest["expires"]
        try:
            ok = (isinstance(expires, str) and bool(EXPIRES_RE.fullmatch(expires))
                  and bool(dt.datetime.strptime(expires, EXPIRES_FORMAT)))
        except ValueError:
            ok = False
        if not ok:
            raise OTAError(f"expires {expires!r}: UTC time as YYYYMMDDHHMMSSZ")
    if "release_keys" in manifest:
        keys = manifest["release_keys"]
        if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_RELEASE_KEYS:
            raise OTAError(f"release_keys: a list of 1 to {MAX_RELEASE_KEYS} public keys")
        for k in keys:
            if not isinstance(k, str) or not POINT_RE.fullmatch(k):
                raise OTAError(f"release key {k!r}: an uncompressed point as 130 lower-case hex digits (04…)")
            public_key(bytes.fromhex(k))
        if len(set(keys)) != len(keys):
            raise OTAError("release_keys lists a key twice")


def check_rotation(manifest: Mapping[str, Any], signer_key_id: bytes) -> None:
    """A rotation (`release_keys`) must keep the key that signs it: every boot checks the
    running slot against the keys trusted then, and the device refuses one that would fail."""
    keys = manifest.get("release_keys")
    if keys is not None and signer_key_id not in [key_id(bytes.fromhex(k)) for k in keys]:
        raise OTAError(f"key rotation drops its own signing key ({signer_key_id.hex()}): "
                       "keep it in release_keys until a later update retires it")


def build_manifest(bundle: FirmwareBundle, version: str, security_counter: int, model: str | None = None,
                   expires: int | None = None, release_keys: list[bytes] | None = None) -> dict[str, Any]:
    """The manifest of `bundle`'s /lib files (boot.py and main.py are the factory bootloader, never updated).

    model: the model devices must be to install it; default the build's own MODEL (lib/sbd/version.py, read
    as text), so a product's update names the product, not the reference.
    expires: a Unix time, after which devices with a trusted clock refuse it.
    release_keys: uncompressed points, the complete key set devices trust once this commits."""
    lib = {path: data for path, data in bundle.files.items() if path.startswith("/lib/")}
    if not lib:
        raise OTAError("the firmware holds no files under /lib: nothing to update")
    files = [{"path": check_path(path[1:]), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
             for path, data in sorted(lib.items())]
    if model is None:
        from sbd_harness.release.product import from_bundle
        model = from_bundle(bundle).model or MODEL
    manifest: dict[str, Any] = {"format": FORMAT, "version": version, "security_counter": security_counter,
                                "model": model, "files": files, "total_size": sum(f["size"] for f in files)}
    _finish_manifest(manifest, expires, release_keys)
    if len(encode_manifest(manifest)) > MAX_MANIFEST:
        raise OTAError(f"the manifest is {len(encode_manifest(manifest))} bytes: at most {MAX_MANIFEST}")
    return manifest


def build_image_manifest(image: bytes, version: str, security_counter: int, model: str = MODEL,
                         expires: int | None = None, release_keys: list[bytes] | None = None) -> dict[str, Any]:
    """The manifest of a whole-firmware update: one ESP32 app image (checked with esptool's
    image classes), its size and SHA-256, and its app descriptor's project, version and
    secure version, which the device compares with the image it writes and the one it runs."""
    from sbd_harness.release.app_image import AppImageError, read_app_image
    try:
        parsed = read_app_image(image)
    except AppImageError as exc:
        raise OTAError(str(exc)) from exc
    desc = parsed.descriptor
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": version, "security_counter": security_counter, "model": model,
        "image": {"size": parsed.size, "sha256": parsed.sha256, "project": desc.project_name,
                  "version": desc.version, "secure_version": desc.secure_version},
        "total_size": parsed.size}
    _finish_manifest(manifest, expires, release_keys)
    return manifest


def _finish_manifest(manifest: dict[str, Any], expires: int | None, release_keys: list[bytes] | None) -> None:
    """What both kinds of manifest end with: the expiry, the key set to trust after the commit (each
    key a valid point), and the same rules the device applies (check_manifest)."""
    if expires is not None:
        manifest["expires"] = expires_text(expires)
    if release_keys is not None:
        for point in release_keys:
            public_key(point)
        manifest["release_keys"] = [point.hex() for point in release_keys]
    check_manifest(manifest)


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The bytes that are signed and sent: compact, sorted, so a build is reproducible."""
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def parse_manifest(manifest_bytes: bytes) -> dict[str, Any]:
    if len(manifest_bytes) > MAX_MANIFEST:
        raise OTAError(f"the manifest is {len(manifest_bytes)} bytes: at most {MAX_MANIFEST}")
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise OTAError(f"the manifest is not UTF-8 JSON: {exc}") from exc
    return check_manifest(manifest)


# the stream -------------------------------------------------------------------------------
def _file_bytes(files: Mapping[str, bytes], path: str) -> bytes:
    """A file by manifest path ("lib/x") or device path ("/lib/x", as FirmwareBundle.files has it)."""
    for key in (path, "/" + path):
        if key in files:
            return files[key]
    raise OTAError(f"no content given for {path}")


def build_stream(manifest_bytes: bytes, key: ReleaseKey, files: Mapping[str, bytes]) -> bytes:
    """magic, length, manifest, key ID, signature, then the files in manifest order.

    Refuses files that do not match the manifest: a release tool must not
    emit a stream every device will refuse."""
    manifest = parse_manifest(manifest_bytes)
    check_rotation(manifest, key.key_id)
    payload = []
    if "image" in manifest:  # a whole-firmware update: the image is the payload
        data = files.get("image", b"")
        if len(data) != manifest["image"]["size"] or hashlib.sha256(data).hexdigest() != manifest["image"]["sha256"]:
            raise OTAError("the image given is not the one the manifest lists")
        payload.append(data)
    for entry in manifest.get("files", []):
        data = _file_bytes(files, entry["path"])
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise OTAError(f"{entry['path']}: the content given is not the one the manifest lists")
        payload.append(data)
    signature = key.sign(manifest_bytes)
    return (MAGIC + len(manifest_bytes).to_bytes(4, "big") + manifest_bytes + key.key_id + signature
            + b"".join(payload))


def parse_stream(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(manifest bytes, key ID, signature, file payload); checks only the framing."""
    if len(data) < HEADER_LEN or data[:len(MAGIC)] != MAGIC:
        raise OTAError("not an update stream (no SBDOTA1 magic)")
    length = int.from_bytes(data[len(MAGIC):HEADER_LEN], "big")
    if length > MAX_MANIFEST:
        raise OTAError(f"the manifest length is {length}: at most {MAX_MANIFEST}")
    end = HEADER_LEN + length
    if len(data) < end + KEY_ID_LEN + SIG_LEN:
        raise OTAError(f"the stream ends inside its header ({len(data)} bytes)")
    key = data[end:end + KEY_ID_LEN]
    signature = data[end + KEY_ID_LEN:end + KEY_ID_LEN + SIG_LEN]
    return data[HEADER_LEN:end], key, signature, data[end + KEY_ID_LEN + SIG_LEN:]


def split_payload(manifest: Mapping[str, Any], payload: bytes) -> dict[str, bytes]:
    """Manifest path -> content, checking every size and hash and the total."""
    if len(payload) != manifest["total_size"]:
        how = "truncated" if len(payload) < manifest["total_size"] else "trailing bytes after the payload"
        raise OTAError(f"{how}: {len(payload)} file bytes, the manifest declares {manifest['total_size']}")
    if "image" in manifest:
        if hashlib.sha256(payload).hexdigest() != manifest["image"]["sha256"]:
            raise OTAError("hash mismatch: the image is not the one the manifest signs")
        return {"image": payload}
    out, at = {}, 0
    for entry in manifest["files"]:
        data = payload[at:at + entry["size"]]
        at += entry["size"]
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise OTAError(f"hash mismatch: {entry['path']} is not the file the manifest signs")
        out[entry["path"]] = data
    return out


def verify_stream(data: bytes, trusted_points: Iterable[bytes]) -> dict[str, Any]:
    """The manifest of a stream a device trusting `trusted_points` would accept (model, counter
    and clock aside); the signature is checked before any manifest field is read."""
    manifest_bytes, kid, signature, payload = parse_stream(data)
    signer = next((p for p in trusted_points if key_id(p) == kid), None)
    if signer is None:
        raise OTAError(f"signed by an unknown release key (key ID {kid.hex()})")
    if not verify_signature(signer, manifest_bytes, signature):
        raise OTAError(f"bad signature: the manifest is not the one key {kid.hex()} signed")
    manifest = parse_manifest(manifest_bytes)
    check_rotation(manifest, kid)
    split_payload(manifest, payload)
    return manifest


# delivery over MQTT -------------------------------------------------------------------------
MAX_RESTARTS = 8      # `begin` sent again after a lost connection or a device asking to resume
READY_WAIT_S = 5      # for `ready` after a `begin`: the device subscribes only after its birth message
STALL_S = 15          # silence while waiting on the device: ask it for its `status`
WINDOW = 96 * 1024    # bytes sent ahead of the device's last reported offset (it reports every 32 KiB),
                      # so the broker's queue for the device stays short


def push(watcher: Any, device_id: str, stream: bytes, timeout: float = 120, chunk: int = CHUNK_MAX,
         progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Sends `stream` to a device over MQTT (docs/ota.md) and returns its verdict:
    the `installed` or `rejected` result. `watcher` must see devices/<id>/result and
    devices/<id>/state (a Watcher on devices/<id>/#). OTAError if none within `timeout` s."""
    if not 1 <= chunk <= CHUNK_MAX:
        raise OTAError(f"chunk size {chunk}: 1 to {CHUNK_MAX} bytes")
    if not stream:
        raise OTAError("an empty update stream")
    return _Push(watcher, device_id, stream, chunk, progress).run(timeout)


def install(online: Any, stream: bytes, timeout: float = 120, wait_commit: bool = True,
            progress: Callable[[int, int], None] | None = None,
            on_installed: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Pushes `stream` to a board that is online (boards.lifecycle.online) and returns the device's
    last word on it: `rejected`, `installed` (wait_commit=False), or once the new version has
    restarted, reached the broker and passed its health check, `committed` (or `reverted`)."""
    result = push(online.watcher, online.device_id, stream, timeout=timeout, progress=progress)
    if result.get("event") != "installed" or not wait_commit:
        return result
    if on_installed is not None:
        on_installed(result)
    since = time.monotonic()
    after = online.watcher.wait_for(is_ota_event(online.topic, OTA_OUTCOMES, since), COMMIT_TIMEOUT_S)
    if after is None:
        raise OTAError(f"{online.device_id} installed the update but did not report it committed or reverted "
                       f"within {COMMIT_TIMEOUT_S} s")
    return after.json()


def _is_image_update(stream: bytes) -> bool:
    """Whether a stream carries an app image (its manifest's `image`), by its framing alone."""
    try:
        manifest = json.loads(parse_stream(stream)[0])
    except (OTAError, ValueError):
        return False
    return isinstance(manifest, dict) and "image" in manifest


class _Push:
    """One transfer. State: `offset` (next byte to send), `acked` (the device's last reported
    offset), whether a `begin` awaits its `ready`, and whether `end` was sent."""

    def __init__(self, watcher: Any, device_id: str, stream: bytes, chunk: int,
                 progress: Callable[[int, int], None] | None):
        self.w, self.stream, self.chunk, self.progress = watcher, stream, chunk, progress
        self.size = len(stream)
        self.topic = topics(device_id)
        begin: dict[str, Any] = {"op": "begin", "size": self.size, "sha256": hashlib.sha256(stream).hexdigest()}
        if _is_image_update(stream):
            begin["kind"] = "image"  # the device sets aside its one block now, before the heap fragments
        self.begin_msg = json.dumps(begin)
        self.started = time.monotonic()
        self.restarts = -1
        self.offset = self.acked = 0
        self.awaiting_ready = self.ended = False
        self.quiet_since = self.started
        self.connected = True
        self.why = "start"  # what caused the last restart, for the error

    def _ctl(self, body: dict[str, Any] | str) -> None:
        self.w.publish(self.topic.ota_ctl, body if isinstance(body, str) else json.dumps(body), 1)
        self.quiet_since = time.monotonic()

    def _begin(self, restart: bool = True) -> None:
        """Starts the transfer, or resumes it (a `begin` with the same hash is idempotent on
        the device). `restart` counts it against MAX_RESTARTS; a `begin` merely repeated for
        want of an answer does not count."""
        self.restarts += int(restart)
        if self.restarts > MAX_RESTARTS:
            raise OTAError(f"the transfer restarted {MAX_RESTARTS} times without completing "
                           f"(last: {self.why}; is the device restarting?)")
        self._ctl(self.begin_msg)
        self.awaiting_ready, self.ended = True, False

    def _relevant(self, m: Any) -> bool:
        if m.at < self.started or m.retain:
            return False  # an earlier transfer's events, or the retained state
        body = m.json()
        if not isinstance(body, dict):
            return False
        if m.topic == self.topic.result:
            return body.get("sbd") == "ota"
        return m.topic == self.topic.state and body.get("online") is True

    def _next_event(self, wait: float) -> dict[str, Any] | None:
        m = self.w.wait_for(self._relevant, max(wait, 0.001))
        if m is None:
            return None
        self.quiet_since = time.monotonic()
        return {"event": "online"} if m.topic.endswith("/state") else m.json()

    def _host_reconnected(self) -> bool:
        """True once when the watcher's own connection came back (the device kept its
        transfer; what we published meanwhile may be lost)."""
        is_connected = getattr(getattr(self.w, "client", None), "is_connected", None)
        if is_connected is None:
            return False
        now = bool(is_connected())
        back, self.connected = now and not self.connected, now
        return back

    def _handle(self, ev: dict[str, Any]) -> dict[str, Any] | None:
        """The verdict to return, or None after updating the state."""
        event, where = ev.get("event"), ev.get("next")
        if event == "installed":
            return ev
        if event == "rejected":
            if ev.get("error") == "superseded":
                return None  # about an earlier, unfinished transfer that our `begin` replaced
            if ev.get("error") == "no transfer" and self.restarts < MAX_RESTARTS:
                self.why = "the device forgot the transfer"
                self._begin()  # the device restarted and forgot ours: start again
                return None
            return ev
        if not isinstance(where, int) or isinstance(where, bool) or not 0 <= where <= self.size:
            where = None
        if self.awaiting_ready:
            if event == "ready" and where is not None:
                self.awaiting_ready = False
                self.offset = self.acked = where
        elif event in ("online", "resume"):
            self.why = "the device came back online" if event == "online" else f"the device asked to resume at {where}"
            self._begin()  # the device reconnected, or lost a chunk: ask where it stands
        elif event in ("progress", "status") and where is not None:
            self.acked = max(self.acked, where)
            if event == "status" and self.ended:
                if where < self.size:
                    self.why = f"bytes lost after {where}"
                    self._begin()  # chunks went missing: resume from where the device is
                else:
                    self._ctl({"op": "end"})  # every byte arrived but the `end` did not
        if self.progress and where is not None and event in ("ready", "progress"):
            self.progress(where, self.size)
        return None

    def _send_chunk(self) -> None:
        part = self.stream[self.offset:self.offset + self.chunk]
        self.w.publish(self.topic.ota_data, self.offset.to_bytes(4, "big") + part, 1)
        self.offset += len(part)
        if self.progress:
            self.progress(self.offset, self.size)

    def run(self, timeout: float) -> dict[str, Any]:
        deadline = self.started + timeout
        self._begin()
        while True:
            now = time.monotonic()
            if now >= deadline:
                state = ("no `ready` after `begin`" if self.awaiting_ready else
                         "no verdict after `end`" if self.ended else f"sent {self.offset} of {self.size} bytes")
                raise OTAError(f"no answer from the device within {timeout:.0f} s ({state})")
            if self._host_reconnected():
                self.why = "the host reconnected to the broker"
                self._begin()
            can_send = (not self.awaiting_ready and self.offset < self.size
                        and self.offset - self.acked < WINDOW)
            can_end = not self.awaiting_ready and self.offset >= self.size and not self.ended
            ev = self._next_event(0.001 if can_send or can_end else min(0.5, deadline - now))
            if ev is not None:
                verdict = self._handle(ev)
                if verdict is not None:
                    return verdict
                continue
            quiet = time.monotonic() - self.quiet_since
            if self.awaiting_ready:
                if quiet > READY_WAIT_S:
                    self._begin(restart=False)
            elif can_send:
                self._send_chunk()
            elif self.offset < self.size or self.ended:
                if quiet > STALL_S:
                    self._ctl({"op": "status"})
            else:
                self._ctl({"op": "end"})
                self.ended = True
