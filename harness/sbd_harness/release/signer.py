"""Who signed an update: the public key an ECDSA P-256 signature was made with, recovered from it.

An update stream names its signer by key ID only (the first 8 bytes of the SHA-256 of its public
key, ota.key_id). A device that does not know that key refuses the update without asking whether
the signature is good, and so does `sbd ota inspect` against the keys it is given. For a person
looking at a refused update the difference matters: "valid signature, untrusted key" is a release
signed by somebody else's key (an attacker's, or the manufacturer's next key not yet rolled out),
"bad signature" is a damaged or forged one. ECDSA lets a verifier recover the (at most four)
public keys under which a signature verifies (SEC 1 v2, 4.1.6); the one whose key ID the stream
carries is its signer. Pure integer arithmetic on P-256: a few milliseconds, host side only.
"""
from __future__ import annotations

import hashlib

from sbd_harness.release.ota import key_id, verify_signature

# P-256 (SEC 2, 2.4.2): y^2 = x^3 - 3x + b over GF(p), base point G of prime order n.
P = 2**256 - 2**224 + 2**192 + 2**96 - 1
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)

Point = tuple[int, int] | None  # None: the point at infinity


def _add(a: Point, b: Point) -> Point:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0]:
        if (a[1] + b[1]) % P == 0:
            return None
        slope = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, P) % P
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (slope * slope - a[0] - b[0]) % P
    return x, (slope * (a[0] - x) - a[1]) % P


def _mul(k: int, point: Point) -> Point:
    out: Point = None
    while k:
        if k & 1:
            out = _add(out, point)
        point = _add(point, point)
        k >>= 1
    return out


def candidates(data: bytes, signature: bytes) -> list[bytes]:
    """The uncompressed public points under which `signature` (raw r‖s) verifies for `data`."""
    if len(signature) != 64:
        return []
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return []
    z = int.from_bytes(hashlib.sha256(data).digest(), "big")
    found = []
    for x in (r, r + N):
        if x >= P:
            continue
        rhs = (x * x * x - 3 * x + B) % P
        y = pow(rhs, (P + 1) // 4, P)  # P = 3 mod 4: the square root, if there is one
        if y * y % P != rhs:
            continue
        for point in ((x, y), (x, P - y)):
            # Q = r^-1 (sR - zG)
            q = _mul(pow(r, -1, N), _add(_mul(s, point), _mul((-z) % N, G)))
            if q is not None:
                found.append(b"\x04" + q[0].to_bytes(32, "big") + q[1].to_bytes(32, "big"))
    return found


def signer(data: bytes, kid: bytes, signature: bytes) -> bytes | None:
    """The public point whose key ID is `kid` and under which `signature` verifies for `data`: the key
    the stream says signed it, shown to have done so; None when no such key signed it."""
    for point in candidates(data, signature):
        if key_id(point) == kid and verify_signature(point, data, signature):
            return point
    return None
