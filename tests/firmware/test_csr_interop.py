"""Interop of the firmware's PKCS#10 requests and certificate readers
(sbd.csr, sbd.der, run under MicroPython with the device-sized heap) with
`cryptography` (OpenSSL) on the host.

ONE MicroPython process plays the device for the whole module, the way a
provisioning station would talk to it:

1. The device makes a key pair and a certificate request per common name,
   and prints them (base64, one a line), then READY.
2. The host checks the requests, issues certificates for the device's key
   (and others, with chosen notAfter dates, key types and damage) and sends
   them back on stdin.
3. The device answers, per certificate, what cert_public_key,
   cert_not_after and cert_tbs_and_signature return, whether the CA's
   signature verifies with p256.verify, and how the readers behave on every
   truncation and on single-byte changes (only results or ValueError are
   allowed).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from sbd_harness.emulator.micropython import micropython_command

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds for the whole device session

COMMON_NAMES = [
    "a1b2c3d4e5f6",                    # a 12-hex-char device ID (from the MAC)
    "sbd-esp32-0123456789ab",
    "Gerät Küche – 温度計 ✓",          # non-ASCII: UTF8String, multi-byte
    "d" * 64,                          # ub-common-name
]

DEVICE_SCRIPT = r'''
import sys
from binascii import a2b_base64, b2a_base64, hexlify, unhexlify
from hashlib import sha256
from sbd import csr, der, p256


def b64(b):
    return b2a_base64(b).decode().strip()


def outcome(fn, cert):
    try:
        value = fn(cert)
    except ValueError:
        return "ValueError"
    except Exception as e:
        return "EXC:" + type(e).__name__
    if isinstance(value, bytes):
        return hexlify(value).decode()
    return value if isinstance(value, str) else "ok"


def kinds(fn, certs):
    seen = set()
    for cert in certs:
        r = outcome(fn, cert)
        seen.add(r if r == "ValueError" or r.startswith("EXC:") else "ok")
    return ",".join(sorted(seen))


def truncations(cert):
    for n in range(len(cert)):
        yield cert[:n]


def mutations(cert):
    b = bytearray(cert)
    for i in range(len(b)):
        old = b[i]
        for v in (0x00, 0x80, 0xFF, old ^ 0x01):
            b[i] = v
            yield b
        b[i] = old


def tbs_and_signature(cert):
    tbs, rs = der.cert_tbs_and_signature(cert)
    return hexlify(sha256(tbs).digest()).decode() + ":" + hexlify(rs).decode()


def verify(ca_key, cert):
    tbs, rs = der.cert_tbs_and_signature(cert)
    return "1" if p256.verify(ca_key, sha256(tbs).digest(), rs) else "0"


priv, pub = p256.generate_keypair()
print("KEY", b64(pub))
for i, cn_hex in enumerate(sys.argv[1:]):
    print("CSR", i, b64(csr.build_csr(priv, pub, unhexlify(cn_hex).decode("utf-8"))))
print("READY")
ca_key = None                       # the first certificate sent is the CA's
fns = (der.cert_public_key, der.cert_not_after, der.cert_tbs_and_signature)
while True:
    line = sys.stdin.readline()
    if not line.strip():
        break
    name, data = line.split()
    cert = a2b_base64(data)
    if ca_key is None:
        ca_key = der.cert_public_key(cert)
    print("CERT", name,
          outcome(der.cert_public_key, cert), outcome(der.cert_not_after, cert),
          outcome(tbs_and_signature, cert), outcome(lambda c: verify(ca_key, c), cert),
          "+".join(kinds(fn, truncations(cert)) for fn in fns),
          "+".join(kinds(fn, [cert + b"\x00"]) for fn in fns),
          "+".join(kinds(fn, mutations(cert)) for fn in fns))
print("DONE")
'''


@dataclass
class CertAnswer:
    public_key: str     # hex, or "ValueError" / "EXC:<type>"
    not_after: str
    tbs_signature: str  # sha256(TBSCertificate) hex ":" r || s hex
    verified: str       # "1" if the CA's signature verifies on the device
    truncations: str    # outcome kinds of the three readers on every prefix
    trailing: str       # ... with one byte appended
    mutations: str      # ... with one byte changed


@dataclass
class Session:
    public_key: bytes
    csrs: list[bytes]
    certs: dict[str, bytes]
    answers: dict[str, CertAnswer]


def raw_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def make_cert(subject_key, not_after: dt.datetime, *, issuer_key=None, cn: str = "device",
              not_before: dt.datetime = utc(2024, 1, 1), extensions: bool = False
              ) -> x509.Certificate:
    issuer_key = issuer_key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SBD Test CA")]))
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if extensions:
        builder = (
            builder
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{cn}.devices.example")]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key),
                           critical=False)
        )
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def tbs_signature(cert: x509.Certificate) -> str:
    """What the device's cert_tbs_and_signature should give, as printed."""
    r, sig_s = utils.decode_dss_signature(cert.signature)
    raw = r.to_bytes(32, "big") + sig_s.to_bytes(32, "big")
    return hashlib.sha256(cert.tbs_certificate_bytes).hexdigest() + ":" + raw.hex()


