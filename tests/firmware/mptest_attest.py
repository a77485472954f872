# MicroPython unit tests of the attestation statement (sbd.attest), on a fake
# device filesystem in a fresh folder under /tmp, with NVS and the chip's
# unique ID faked.
import binascii
import gc
import hashlib
import io
import json
import os
import sys
import mphelpers


class FakeMachine:
    @staticmethod
    def unique_id():
        return b"\x24\x0a\xc4\x01\x02\x03"


sys.modules["machine"] = FakeMachine()
mphelpers.install_fake_nvs()
from sbd import attest, p256, store, version  # noqa: E402

SK = binascii.unhexlify("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721")
PK = p256.public_key(SK)
OTHER_SK = binascii.unhexlify("519b423d715f8b581f4fa8ee59f4771a5b44c8130b4e3eacca54a56dda72b464")
CERT = b"0\x82 a device certificate, as far as this test cares"
NONCE = "00112233445566778899aabbccddeeff"
store.put("sk", SK)
store.put("pk", PK)
store.put("cert", CERT)
store.put_int("ota_ctr", 3)

BIG = 70000  # larger than any buffer the device may spend on one file, not a multiple of 512
FILES = {
    "/boot.py": b"# boot\n",
    "/main.py": b"# main\n",
    "/lib/sbd/__init__.mpy": b"M\x06init",
    "/lib/sbd/app.mpy": bytes(range(256)) * 2,     # exactly one buffer of 512
    "/lib/sbd/ca.der": b"0\x82data the code may load",  # any file under /lib
    "/lib/big.mpy": b"",                            # filled in fresh(): BIG bytes
    "/sbd/__init__.py": b"__path__ = '/lib/sbd'\n",  # a package that shadows /lib/sbd
    "/sbd/notes.txt": b"no module, yet no file of the build",
    "/deep/a/b/c.mpy": b"M\x06deep",
    "/data/outbox/00000001.log": b"telemetry record",  # data: left out
    "/data/notes.txt": b"not code",
    "/rollback_floor": b"3",
    "/ota/slot_a/manifest.json": b'{"format": 1}',
    "/ota/slot_a/manifest.sig": b"\x01" * 72,
    "/ota/slot_a/lib/sbd/app.mpy": b"M\x06slot a app",
    "/ota/slot_b/manifest.json": b'{"format": 1}',  # the inactive slot: its modules only
    "/ota/slot_b/lib/sbd/app.mpy": b"M\x06slot b app",
}
# Everything outside /data, and the modules in it: the slots whole, the floor, a stray file.
LISTED = ["/boot.py", "/deep/a/b/c.mpy", "/lib/big.mpy", "/lib/sbd/__init__.mpy", "/lib/sbd/app.mpy",
          "/lib/sbd/ca.der", "/main.py", "/ota/slot_a/lib/sbd/app.mpy", "/ota/slot_a/manifest.json",
          "/ota/slot_a/manifest.sig", "/ota/slot_b/lib/sbd/app.mpy", "/ota/slot_b/manifest.json",
          "/rollback_floor", "/sbd/__init__.py", "/sbd/notes.txt"]


def big_chunk(i):
    return bytes((i * 7 + j) & 0xFF for j in range(1000))


