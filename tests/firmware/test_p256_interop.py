"""Interop of the firmware's ECDSA (sbd.p256, run under MicroPython with the
device-sized heap) with `cryptography` (OpenSSL) on the host, both ways, plus
verify's special cases crafted with OpenSSL as the reference.

Each test runs one MicroPython process over all of its cases.
"""
from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
import p256_vectors as vectors  # noqa: E402
from p256_vectors import N, Case, i2b  # noqa: E402

CASES = 32
PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
DETERMINISTIC = ec.ECDSA(utils.Prehashed(hashes.SHA256()), deterministic_signing=True)


def raw_public(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    numbers = key.public_numbers()
    return b"\x04" + i2b(numbers.x) + i2b(numbers.y)


def der_to_raw(der: bytes) -> bytes:
    r, s = utils.decode_dss_signature(der)
    return i2b(r) + i2b(s)


def openssl_verifies(public: bytes, digest: bytes, raw_sig: bytes) -> bool:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
    der = utils.encode_dss_signature(int.from_bytes(raw_sig[:32], "big"),
                                     int.from_bytes(raw_sig[32:], "big"))
    try:
        key.verify(der, digest, PREHASHED)
        return True
    except InvalidSignature:
        return False


def check(cases: list[Case]) -> dict[str, str]:
    answers = vectors.run_on_micropython(cases)
    bad = vectors.mismatches(cases, answers)
    assert not bad, f"{len(bad)} of {len(cases)} cases differ:\n" + "\n".join(bad)
    return answers


def test_openssl_keys_and_signatures_verify_on_micropython():
    cases = []
    for i in range(CASES):
        key = ec.generate_private_key(ec.SECP256R1())
        public = raw_public(key)
        digest = hashlib.sha256(os.urandom(1 + i * 7)).digest()
        sig = der_to_raw(key.sign(digest, PREHASHED))
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        other = raw_public(ec.generate_private_key(ec.SECP256R1()))
        d = key.private_numbers().private_value
        cases += [
            Case(f"{i}/public", "public", (i2b(d),), public.hex()),
            vectors.verify_case(f"{i}/valid", public, digest, sig, True),
            vectors.verify_case(f"{i}/high-low-s", public, digest, i2b(r) + i2b(N - s), True),
            vectors.verify_case(f"{i}/other-digest", public, hashlib.sha256(digest).digest(), sig,
                                False),
            vectors.verify_case(f"{i}/other-key", other, digest, sig, False),
            vectors.verify_case(f"{i}/r-s-swapped", public, digest, i2b(s) + i2b(r), False),
        ]
    check(cases)


def test_micropython_signatures_verify_with_openssl():
    rng = random.Random(0x5B256)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(CASES - 4)]
    # Plus extreme private keys.
    keys += [ec.derive_private_key(d, ec.SECP256R1()) for d in (1, 2, N - 2, N - 1)]
    cases, expected = [], {}
    for i, key in enumerate(keys):
        d = key.private_numbers().private_value
        digest = rng.randbytes(32) if i % 4 else hashlib.sha256(b"firmware %d" % i).digest()
        # cryptography's deterministic ECDSA is RFC 6979 too: same r and s.
        expected_sig = der_to_raw(key.sign(digest, DETERMINISTIC))
        cases.append(Case(f"{i}/sign", "sign", (i2b(d), digest), expected_sig.hex()))
        expected[f"{i}/sign"] = (raw_public(key), digest)
    answers = check(cases)
    for case_id, (public, digest) in expected.items():
        assert openssl_verifies(public, digest, bytes.fromhex(answers[case_id])), case_id


def test_micropython_keypairs_work_with_openssl():
    cases = [Case(f"{i}/keypair", "keypair", (), "") for i in range(8)]
    answers = vectors.run_on_micropython(cases)
    privates = set()
    for case in cases:
        answer = answers[case.id]
        assert ":" in answer, (case.id, answer)
        private_hex, public_hex = answer.split(":")
        d = int(private_hex, 16)
        assert len(private_hex) == 64 and 0 < d < N
        key = ec.derive_private_key(d, ec.SECP256R1())
        assert raw_public(key).hex() == public_hex, case.id
        # The device's public key, as bytes, works with OpenSSL.
        digest = hashlib.sha256(private_hex.encode()).digest()
        assert openssl_verifies(bytes.fromhex(public_hex), digest,
                                der_to_raw(key.sign(digest, PREHASHED)))
        privates.add(d)
    assert len(privates) == len(cases)


def test_crafted_edge_cases_agree_with_openssl():
    # Every crafted case carries OpenSSL's own verdict (checked when made).
    cases = vectors.crafted_cases()
    assert {c.expected for c in cases} == {"0", "1"}
    check(cases)
