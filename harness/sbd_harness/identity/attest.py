"""Attestation: a locked board proves what it runs.

The harness sends the signed command `attest` with a fresh random nonce; the
device (firmware/lib/sbd/attest.py) answers with a statement of its ID, the
nonce, its certificate's SHA-256, model, firmware version, running slot,
anti-rollback counter and the size and SHA-256 of every file that can run,
signed with the device key the lab CA certified. This module builds the
command, checks the answer (`verify_reply`) and compares the attested files
with a build (`compare_with_bundle`). Every failure is an AttestationError
that says what is wrong.

Statement (compact JSON, the exact bytes signed, base64 in the reply):
``{"format":"sbd-attest-1","device_id":...,"nonce":...,"cert_sha256":...,
"model":...,"fw_version":...,"profile":...,"slot":"factory"|"a"|"b",
"counter":N,"files":{"/path":{"size":N,"sha256":...},...}}``
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

if TYPE_CHECKING:
    from sbd_harness.release.bundle import FirmwareBundle
    from sbd_harness.identity.pki import LabCA

FORMAT = "sbd-attest-1"
NONCE_BYTES = 16
DEVICE_ID_RE = re.compile(r"[0-9a-f]{12}")
NONCE_RE = re.compile(r"[0-9a-f]{32}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
SLOTS = ("factory", "a", "b")
SLOT_DIR = "/ota/slot_"  # + slot letter: an update slot's folder on the device
SLOT_METADATA = ("/manifest.json", "/manifest.sig")
UPDATES = "/ota"  # the update slots' folder, and where an update is received
DEVICE_DATA = ("/rollback_floor",)  # the firmware's own data files outside /data (sbd.slots)
USER_DATA = "/data/"  # user data (sbd.outbox); a factory reset erases it
MODULES = (".py", ".mpy")  # what import loads: never user data
FIELDS = {"format": str, "device_id": str, "nonce": str, "cert_sha256": str, "model": str, "fw_version": str,
          "profile": str, "slot": str, "counter": int, "files": dict}
DEFAULT_TIMEOUT = 60.0  # a real ESP32 hashes every file and signs in pure Python


class AttestationError(Exception):
    """An attestation that proves nothing, with the reason."""


class ConsoleBoard(Protocol):
    """What attestation needs of a board: a line to its console and the JSON answer."""

    name: str

    def console_request(self, line: str, reply_key: str = "cmd", timeout: float = 20) -> dict: ...


@dataclass(frozen=True)
class AttestedFile:
    size: int
    sha256: str


@dataclass(frozen=True)
class Attestation:
    """A verified statement: fresh (our nonce), from the certified key of device_id."""

    device_id: str
    slot: str           # "factory", "a" or "b"
    version: str
    counter: int
    cert_sha256: str
    files: dict[str, AttestedFile]
    model: str
    profile: str
    nonce: str
    statement: bytes    # the exact bytes the device signed
    signature: bytes    # r || s


@dataclass
class FileComparison:
    """How the files on a board differ from a build. `ok` when nothing is
    missing, changed, extra or stale; `inactive` (the other update slot: it runs
    only after a fallback, and only if it verifies against a release key) and
    `not_compared` (the factory image under a running update, when no factory
    build is given) do not count against it."""

    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    inactive: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the board holds exactly the build (and its data)."""
        return not (self.missing or self.changed or self.extra or self.stale)

    def summary(self) -> str:
        """The differences that count, for a message."""
        text = f"missing {self.missing}, changed {self.changed}, extra {self.extra}"
        return text + (f", stale updates {self.stale}" if self.stale else "")


def new_nonce() -> str:
    """16 random bytes as 32 lower-case hex digits."""
    return secrets.token_hex(NONCE_BYTES)