def host_certificates(csrs: list[bytes]) -> tuple[dict[str, bytes], dict[str, tuple]]:
    """Certificates to send to the device (the CA's first), and what the
    device should answer for each: public key, notAfter, TBS digest and
    signature, CA signature verified ("ValueError" where it must refuse)."""
    ca = ec.generate_private_key(ec.SECP256R1())
    device_key = x509.load_der_x509_csr(csrs[0]).public_key()
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    device_hex, other_hex = raw_point(device_key).hex(), raw_point(other).hex()
    certs: dict[str, bytes] = {}
    expected: dict[str, tuple] = {}

    def add(name, cert, public_key, not_after, verified):
        certs[name] = der_of(cert)
        expected[name] = (public_key, not_after, tbs_signature(cert), verified)

    def add_bad(name, data):
        certs[name] = data
        expected[name] = ("ValueError",) * 4

    add("ca", make_cert(ca.public_key(), utc(2040, 1, 1), issuer_key=ca, cn="SBD Test CA"),
        raw_point(ca.public_key()).hex(), "20400101000000Z", "1")
    # The device's own key, issued from its request: UTCTime and GeneralizedTime.
    add("device-2030", make_cert(device_key, utc(2030, 6, 15, 12, 34, 56), issuer_key=ca,
                                 cn="a1b2c3d4e5f6", extensions=True),
        device_hex, "20300615123456Z", "1")
    add("device-2051", make_cert(device_key, utc(2051, 1, 2, 3, 4, 5), issuer_key=ca,
                                 cn="a1b2c3d4e5f6"),
        device_hex, "20510102030405Z", "1")
    # Another P-256 key; the UTCTime century boundary (RFC 5280 4.1.2.5).
    add("other-1999", make_cert(other, utc(1999, 12, 31, 23, 59, 59), not_before=utc(1990, 1, 1)),
        other_hex, "19991231235959Z", "0")
    add("other-2049", make_cert(other, utc(2049, 12, 31, 23, 59, 59), issuer_key=ca),
        other_hex, "20491231235959Z", "1")
    add("other-2050", make_cert(other, utc(2050, 1, 1)), other_hex, "20500101000000Z", "0")
    # Keys that are not P-256: no public key, but the rest still reads.
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    add("p384-key", make_cert(p384, utc(2030, 1, 1), issuer_key=ca),
        "ValueError", "20300101000000Z", "1")
    edkey = ed25519.Ed25519PrivateKey.generate().public_key()
    add("ed25519-key", make_cert(edkey, utc(2030, 1, 1)), "ValueError", "20300101000000Z", "0")
    # Signed with Ed25519: key and date read, the signature is refused.
    by_ed = make_cert(other, utc(2031, 2, 3, 4, 5, 6),
                      issuer_key=ed25519.Ed25519PrivateKey.generate())
    certs["ed25519-ca"] = der_of(by_ed)
    expected["ed25519-ca"] = (other_hex, "20310203040506Z", "ValueError", "ValueError")
    # Not certificates at all.
    add_bad("pem-text", make_cert(other, utc(2030, 1, 1)).public_bytes(serialization.Encoding.PEM))
    add_bad("csr", csrs[0])
    good = certs["device-2030"]
    add_bad("half", good[: len(good) // 2])
    add_bad("two-certs", good + good)
    add_bad("indefinite", good[:1] + b"\x80" + good[4:])      # 30 80 ...
    add_bad("huge-length", good[:1] + b"\x84\xff\xff" + good[4:])  # 30 84 ff ff ..: far past the end
    return certs, expected


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Session, dict]:
    script = tmp_path_factory.mktemp("csr") / "device.py"
    script.write_text(DEVICE_SCRIPT)
    env = dict(os.environ)
    env["MICROPYPATH"] = str(ROOT / "firmware" / "lib")
    args = [cn.encode("utf-8").hex() for cn in COMMON_NAMES]
    proc = subprocess.Popen(micropython_command() + [str(script), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(TIMEOUT, proc.kill)  # a hung device fails, not blocks
    watchdog.start()
    try:
        assert proc.stdout is not None
        public_key, csrs = b"", []
        for line in proc.stdout:
            word, *rest = line.split()
            if word == "KEY":
                public_key = base64.b64decode(rest[0])
            elif word == "CSR":
                assert int(rest[0]) == len(csrs)
                csrs.append(base64.b64decode(rest[1]))
            elif word == "READY":
                break
        assert len(csrs) == len(COMMON_NAMES), proc.stderr.read() if proc.stderr else ""
        certs, expected = host_certificates(csrs)
        lines = "".join(f"{name} {base64.b64encode(d).decode()}\n" for name, d in certs.items())
        out, err = proc.communicate(lines + "\n", timeout=TIMEOUT)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and out.splitlines()[-1:] == ["DONE"], (out + err)[-3000:]
    answers = {}
    for line in out.splitlines():
        if line.startswith("CERT "):
            _, name, *fields = line.split()
            answers[name] = CertAnswer(*fields)
    return Session(public_key, csrs, certs, answers), expected


def test_device_requests_are_valid_pkcs10(session):
    s, _ = session
    assert len(s.public_key) == 65 and s.public_key[0] == 4
    for cn, data in zip(COMMON_NAMES, s.csrs):
        req = x509.load_der_x509_csr(data)   # strict DER parser (rust-asn1)
        assert req.is_signature_valid, cn
        assert req.public_bytes(serialization.Encoding.DER) == data
        assert req.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
        assert isinstance(req.signature_hash_algorithm, hashes.SHA256)
        key = req.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert raw_point(key) == s.public_key
        assert req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        assert len(req.subject.rdns) == 1
        # Same bytes as OpenSSL's encoding of CN=cn (a UTF8String).
        expected_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        assert req.subject.public_bytes() == expected_name.public_bytes()
        assert len(list(req.attributes)) == 0 and len(req.extensions) == 0
        # The signature is a DER Ecdsa-Sig-Value with minimal INTEGERs.
        r, sig_s = utils.decode_dss_signature(req.signature)
        assert utils.encode_dss_signature(r, sig_s) == req.signature


def test_ca_can_issue_from_device_requests(session):
    s, _ = session
    req = x509.load_der_x509_csr(s.csrs[0])
    cert = x509.load_der_x509_certificate(s.certs["device-2030"])
    assert cert.public_key() == req.public_key()
    assert cert.not_valid_after_utc == utc(2030, 6, 15, 12, 34, 56)


def test_time_encodings_are_the_ones_meant(session):
    s, _ = session
    # RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
    assert b"\x17\x0d300615123456Z" in s.certs["device-2030"]
    assert b"\x18\x0f20510102030405Z" in s.certs["device-2051"]
    assert b"\x17\x0d991231235959Z" in s.certs["other-1999"]
    assert b"\x17\x0d491231235959Z" in s.certs["other-2049"]
    assert b"\x18\x0f20500101000000Z" in s.certs["other-2050"]


def test_device_reads_public_key_and_not_after(session):
    s, expected = session
    assert set(s.answers) == set(expected)
    for name, want in expected.items():
        answer = s.answers[name]
        got = (answer.public_key, answer.not_after, answer.tbs_signature, answer.verified)
        assert got == want, name
    assert s.answers["device-2030"].public_key == s.public_key.hex()
    assert s.answers["device-2051"].public_key == s.public_key.hex()


def test_device_rejects_truncated_and_damaged_certificates(session):
    s, _ = session
    for name, answer in s.answers.items():
        # Every proper prefix: ValueError from every reader (but a prefix of
        # two certificates back to back is the first one, which reads).
        if name == "two-certs":
            assert answer.truncations == "+".join(["ValueError,ok"] * 3), name
        else:
            assert answer.truncations == "+".join(["ValueError"] * 3), name
        assert answer.trailing == "+".join(["ValueError"] * 3), name
        # One byte changed: a result or ValueError, never another exception.
        for kinds in answer.mutations.split("+"):
            assert set(kinds.split(",")) <= {"ok", "ValueError"}, (name, answer.mutations)
    # And a change in the structure is noticed somewhere.
    assert "ValueError" in s.answers["device-2030"].mutations
