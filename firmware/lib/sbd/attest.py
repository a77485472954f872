# Attestation: a locked device proves what it runs. On the signed command
# `attest` with a fresh nonce chosen by the verifier, it answers with a
# statement signed by its own device key (the P-256 key made on the device and
# certified at provisioning): its ID from the chip, the nonce, its
# certificate's SHA-256, the model, the firmware version, the slot it runs,
# the anti-rollback security counter, and the size and SHA-256 of every file
# on its filesystem but user data (below). The nonce makes the answer fresh (no replay of an old
# statement); the device key makes it this device's. The verifier compares the
# files with the build (harness: sbd_harness/attest.py).
# Provisions: NIST IR 8259A 1 (device identification: the chip's ID, read
# from machine.unique_id() here, proven with the certified key) and 6 (cybersecurity state awareness: the software
# state reported and exported); EU CRA Annex I (2)(f) (integrity of programs:
# a changed or added file shows); ETSI EN 303 645 5.6-2 (told only to whoever
# signs the request with the provisioning CA's key).
#
# Which files the statement lists (device paths, from "/"): every file on the
# filesystem except the user data under /data (the telemetry outbox, which a
# factory reset erases and nothing imports), and there too every .py or .mpy
# (a module is never user data). That is the firmware (/boot.py,
# /main.py, /lib), the update slots in /ota, the anti-rollback floor
# (/rollback_floor), and whatever else anyone put there: a top-level /sbd
# package, a stray module, a file that is no module. boot.py imports only from
# /lib and the verified slot, so a file elsewhere does not run; it is listed
# all the same, for the verifier to see a filesystem that is not the build's
# (what a factory reset or a flash should have left), not only what runs.
# Not covered: the MicroPython image itself and its frozen modules (secure boot
# covers those, docs/identity.md), and code that is already compromised: it
# runs with the device key at hand and could sign a false statement.
#
# Statement: compact JSON, keys in this order, written here byte by byte:
#   {"format":"sbd-attest-1","device_id":"240ac4010203","nonce":"<32 hex>",
#    "cert_sha256":"<64 hex>","model":"...","fw_version":"0.1.0",
#    "profile":"reference","slot":"factory","counter":0,
#    "files":{"/boot.py":{"size":123,"sha256":"<64 hex>"},...}}
# slot is "factory", "a" or "b". The signature is ECDSA P-256 (r || s) over
# the SHA-256 of exactly these bytes, which the reply carries in base64.
import binascii
import gc
import hashlib
import json
import os
import sys
import machine
from sbd import identity, slots, version

FORMAT = "sbd-attest-1"
USER_DATA = "/data"  # sbd.outbox
MODULES = (".py", ".mpy")
_DIR = 0x4000
_CHUNK = 384  # statement bytes gathered before a piece of base64 is written


def running_slot(root=""):
    """The update slot this boot runs ("a", "b"), or "" for the factory image:
    read from sys.path, where slots.select() put the slot it verified."""
    prefix = root + slots.ROOT + "/slot_"
    for entry in sys.path:
        if entry.startswith(prefix) and entry.endswith("/lib") and len(entry) == len(prefix) + 5:
            return entry[len(prefix)]
    return ""


def covered(path, slot=""):
    """True when the file at device path `path` belongs in the statement (the rule
    above; the same whichever slot runs)."""
    return not path.startswith(USER_DATA + "/") or path.endswith(MODULES[0]) or path.endswith(MODULES[1])


def _walk(root, path, slot):
    """Yields the covered files under device folder `path`, sorted folder by
    folder: only one folder's names are held at a time."""
    entries = sorted((e[0], e[1]) for e in os.ilistdir(root + (path or "/")))
    for name, kind in entries:
        p = path + "/" + name
        if kind & _DIR:
            yield from _walk(root, p, slot)
        elif covered(p, slot):
            yield p


def files(root="", slot=""):
    """Device paths of the covered files, sorted folder by folder."""
    return list(_walk(root, "", slot))


def file_digest(path, buf):
    """(size, SHA-256) of a file, read through `buf` (no buffer of the file's size)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            size += n
            h.update(buf if n == len(buf) else memoryview(buf)[:n])
    return size, h.digest()


class Statement:
    """The statement's exact bytes for nonce (32 lower-case hex digits, checked
    by sbd.commands), made afresh, piece by piece, each time it is iterated:
    once to hash it for the signature, once to write it out. Nothing holds the
    whole (several KiB, and a list of every file), which a heap fragmented by a
    long run may not have room for beside the signature's work. Nothing on the
    device writes files between the two passes (commands run one at a time).
    `root` is where the device filesystem is (tests)."""

    def __init__(self, nonce, root="", slot=None):
        self.nonce = nonce
        self.root = root
        self.slot = running_slot(root) if slot is None else slot

    def __iter__(self):
        root, slot = self.root, self.slot
        yield ('{"format":"%s","device_id":"%s","nonce":"%s","cert_sha256":%s,"model":%s,"fw_version":%s,'
               '"profile":%s,"slot":"%s","counter":%d,"files":{' % (
                   FORMAT, binascii.hexlify(machine.unique_id()).decode(), self.nonce,
                   json.dumps(identity.fingerprint()), json.dumps(version.MODEL), json.dumps(version.VERSION),
                   json.dumps(version.PROFILE), slot or "factory", slots.counter())).encode()
        buf = bytearray(512)
        sep = ""
        for path in _walk(root, "", slot):
            size, digest = file_digest(root + path, buf)
            yield ('%s%s:{"size":%d,"sha256":"%s"}' % (sep, json.dumps(path), size,
                                                        binascii.hexlify(digest).decode())).encode()
            sep = ","
        yield b"}}"


def statement(nonce, root="", slot=None):
    """The statement's pieces (a Statement: iterate it, or join it in tests)."""
    return Statement(nonce, root, slot)


def answer(nonce, root=""):
    """(statement, signature r || s by the device key over the SHA-256 of its bytes)."""
    parts = Statement(nonce, root)
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    gc.collect()
    return parts, identity.sign(h.digest())


def write_reply(reply, out=None):
    """Prints the reply as one JSON line, its "statement" (pieces of bytes, made
    as they are written) as base64 a few hundred bytes at a time: no copy of the whole."""
    out = out or sys.stdout
    parts = reply.pop("statement")
    head = json.dumps(reply)
    out.write(head[:-1] + ', "statement": "')
    pending = bytearray()
    for part in parts:
        pending.extend(part)
        if len(pending) >= _CHUNK:
            n = len(pending) - len(pending) % 3  # base64 of whole 3-byte groups only
            out.write(binascii.b2a_base64(memoryview(pending)[:n], newline=False).decode())
            pending = pending[n:]
    out.write(binascii.b2a_base64(pending, newline=False).decode() + '"}\n')
