# Signed update manifests (docs/ota.md): the release key's signature is
# checked over the manifest's exact bytes before a single field is trusted,
# then every field is validated. Used when an update arrives (sbd.ota) and
# at every boot (sbd.slots).
# Provisions: ETSI EN 303 645 5.3-9 (authenticity and integrity of updates),
# 5.7-1 (software integrity checked), 5.13-1B; NIST IR 8259A 5; EU CRA
# Annex I (2)(f); OWASP ISVS 3.4.3.
import hashlib
import json

MAGIC = b"SBDOTA1\n"
MAX_MANIFEST = 8192
MAX_FILES = 64
MAX_PATH = 96
SIG_LEN = 72  # key ID (8) + r || s (64)
FIELDS = ("format", "version", "security_counter", "model", "files", "total_size", "expires", "release_keys")
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"
_HEX = "0123456789abcdef"


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
    if m.get("format") != 1:
        raise ManifestError("unknown format")
    v = m.get("version")
    if not isinstance(v, str) or not 1 <= len(v) <= 16:
        raise ManifestError("bad version")
    if not _int(m.get("security_counter"), 1, 0x7FFFFFFF):
        raise ManifestError("bad security counter")
    if not isinstance(m.get("model"), str):
        raise ManifestError("bad model")
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
    if m.get("total_size") != total:
        raise ManifestError("total size does not add up")
    exp = m.get("expires")
    if exp is not None and not (isinstance(exp, str) and len(exp) == 15 and exp.endswith("Z")):
        raise ManifestError("bad expiry")
    keys = m.get("release_keys")
    if keys is not None:
        if not isinstance(keys, list) or not 1 <= len(keys) <= 8:
            raise ManifestError("bad release keys")
        for k in keys:
            if not _hex(k, 130) or not k.startswith("04"):
                raise ManifestError("bad release keys")
    return m
