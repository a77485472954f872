"""Host-side (CPython) helpers for testing firmware/lib/sbd/p256.py.

* Published test vectors for P-256 read from the `cryptography_vectors`
  package: NIST CAVP ECDSA SigVer, SigGen, KeyPair and PKV (FIPS 186-2 and
  186-3), and the RFC 6979 deterministic-ECDSA vectors (as shipped by OpenSSL).
* Edge cases crafted with `cryptography` (OpenSSL) as the reference.
* `run_on_micropython()`: writes cases to a compact text file, runs ONE
  MicroPython process with tests/firmware/mp_check_vectors.py over them, and
  returns what MicroPython answered per case id.

Case file format, one case a line: `<op> <id> <hex arg> ...` ("-" is an empty
argument). Ops: `verify pub digest sig` -> 1/0; `public priv` -> hex public
key; `sign priv digest` -> hex signature; `point pub` -> 1/0 (the public key
decodes to a valid point); `keypair` -> hex private ":" hex public key from
generate_keypair(). Errors come back as `EXC:<type>`.

The firmware API takes a 32-byte digest. For vectors made with another hash,
`digest32()` applies FIPS 186-4 6.4 (e = the leftmost 256 bits of the hash):
longer hashes are truncated, shorter ones (SHA-1, SHA-224) are left-padded
with zeros, which gives the same integer e. RFC 6979 *signing* vectors for
other hashes are skipped: their nonce comes from HMAC with that hash.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cryptography_vectors

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHECKER = HERE / "mp_check_vectors.py"
VECTORS = Path(cryptography_vectors.__file__).resolve().parent
ECDSA = VECTORS / "asymmetric" / "ECDSA"

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B

HASHES = {
    "SHA-1": hashlib.sha1,
    "SHA-224": hashlib.sha224,
    "SHA-256": hashlib.sha256,
    "SHA-384": hashlib.sha384,
    "SHA-512": hashlib.sha512,
}


@dataclass(frozen=True)
class Case:
    id: str
    op: str
    args: tuple[bytes, ...]
    expected: str

    def line(self) -> str:
        hexes = [a.hex() if a else "-" for a in self.args]
        return " ".join([self.op, self.id, *hexes])


def i2b(value: int, size: int = 32) -> bytes:
    return value.to_bytes(size, "big")


def digest32(hash_name: str, msg: bytes) -> bytes:
    """The 32-byte digest whose integer is e of FIPS 186-4 6.4 for P-256."""
    h = HASHES[hash_name](msg).digest()
    return h[:32] if len(h) >= 32 else bytes(32 - len(h)) + h


def encode_point(x: int, y: int) -> bytes:
    """04 || X || Y; a coordinate too big for 32 bytes gets more bytes (and
    so a key of the wrong length, which is how it reaches the firmware)."""
    def coord(v: int) -> bytes:
        return v.to_bytes(max(32, (v.bit_length() + 7) // 8), "big")
    return b"\x04" + coord(x) + coord(y)


def verify_case(case_id: str, pub: bytes, digest: bytes, sig: bytes, ok: bool) -> Case:
    return Case(case_id, "verify", (pub, digest, sig), "1" if ok else "0")


def public_case(case_id: str, d: int, pub: bytes) -> Case:
    return Case(case_id, "public", (i2b(d),), pub.hex())


# --- NIST CAVP .rsp/.txt files --------------------------------------------------

_CURVE = re.compile(r"^\[([PKB]-\d+)(?:,(SHA-\d+))?\]$")


def parse_cavp(path: Path):
    """Yield (curve, hash_name or None, {field: value}) for each record."""
    curve = hash_name = None
    record: dict[str, str] = {}
    for raw in path.read_text().splitlines() + [""]:
        line = raw.strip()
        if not line or line.startswith("#"):
            if record:
                yield curve, hash_name, record
                record = {}
            continue
        if line.startswith("["):
            match = _CURVE.match(line)
            if match:  # other brackets ("[B.4.2 Key Pair ...]") keep the curve
                curve, hash_name = match.group(1), match.group(2)
            continue
        key, _, value = line.partition("=")
        record[key.strip()] = value.strip()


def sigver_cases() -> list[Case]:
    """NIST SigVer, curve P-256: every case with its expected P/F result.

    FIPS_186-3/SigVer.rsp has P-256 with SHA-1, -224, -256, -384 and -512
    (SHA-256 is the firmware's own); FIPS_186-2/SigVer.rsp has P-256 with SHA-1.
    """
    cases = []
    for folder, default_hash in (("FIPS_186-3", None), ("FIPS_186-2", "SHA-1")):
        count: dict[str, int] = {}
        for curve, hash_name, rec in parse_cavp(ECDSA / folder / "SigVer.rsp"):
            hash_name = hash_name or default_hash
            if curve != "P-256" or "Result" not in rec:
                continue
            label = f"SigVer-{folder}/P-256,{hash_name}"
            count[label] = count.get(label, 0) + 1
            pub = encode_point(int(rec["Qx"], 16), int(rec["Qy"], 16))
            digest = digest32(hash_name, bytes.fromhex(rec["Msg"]))
            sig = i2b(int(rec["R"], 16)) + i2b(int(rec["S"], 16))
            ok = rec["Result"].startswith("P")
            cases.append(verify_case(f"{label}/{count[label]}", pub, digest, sig, ok))
    return cases


def siggen_cases() -> list[Case]:
    """NIST SigGen.txt (with private keys and nonces), P-256: public_key(d)
    must give Q, and the published (R, S) must verify."""
    cases = []
    for folder in ("FIPS_186-3", "FIPS_186-2"):
        count: dict[str, int] = {}
        for curve, hash_name, rec in parse_cavp(ECDSA / folder / "SigGen.txt"):
            hash_name = hash_name or "SHA-1"
            if curve != "P-256" or "S" not in rec:
                continue
            label = f"SigGen-{folder}/P-256,{hash_name}"
            count[label] = count.get(label, 0) + 1
            case_id = f"{label}/{count[label]}"
            pub = encode_point(int(rec["Qx"], 16), int(rec["Qy"], 16))
            digest = digest32(hash_name, bytes.fromhex(rec["Msg"]))
            sig = i2b(int(rec["R"], 16)) + i2b(int(rec["S"], 16))
            cases.append(public_case(case_id + "/public", int(rec["d"], 16), pub))
            cases.append(verify_case(case_id + "/verify", pub, digest, sig, True))
    return cases


def keypair_cases() -> list[Case]:
    """NIST KeyPair.rsp, P-256: public_key(d) must give (Qx, Qy)."""
    cases = []
    for folder in ("FIPS_186-3", "FIPS_186-2"):
        count = 0
        for curve, _, rec in parse_cavp(ECDSA / folder / "KeyPair.rsp"):
            if curve != "P-256" or "d" not in rec:
                continue
            count += 1
            pub = encode_point(int(rec["Qx"], 16), int(rec["Qy"], 16))
            cases.append(public_case(f"KeyPair-{folder}/P-256/{count}", int(rec["d"], 16), pub))
    return cases


def pkv_cases() -> list[Case]:
    """NIST PKV.rsp (public-key validation), P-256, expected P/F.

    Checked twice: the key decodes to a valid point or not (`point`), and
    verify() with that key on an arbitrary signature answers False without
    raising. Coordinates of more than 256 bits cannot be put in a 65-byte
    key; they reach the firmware as a longer key, which it must reject.
    """
    cases = []
    dummy_digest = hashlib.sha256(b"pkv").digest()
    dummy_sig = i2b(1) + i2b(1)
    for folder in ("FIPS_186-3", "FIPS_186-2"):
        count = 0
        for curve, _, rec in parse_cavp(ECDSA / folder / "PKV.rsp"):
            if curve != "P-256" or "Result" not in rec:
                continue
            count += 1
            case_id = f"PKV-{folder}/P-256/{count}"
            pub = encode_point(int(rec["Qx"], 16), int(rec["Qy"], 16))
            ok = rec["Result"].startswith("P")
            cases.append(Case(case_id + "/point", "point", (pub,), "1" if ok else "0"))
            cases.append(verify_case(case_id + "/verify", pub, dummy_digest, dummy_sig, False))
    return cases


# --- RFC 6979 (OpenSSL evp test format) -------------------------------------------

def _der_to_raw(der: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    r, s = decode_dss_signature(der)
    return i2b(r) + i2b(s)


def rfc6979_cases() -> list[Case]:
    """RFC 6979 A.2.5 (P-256) as shipped in RFC6979/evppkey_ecdsa_rfc6979.txt.

    DigestSign with SHA-256 must give exactly the published signature;
    DigestVerify (any hash, see digest32) must give the published result.
    """
    from cryptography.hazmat.primitives import serialization

    text = (ECDSA / "RFC6979" / "evppkey_ecdsa_rfc6979.txt").read_text()
    start = text.index("Title = RFC 6979 P-256 ")
    end = text.index("Title = ", start + 1)
    section = text[start:end]
    pems = dict(re.findall(r"(?:PrivateKey|PublicKey)=(\S+)\n(-----BEGIN.*?-----END [A-Z ]+-----)",
                           section, re.S))
    priv = serialization.load_pem_private_key(pems["P-256_PRIV"].encode(), None)
    d = priv.private_numbers().private_value
    numbers = priv.public_key().public_numbers()
    pub = encode_point(numbers.x, numbers.y)
    published = serialization.load_pem_public_key(pems["P-256_PUB"].encode())
    assert published.public_numbers() == numbers

    cases = [public_case("RFC6979/P-256/public", d, pub)]
    for n, block in enumerate(section.split("\n\n")):
        fields = dict(
            line.split(" = ", 1) for line in block.strip().splitlines() if " = " in line
        )
        kinds = [k for k in ("DigestSign", "DigestVerify") if k in fields]
        if not kinds:
            continue
        kind = kinds[0]
        hash_name = "SHA-" + fields[kind][3:]    # "SHA256" -> "SHA-256"
        msg = fields["Input"].strip('"').encode()
        digest = digest32(hash_name, msg)
        sig = _der_to_raw(bytes.fromhex(fields["Output"]))
        label = f"RFC6979/P-256/{hash_name}/{msg.decode()}/{kind}/{n}"
        if kind == "DigestSign":
            if hash_name == "SHA-256":
                cases.append(Case(label, "sign", (i2b(d), digest), sig.hex()))
            cases.append(verify_case(label + "/verify", pub, digest, sig, True))
        else:
            ok = fields.get("Result") != "VERIFY_ERROR"
            cases.append(verify_case(label, pub, digest, sig, ok))
    return cases


def published_cases() -> list[Case]:
    return sigver_cases() + siggen_cases() + keypair_cases() + pkv_cases() + rfc6979_cases()


# --- edge cases crafted with cryptography as the reference ---------------------

def _sqrt_mod_p(v: int) -> int | None:
    root = pow(v, (P + 1) // 4, P)  # p = 3 mod 4
    return root if root * root % P == v % P else None


def _point_x(d: int) -> int:
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.derive_private_key(d, ec.SECP256R1()).public_key().public_numbers().x


def _point(d: int) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec
    numbers = ec.derive_private_key(d, ec.SECP256R1()).public_key().public_numbers()
    return encode_point(numbers.x, numbers.y)


def crafted_cases() -> list[Case]:
    """Edge cases for verify, each checked against `cryptography` (OpenSSL):
    the intended verdict must be OpenSSL's too, or crafting went wrong.

    * x(R) >= n: a point R with x in [n, p) is used as R = u2*Q with e = 0,
      so the valid r is x - n (verify must also try r + n), and r = x itself
      is out of range. Q = (s/r) * R is computed with OpenSSL's ECDH (which
      gives x only; both choices of y verify when e = 0).
    * u1*G + u2*Q = infinity: e = -r*d mod n.
    * u1 = u2 = 1 with Q = G: the loop adds G to G (addition -> doubling);
      with Q = -G the sum is infinity.
    * Chosen u1, u2 (powers of two, n - 1, ...) and u1 = 0 (digest 0 or n).
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    out = []

    def add(case_id, x, y, e, r, s, expect):
        assert cryptography_verdict(x, y, e, r, s) is expect, case_id
        digest = i2b(e % (1 << 256))
        out.append(verify_case(case_id, encode_point(x, y), digest, i2b(r) + i2b(s), expect))

    def coords(pub):
        return int.from_bytes(pub[1:33], "big"), int.from_bytes(pub[33:], "big")

    # x(R) in [n, p): search upwards from n for an x on the curve.
    x = N
    while _sqrt_mod_p(x ** 3 - 3 * x + B) is None:
        x += 1
    y = _sqrt_mod_p(x ** 3 - 3 * x + B)
    peer = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    r = x - N
    for s in (1, 2, 0x1234567, N - 1):
        c = s * pow(r, -1, N) % N
        shared = ec.derive_private_key(c, ec.SECP256R1()).exchange(ec.ECDH(), peer)
        qx = int.from_bytes(shared, "big")
        qy = _sqrt_mod_p(qx ** 3 - 3 * qx + B)
        assert qy is not None
        for yy, tag in ((qy, "y"), (P - qy, "-y")):
            add(f"crafted/x(R)>=n/s={s:x}/{tag}/r=x-n", qx, yy, 0, r, s, True)
            other = s + 1 if s + 1 < N - 1 else 2  # not s, not n - s (e = 0 takes both)
            add(f"crafted/x(R)>=n/s={s:x}/{tag}/r=x-n/other-s", qx, yy, 0, r, other, False)
        add(f"crafted/x(R)>=n/s={s:x}/r=x", qx, qy, 0, x, s, False)  # r >= n

    # Sum at infinity: e = -r*d.
    for d in (1, 2, 7, N - 1, 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721):
        qx, qy = coords(_point(d))
        for r, s in ((1, 1), (0x1234, 0x5678), (N - 1, N - 2)):
            add(f"crafted/infinity/d={d:x}/r={r:x}", qx, qy, (-r * d) % N, r, s, False)

    # Q = G, u1 = u2 = 1: R = 2G. Q = -G, u1 = u2 = 1: R = infinity.
    gx, gy = coords(_point(1))
    r2 = _point_x(2) % N
    add("crafted/G+G", gx, gy, r2, r2, r2, True)
    add("crafted/G+G/other-s", gx, gy, r2, r2, r2 + 1, False)
    add("crafted/G-G", gx, P - gy, r2, r2, r2, False)

    # Chosen u1, u2: R = (u1 + u2*d) G, r = x(R) mod n, s = r/u2, e = u1*s.
    choices = (
        (3, 1, 1), (5, 1 << 51, 1 << 200), (11, (1 << 256) % N, 3), (13, N - 1, N - 1),
        (17, (1 << 260) % N, (1 << 255) + 1), (19, 0x1F << 200, 0xFFFF), (99, 0, 1),
        (99, 0, 5), (99, 0, N - 1),
    )
    for d, u1, u2 in choices:
        rx = _point_x((u1 + u2 * d) % N) % N
        s = rx * pow(u2, -1, N) % N
        e = u1 * s % N
        qx, qy = coords(_point(d))
        add(f"crafted/d={d}/u1={u1:x}/u2={u2:x}", qx, qy, e, rx, s, True)
        if u1 == 0:  # digest n: e = n is 0 mod n too
            add(f"crafted/d={d}/u1=0/e=n/u2={u2:x}", qx, qy, N, rx, s, True)
        add(f"crafted/d={d}/u1={u1:x}/u2={u2:x}/e+1", qx, qy, e + 1, rx, s, False)
    return out


