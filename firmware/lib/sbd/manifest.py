# Signed update manifests (docs/ota.md): the release key's signature is
# checked over the manifest's exact bytes before a single field is trusted,
# then every field is validated, by the rules of the table in docs/ota.md
# (the host's sbd_harness.release.ota applies the same). Used when an update
# arrives (sbd.ota) and at every boot (sbd.slots).
# Provisions: ETSI EN 303 645 5.3-9 (authenticity and integrity of updates),
# 5.7-1 (software integrity checked), 5.13-1B; NIST IR 8259A 5; EU CRA
# Annex I (2)(f); OWASP ISVS 3.4.3.
import binascii
import hashlib
import json

MAGIC = b"SBDOTA1\n"
MAX_MANIFEST = 8192
MAX_FILES = 64
MAX_PATH = 96
SIG_LEN = 72  # key ID (8) + r || s (64)
FIELDS = ("format", "version", "security_counter", "model", "files", "image", "total_size", "expires",
          "release_keys")
IMAGE_FIELDS = ("size", "sha256", "project", "version", "secure_version")
MAX_SECURE_VERSION = 32  # the ESP32's secure-version eFuse field: 32 bits
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"
_HEX = "0123456789abcdef"
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: in a leap year


class ManifestError(Exception):
    pass


def key_id(public_point):
    return hashlib.sha256(public_point).digest()[:8]


def trusted_keys(blob):
    """The trusted release keys kept in NVS: 65-byte points, back to back."""
    if not blob or len(blob) % 65:
        return []
    return [bytes(blob[i:i + 65]) for i in range(0, len(blob), 65)]


def check_signature(digest, sig, keys):
    """Returns only if `sig` (key ID + r||s) is a valid signature, by one of
    `keys`, of `digest` (the SHA-256 of the manifest's exact bytes)."""
    if len(sig) != SIG_LEN:
        raise ManifestError("bad signature block")
    from sbd import p256  # only when there is a signature to check
    for pk in keys:
        if key_id(pk) == bytes(sig[:8]):
            if not p256.verify(pk, digest, bytes(sig[8:])):
                raise ManifestError("bad signature")
            return
    raise ManifestError("unknown release key")


def verify(manifest_bytes, sig, keys):
    """The parsed manifest if `sig` is a valid signature of it by one of `keys`."""
    check_signature(hashlib.sha256(manifest_bytes).digest(), sig, keys)
    return parse(manifest_bytes)


def _hex(s, n):
    if not isinstance(s, str) or len(s) != n:
        return False
    for c in s:
        if c not in _HEX:
            return False
    return True


def _path(p):
    if not isinstance(p, str) or not 5 <= len(p) <= MAX_PATH or not p.startswith("lib/"):
        raise ManifestError("bad path")
    if ".." in p or "//" in p or p.endswith("/"):
        raise ManifestError("bad path")
    for c in p:
        if c not in _PATH_CHARS:
            raise ManifestError("bad path")
    return p


def _int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _expires(e):
    """True for "YYYYMMDDHHMMSSZ" naming a real UTC time (year 0001-9999, no leap second)."""
    if not isinstance(e, str) or len(e) != 15 or e[14] != "Z":
        return False
    for c in e[:14]:
        if c not in "0123456789":
            return False
    y, mo, d = int(e[:4]), int(e[4:6]), int(e[6:8])
    if not y or not 1 <= mo <= 12 or int(e[8:10]) > 23 or int(e[10:12]) > 59 or int(e[12:14]) > 59:
        return False
    last = _DAYS[mo - 1]
    if mo == 2 and (y % 4 or (y % 100 == 0 and y % 400)):
        last = 28
    return 1 <= d <= last


def _release_keys(keys):
    """True for 1 to 8 distinct P-256 public keys, uncompressed points in lower-case hex."""
    if not isinstance(keys, list) or not 1 <= len(keys) <= 8:
        return False
    from sbd import p256
    for i in range(len(keys)):
        k = keys[i]
        if not _hex(k, 130) or not k.startswith("04") or k in keys[:i]:
            return False
        if not p256.is_public_key(binascii.unhexlify(k)):
            return False
    return True


def _text(v, n):
    if not isinstance(v, str) or not 1 <= len(v) <= n:
        return False
    for c in v:
        if not " " <= c <= "~":
            return False
    return True


def _image(m):
    """A whole-firmware update: one ESP32 app image, its digest, size and the app
    descriptor fields (esp_app_desc_t: project_name and version up to 31 characters)."""
    im = m["image"]
    if not isinstance(im, dict) or len(im) != len(IMAGE_FIELDS):
        raise ManifestError("bad image")
    for k in im:
        if k not in IMAGE_FIELDS:
            raise ManifestError("bad image")
    if not _int(im["size"], 256, 0x7FFFFFFF) or not _hex(im["sha256"], 64):
        raise ManifestError("bad image")
    if not _text(im["project"], 31) or not _text(im["version"], 31):
        raise ManifestError("bad image")
    if not _int(im["secure_version"], 0, MAX_SECURE_VERSION):
        raise ManifestError("bad image")
    if not _int(m.get("total_size"), im["size"], im["size"]):
        raise ManifestError("total size does not add up")
    _optional(m)
    return m


def _optional(m):
    if "expires" in m and not _expires(m["expires"]):  # null is not "absent"
        raise ManifestError("bad expiry")
    if "release_keys" in m and not _release_keys(m["release_keys"]):
        raise ManifestError("bad release keys")


def parse(manifest_bytes):
    if len(manifest_bytes) > MAX_MANIFEST:
        raise ManifestError("manifest too large")
    try:
        m = json.loads(manifest_bytes)
    except ValueError:
        raise ManifestError("bad json")
    return check(m)


def check(m):
    """Every field rule of docs/ota.md, on a manifest already parsed."""
    if not isinstance(m, dict):
        raise ManifestError("not an object")
    for k in m:
        if k not in FIELDS:
            raise ManifestError("unknown field")
    if not _int(m.get("format"), 1, 1):
        raise ManifestError("unknown format")
    if not _text(m.get("version"), 16):
        raise ManifestError("bad version")
    if not _int(m.get("security_counter"), 1, 0x7FFFFFFF):
        raise ManifestError("bad security counter")
    if not isinstance(m.get("model"), str) or not m["model"]:
        raise ManifestError("bad model")
    if "image" in m:
        if "files" in m:
            raise ManifestError("files or image, not both")
        return _image(m)
    files = m.get("files")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise ManifestError("bad file list")
    seen = set()
    total = 0
    for f in files:
        if not isinstance(f, dict) or len(f) != 3:
            raise ManifestError("bad file entry")
        p = _path(f.get("path"))
        if p in seen:
            raise ManifestError("duplicate path")
        seen.add(p)
        if not _int(f.get("size"), 0, 0x7FFFFFFF) or not _hex(f.get("sha256"), 64):
            raise ManifestError("bad file entry")
        total += f["size"]
    if not _int(m.get("total_size"), total, total):
        raise ManifestError("total size does not add up")
    _optional(m)
    return m