def _check_device_id(device_id: object, where: str) -> str:
    """device_id if it is 12 lower-case hex digits, else AttestationError naming `where` it came from."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise AttestationError(f"device ID {device_id!r} {where} is not 12 lower-case hex digits")
    return device_id


def attest_command(ca: LabCA, device_id: str, nonce: str) -> str:
    """The signed `SBD-CMD` line asking device_id to attest with `nonce` (the CA's next sequence number)."""
    _check_device_id(device_id, "to attest")
    if not NONCE_RE.fullmatch(nonce):
        raise AttestationError(f"nonce {nonce!r} is not 32 lower-case hex digits")
    return ca.sign_command(device_id, "attest", {"nonce": nonce})


def attest(board: ConsoleBoard, ca: LabCA, device_id: str, nonce: str | None = None,
           timeout: float = DEFAULT_TIMEOUT) -> Attestation:
    """Asks a locked board on its serial console what it runs, and verifies the answer."""
    from sbd_harness.boards.base import BoardError
    nonce = nonce or new_nonce()
    line = attest_command(ca, device_id, nonce)
    try:
        reply = board.console_request(line, timeout=timeout)
    except BoardError as exc:
        raise AttestationError(f"{board.name} did not answer the attest command: {exc}") from exc
    return verify_reply(reply, ca, device_id, nonce)


def _b64(reply: Mapping[str, Any], key: str) -> bytes:
    """The bytes of the reply's base64 field `key` (strict alphabet and padding)."""
    value = reply.get(key)
    if not isinstance(value, str) or not value:
        raise AttestationError(f"malformed reply: no {key}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AttestationError(f"malformed reply: the {key} is not base64") from None


def verify_reply(reply: Mapping[str, Any], ca: LabCA, device_id: str, nonce: str) -> Attestation:
    """The device's {"sbd": "cmd", "cmd": "attest", ...} answer, checked (verify_statement)."""
    if not isinstance(reply, Mapping) or reply.get("sbd") != "cmd":
        raise AttestationError(f"malformed reply: {str(reply)[:200]}")
    if reply.get("ok") is not True:
        raise AttestationError(f"the device refused the attest command: {reply.get('error')}")
    if reply.get("cmd") != "attest":
        raise AttestationError(f"the device answered {reply.get('cmd')!r}, not attest")
    return verify_statement(_b64(reply, "statement"), _b64(reply, "signature"), ca, device_id, nonce)


def verify_statement(statement: bytes, signature: bytes, ca: LabCA, device_id: str, nonce: str) -> Attestation:
    """Checks, in order: the signature (ECDSA P-256 over SHA-256 of the exact bytes)
    with the key of the certificate the lab CA issued for device_id; the
    statement's form and every field; its device ID (form, and the one asked);
    its nonce (the one sent); its certificate (the one issued)."""
    from sbd_harness.identity.pki import fingerprint
    _check_device_id(device_id, "asked for")
    cert = ca.issued_certificate(device_id)
    if cert is None:
        raise AttestationError(f"the lab CA in {ca.dir} issued no certificate for device {device_id}: "
                               "there is no key to check the statement with")
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    if len(signature) != 64:
        raise AttestationError(f"bad signature: {len(signature)} bytes, not r || s (64)")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, statement, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AttestationError(f"bad signature: the statement is not signed by the key the lab CA certified "
                               f"for device {device_id} (another key, or changed bytes)") from None
    s = _parse(statement)
    _check_device_id(s["device_id"], "in the statement")
    if s["device_id"] != device_id:
        raise AttestationError(f"the statement is for device {s['device_id']}, the command was for {device_id}")
    if s["nonce"] != nonce:
        raise AttestationError(f"wrong nonce: the statement has {s['nonce']!r}, the command sent {nonce!r} "
                               "(an old answer replayed)")
    if s["cert_sha256"] != fingerprint(cert):
        raise AttestationError(f"the statement names certificate {s['cert_sha256']}, the lab CA issued "
                               f"{fingerprint(cert)} for device {device_id}")
    files = {path: AttestedFile(entry["size"], entry["sha256"]) for path, entry in s["files"].items()}
    return Attestation(device_id=s["device_id"], slot=s["slot"], version=s["fw_version"], counter=s["counter"],
                       cert_sha256=s["cert_sha256"], files=files, model=s["model"], profile=s["profile"],
                       nonce=s["nonce"], statement=statement, signature=signature)


def _parse(statement: bytes) -> dict[str, Any]:
    """The statement as a dict, every field present, of its type and form; else AttestationError."""
    try:
        s = json.loads(statement.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AttestationError(f"malformed statement: not JSON ({exc})") from None
    if not isinstance(s, dict):
        raise AttestationError("malformed statement: not a JSON object")
    missing = [k for k in FIELDS if k not in s]
    if missing:
        raise AttestationError(f"malformed statement: missing fields {missing}")
    unknown = sorted(set(s) - set(FIELDS))
    if unknown:
        raise AttestationError(f"malformed statement: unknown fields {unknown}")
    for name, kind in FIELDS.items():
        if not isinstance(s[name], kind) or isinstance(s[name], bool):
            raise AttestationError(f"malformed statement: {name} is not a {kind.__name__}")
    if s["format"] != FORMAT:
        raise AttestationError(f"malformed statement: format {s['format']!r}, expected {FORMAT!r}")
    if not SHA256_RE.fullmatch(s["cert_sha256"]):
        raise AttestationError("malformed statement: cert_sha256 is not a SHA-256 in hex")
    if s["slot"] not in SLOTS:
        raise AttestationError(f"malformed statement: slot {s['slot']!r} is none of {list(SLOTS)}")
    if s["counter"] < 0:
        raise AttestationError("malformed statement: negative security counter")
    for path, entry in s["files"].items():
        if not path.startswith("/") or not isinstance(entry, dict) or set(entry) != {"size", "sha256"}:
            raise AttestationError(f"malformed statement: file entry {path!r}")
        size, digest = entry["size"], entry["sha256"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(digest, str) \
                or not SHA256_RE.fullmatch(digest):
            raise AttestationError(f"malformed statement: file entry {path!r}")
    return s


def classify(paths: Iterable[str], slot: str) -> tuple[list[str], FileComparison]:
    """Sorts the device paths of a board running `slot` ("factory", "a", "b"):
    the running image as build paths (boot.py, main.py, and /lib, or the running
    slot's lib/ as /lib/), first; then what does not belong to it. The rules
    (docs/ota.md, "Checks in sbd verify"):
    - the running slot's manifest and signature and the anti-rollback floor
      are the device's own data; user data under /data is too, its modules
      excepted;
    - the other slot under a running update is `inactive` (its fallback);
    - any file in /ota while the factory image runs is `stale`: the firmware
      keeps no update then, and a flash or a factory reset erases them, so they
      are an update left over from another image;
    - the factory image under a running update is `not_compared`;
    - anything else (a top-level /sbd package, a stray module, any file
      that is not the build's) is `extra`.
    Raises AttestationError for a device path that is not absolute."""
    image: list[tuple[str, str]] = []
    result = FileComparison()
    running = SLOT_DIR + slot + "/" if slot != "factory" else None
    for path in paths:
        if not path.startswith("/"):
            raise AttestationError(f"malformed file path {path!r}")
        if path in ("/boot.py", "/main.py"):
            image.append((path, path))
        elif path in DEVICE_DATA or (path.startswith(USER_DATA) and not path.endswith(MODULES)):
            continue
        elif running and path.startswith(running):
            rest = path[len(running) - 1:]
            if rest.startswith("/lib/"):
                image.append((rest, path))
            elif rest not in SLOT_METADATA:  # the device checks these two at every boot
                result.extra.append(path)
        elif path.startswith("/lib/"):
            if running:
                result.not_compared.append(path)  # the factory image, under a running update
            else:
                image.append((path, path))
        elif path.startswith(UPDATES + "/"):
            if running and path.startswith(SLOT_DIR) and not path.startswith(running):
                result.inactive.append(path)
            else:
                result.stale.append(path)  # no running image owns it
        else:
            result.extra.append(path)  # a shadowing package, a stray module, any file not the build's
    for names in (result.extra, result.stale, result.inactive, result.not_compared):
        names.sort()
    return [build_path for build_path, _ in image], result


def running_slot(sys_path: Iterable[str]) -> str:
    """The slot a board runs ("factory", "a", "b"), from its sys.path, where the
    firmware puts the verified slot's lib/ (firmware/lib/sbd/slots.py)."""
    for entry in sys_path:
        for slot in SLOTS[1:]:
            if entry == f"{SLOT_DIR}{slot}/lib":
                return slot
    return "factory"


def _image(att: Attestation) -> tuple[dict[str, AttestedFile], FileComparison]:
    """The running image as build paths (the running slot's lib/ as /lib/), and
    the files outside it (classify)."""
    order, result = classify(att.files, att.slot)
    running = SLOT_DIR + att.slot if att.slot != "factory" else ""
    image = {p: att.files[p if p in ("/boot.py", "/main.py") else running + p] for p in order}
    return image, result


def compare_with_bundle(att: Attestation, bundle: FirmwareBundle) -> FileComparison:
    """The attested files against a build: missing (in the build, not running),
    changed (another size or SHA-256), extra (files on the board outside the
    build and the device's data) and stale (updates no running image owns). On a board running an update slot, the slot's lib/ is
    compared with the build's /lib (the build is the update's), and the
    factory image under /lib is listed as not compared."""
    image, result = _image(att)
    hashes = bundle.file_hashes()
    expected = {path: AttestedFile(len(bundle.files[path]), digest) for path, digest in hashes.items()}
    result.missing = sorted(p for p in expected if p not in image)
    result.changed = sorted(p for p in expected if p in image and image[p] != expected[p])
    result.extra = sorted(result.extra + [p for p in image if p not in expected])
    return result