def fresh():
    root = "/tmp/sbd-attest-" + binascii.hexlify(os.urandom(6)).decode()
    os.mkdir(root)
    for path, data in FILES.items():
        cur = root
        for part in path.split("/")[1:-1]:
            cur += "/" + part
            try:
                os.mkdir(cur)
            except OSError:
                pass
        with open(root + path, "wb") as f:
            if path == "/lib/big.mpy":
                for i in range(BIG // 1000):
                    f.write(big_chunk(i))
            else:
                f.write(data)
    return root


def rmtree(path):
    for name, kind, *_ in os.ilistdir(path):
        if kind == 0x4000:
            rmtree(path + "/" + name)
        else:
            os.remove(path + "/" + name)
    os.rmdir(path)


def content(path):
    if path == "/lib/big.mpy":
        h = hashlib.sha256()
        for i in range(BIG // 1000):
            h.update(big_chunk(i))
        return BIG, binascii.hexlify(h.digest()).decode()
    return len(FILES[path]), binascii.hexlify(hashlib.sha256(FILES[path]).digest()).decode()


def test_every_file_outside_user_data_is_listed():
    root = fresh()
    try:
        for slot in ("", "a", "b"):  # whichever slot runs
            assert attest.files(root, slot) == LISTED
    finally:
        rmtree(root)


def test_covered_follows_the_documented_rules():
    for path in ("/boot.py", "/main.py", "/lib/x", "/lib/sbd/notes.txt", "/x.py", "/a/b.mpy", "/sbd/__init__.py",
                 "/data/evil.py", "/data/x/evil.mpy", "/ota/slot_b/lib/sbd/app.mpy", "/rollback_floor",
                 "/ota/slot_a/manifest.json", "/x.pyc", "/libx/a.txt", "/x.py.txt", "/mpy", "/ota/incoming/x"):
        assert attest.covered(path, ""), path
    for path in ("/data/outbox/00000001.log", "/data/notes.txt", "/data/x.pyc"):
        assert not attest.covered(path, ""), path


def test_the_statement_holds_every_field_and_each_file_hash():
    root = fresh()
    try:
        body = b"".join(attest.statement(NONCE, root, "a"))
        s = json.loads(body)
        assert set(s) == {"format", "device_id", "nonce", "cert_sha256", "model", "fw_version",
                                                "profile", "slot", "counter", "files"}
        assert s["format"] == "sbd-attest-1" and s["device_id"] == "240ac4010203" and s["nonce"] == NONCE
        assert s["cert_sha256"] == binascii.hexlify(hashlib.sha256(CERT).digest()).decode()
        assert (s["model"], s["fw_version"], s["profile"]) == (version.MODEL, version.VERSION, version.PROFILE)
        assert s["slot"] == "a" and s["counter"] == 3
        assert sorted(s["files"]) == attest.files(root, "a")
        for path, entry in s["files"].items():
            size, digest = content(path)
            assert entry == {"size": size, "sha256": digest}, path
        assert body.startswith(b'{"format":"sbd-attest-1","device_id":"240ac4010203","nonce":"' + NONCE.encode())
        assert json.loads(b"".join(attest.statement(NONCE, root, "")))["slot"] == "factory"
    finally:
        rmtree(root)


def test_a_changed_or_added_file_changes_the_statement():
    root = fresh()
    try:
        before = json.loads(b"".join(attest.statement(NONCE, root, "")))["files"]
        with open(root + "/lib/sbd/app.mpy", "r+b") as f:
            f.seek(100)
            f.write(b"\xff")
        with open(root + "/data/backdoor.mpy", "wb") as f:
            f.write(b"M\x06")
        after = json.loads(b"".join(attest.statement(NONCE, root, "")))["files"]
        assert after["/lib/sbd/app.mpy"]["sha256"] != before["/lib/sbd/app.mpy"]["sha256"]
        assert after["/lib/sbd/app.mpy"]["size"] == before["/lib/sbd/app.mpy"]["size"]
        assert set(after) - set(before) == {"/data/backdoor.mpy"}
    finally:
        rmtree(root)


def test_the_device_key_signs_the_exact_statement_bytes():
    root = fresh()
    try:
        parts, sig = attest.answer(NONCE, root)
        body = b"".join(parts)
        digest = hashlib.sha256(body).digest()
        assert p256.verify(PK, digest, sig)
        assert not p256.verify(p256.public_key(OTHER_SK), digest, sig)
        assert not p256.verify(PK, hashlib.sha256(body.replace(b"240ac4010203", b"240ac4010204")).digest(), sig)
    finally:
        rmtree(root)


def test_the_reply_is_one_json_line_with_the_statement_bytes_in_base64():
    root = fresh()
    try:
        parts, sig = attest.answer(NONCE, root)
        body = b"".join(parts)
        out = io.StringIO()
        attest.write_reply({"sbd": "cmd", "ok": True, "cmd": "attest", "seq": 7, "statement": parts,
                            "signature": binascii.b2a_base64(sig).decode().strip()}, out)
        text = out.getvalue()
        assert text.endswith("\n") and text.count("\n") == 1 and len(text) > 1500
        reply = json.loads(text)
        assert (reply["sbd"], reply["ok"], reply["cmd"], reply["seq"]) == ("cmd", True, "attest", 7)
        assert binascii.a2b_base64(reply["statement"]) == body
        assert binascii.a2b_base64(reply["signature"]) == sig
    finally:
        rmtree(root)


def test_the_running_slot_is_the_one_on_the_import_path():
    root = fresh()
    saved = list(sys.path)
    try:
        assert attest.running_slot(root) == ""
        sys.path.insert(0, root + "/ota/slot_b/lib")
        assert attest.running_slot(root) == "b"
        assert json.loads(b"".join(attest.statement(NONCE, root)))["slot"] == "b"
        sys.path[0] = root + "/ota/slot_bb/lib"
        assert attest.running_slot(root) == ""
    finally:
        sys.path[:] = saved
        rmtree(root)


def test_files_are_hashed_through_a_small_buffer():
    # A file larger than a third of the heap hashes in a few KiB: nothing the size of a file is read.
    root = fresh()
    try:
        path = root + "/lib/huge.mpy"
        with open(path, "wb") as f:
            for i in range(60):
                f.write(bytes([i]) * 1024)
        gc.collect()
        before = gc.mem_alloc()
        size, digest = attest.file_digest(path, bytearray(512))
        used = gc.mem_alloc() - before
        assert size == 60 * 1024 and used < 4096, used
        h = hashlib.sha256()
        for i in range(60):
            h.update(bytes([i]) * 1024)
        assert digest == h.digest()
    finally:
        rmtree(root)


class Sink:
    """A console that keeps what is written in the pieces it came in (no big block)."""

    def __init__(self):
        self.pieces = []

    def write(self, s):
        self.pieces.append(s)


def test_a_heap_in_pieces_of_one_kib_is_enough_to_attest():
    # A long-running device's heap: tens of KiB free, but no contiguous block of 2 KiB.
    # The statement is several KiB; it is never made, or written, in one piece.
    root = fresh()
    for i in range(40):  # as many modules as the firmware has, and more
        with open(root + "/lib/sbd/module_%02d.mpy" % i, "wb") as f:
            f.write(b"M\x06" + bytes([i]) * 300)
    hold = [None] * 400
    try:
        attest.answer(NONCE, root)  # modules loaded, P-256 table built: as on a device that answered before
        gc.collect()
        n = 0
        try:  # the whole heap in blocks of 1 KiB, then every other one freed
            while n < len(hold):
                hold[n] = bytearray(1024)
                n += 1
        except MemoryError:
            pass
        for i in range(0, n, 2):
            hold[i] = None
        gc.collect()
        assert gc.mem_free() > 40000, gc.mem_free()
        try:
            bytearray(2048)
            fragmented = False
        except MemoryError:
            fragmented = True
        assert fragmented
        parts, sig = attest.answer(NONCE, root)
        out = Sink()
        attest.write_reply({"sbd": "cmd", "ok": True, "cmd": "attest", "seq": 1, "statement": parts}, out)
        # Checked piece by piece too: the pieces now sit in the holes, and nothing
        # here may need a block of the statement's size either.
        assert '"sbd": "cmd"' in out.pieces[0] and out.pieces[0].endswith(', "statement": "')
        assert out.pieces[-1].endswith('"}\n') and len(out.pieces) > 10
        written, signed, size = hashlib.sha256(), hashlib.sha256(), 0
        for piece in out.pieces[1:-1] + [out.pieces[-1][:-3]]:
            data = binascii.a2b_base64(piece)
            size += len(data)
            written.update(data)
        for part in parts:
            signed.update(part)
        digest = signed.digest()
        assert size > 5000 and written.digest() == digest
        assert p256.verify(PK, digest, sig)
    finally:
        hold = None
        gc.collect()
        rmtree(root)


def test_nothing_of_the_statement_is_held_while_the_device_key_signs():
    # The statement is hashed as it is made, and made again when written: what the
    # answer keeps between the two is a few fields, not a piece per file (a list of
    # ~10 KiB after two updates filled the slots, which a long run's heap lacked).
    root = fresh()
    for i in range(80):
        with open(root + "/lib/sbd/module_%02d.mpy" % i, "wb") as f:
            f.write(b"M\x06" + bytes([i]) * 64)
    try:
        attest.answer(NONCE, root)  # modules loaded, P-256 table built
        gc.collect()
        before = gc.mem_alloc()
        parts, sig = attest.answer(NONCE, root)
        gc.collect()
        held = gc.mem_alloc() - before
        assert held < 1024, held
        digests, sizes = [], []
        for _ in range(2):  # made again, byte for byte
            h, n = hashlib.sha256(), 0
            for part in parts:
                h.update(part)
                n += part.count(b'"size"')
            digests.append(h.digest())
            sizes.append(n)
        assert digests[0] == digests[1] and sizes[0] == sizes[1] == len(attest.files(root)) > 80
        assert p256.verify(PK, digests[0], sig)
    finally:
        rmtree(root)