def cryptography_verdict(x: int, y: int, e: int, r: int, s: int) -> bool:
    """What OpenSSL says about the same (key, 32-byte digest e, r, s)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    try:
        key.verify(utils.encode_dss_signature(r, s), i2b(e % (1 << 256)),
                   ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


# --- running MicroPython ------------------------------------------------------

def run_on_micropython(cases: list[Case], timeout: float = 900) -> dict[str, str]:
    """Run all cases in one MicroPython process; {case id: answer}."""
    from sbd_harness.emulator.micropython import micropython_command

    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.txt"
        path.write_text("".join(c.line() + "\n" for c in cases))
        env = dict(os.environ)
        env["MICROPYPATH"] = str(ROOT / "firmware" / "lib")
        proc = subprocess.run(
            micropython_command() + [str(CHECKER), str(path)],
            capture_output=True, text=True, env=env, timeout=timeout,
        )
    lines = proc.stdout.splitlines()
    if "DONE" not in lines:
        raise AssertionError(
            f"MicroPython did not finish (exit {proc.returncode}):\n"
            + (proc.stdout + proc.stderr)[-3000:]
        )
    answers = {}
    for line in lines:
        if line == "DONE" or line.startswith("#"):
            continue
        case_id, _, answer = line.partition(" ")
        answers[case_id] = answer
    return answers


def mismatches(cases: list[Case], answers: dict[str, str]) -> list[str]:
    """Ids (with expected and actual answer) of the cases MicroPython got wrong."""
    bad = []
    for case in cases:
        got = answers.get(case.id, "<no answer>")
        if got != case.expected:
            bad.append(f"{case.id}: expected {case.expected[:20]}, got {got[:40]}")
    return bad
