"""Published P-256 test vectors, run on the firmware's ECDSA (sbd.p256) under
MicroPython with the device-sized heap: one MicroPython process for them all.

Sources, all from the `cryptography_vectors` package:
  * NIST CAVP SigVer (FIPS 186-3: P-256 with SHA-1/224/256/384/512; FIPS
    186-2: P-256 with SHA-1), every case with its expected pass/fail;
  * NIST CAVP SigGen.txt (private key, public key, published r and s) and
    KeyPair.rsp: public_key(d) and verify of the published signature;
  * NIST CAVP PKV.rsp: public-key validity (off-curve, out-of-range);
  * RFC 6979 A.2.5 (P-256) as shipped for OpenSSL's tests: exact deterministic
    signatures for SHA-256, verify results for every hash.
Hashes other than SHA-256 reach the 32-byte-digest API as FIPS 186-4 6.4's
e (see p256_vectors.digest32).

Wycheproof's ecdsa_secp256r1_sha256_test.json is not in `cryptography_vectors`
(cryptography reads Wycheproof from a separate checkout), so it is not used
here; tests/test_p256_interop.py crafts the special cases it is known for
(x(R) >= n, sums at infinity, additions that must double) with OpenSSL as the
reference.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import p256_vectors as vectors  # noqa: E402

SOURCES = {
    "sigver": vectors.sigver_cases,
    "siggen": vectors.siggen_cases,
    "keypair": vectors.keypair_cases,
    "pkv": vectors.pkv_cases,
    "rfc6979": vectors.rfc6979_cases,
}


@pytest.fixture(scope="module")
def cases() -> dict[str, list[vectors.Case]]:
    return {name: make() for name, make in SOURCES.items()}


@pytest.fixture(scope="module")
def answers(cases) -> dict[str, str]:
    everything = [case for group in cases.values() for case in group]
    return vectors.run_on_micropython(everything)


def test_the_vector_files_were_found_and_parsed(cases):
    sigver = cases["sigver"]
    sha256 = [c for c in sigver if "/P-256,SHA-256/" in c.id]
    assert len(sha256) == 15                  # FIPS 186-3 SigVer, P-256,SHA-256
    assert {c.expected for c in sha256} == {"0", "1"}
    assert len(sigver) == 90
    assert len(cases["siggen"]) >= 2 * 15 * 5
    assert len(cases["keypair"]) == 20
    assert len(cases["pkv"]) == 2 * 24
    ops = {c.op for c in cases["rfc6979"]}
    assert ops == {"public", "sign", "verify"}
    assert len([c for c in cases["rfc6979"] if c.op == "sign"]) == 2   # "sample", "test"


@pytest.mark.parametrize("source", list(SOURCES))
def test_vectors_on_micropython(source, cases, answers):
    group = cases[source]
    bad = vectors.mismatches(group, answers)
    assert not bad, f"{len(bad)} of {len(group)} {source} cases differ:\n" + "\n".join(bad)
