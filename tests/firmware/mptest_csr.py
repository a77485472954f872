# MicroPython unit tests for sbd.csr (run by mp_runner.py, never CPython).
from binascii import unhexlify
from hashlib import sha256

from sbd import csr, der, p256
from mphelpers import raises

# RFC 6979 A.2.5 test key (never a device key).
KEY = unhexlify("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
PUB = unhexlify(
    "04"
    "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
)
# The same request made by OpenSSL (cryptography 50:
# CertificateSigningRequestBuilder, CN "a1b2c3d4e5f6", KEY, SHA-256,
# ecdsa_deterministic=True): RFC 6979 nonces make it byte-for-byte equal.
EXPECTED = unhexlify(
    "3081d2307902010030173115301306035504030c0c613162326333643465356636"
    "3059301306072a8648ce3d020106082a8648ce3d03010703420004"
    "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"
    "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
    "a000300a06082a8648ce3d040302034900304602210086c9ea5626faeee571362f"
    "54fc83cdc0d79a5d5c94ce466839a41f6adf041892022100d0e3cd82c860bf7176"
    "54185a1d4bc6f937833f0fe326af0dfda4799cae0a29af"
)




def children(buf, start, end):
    """(tag, start, end) of each element in buf[start:end]."""
    out = []
    while start < end:
        tag, s, e = der.read_tlv(buf, start, end)
        out.append((tag, s, e))
        start = e
    return out


def raw_signature(buf, start, end):
    """r || s (64 bytes) of a DER Ecdsa-Sig-Value in buf[start:end]."""
    tag, s, e = der.read_tlv(buf, start, end)
    assert tag == 0x30 and e == end
    parts = children(buf, s, e)
    assert [p[0] for p in parts] == [0x02, 0x02]
    out = b""
    for _, s, e in parts:
        v = buf[s:e]
        assert len(v) == 1 or v[0] or v[1] & 0x80   # minimal
        assert not v[0] & 0x80                      # positive
        v = v[-32:] if len(v) > 32 else v
        out += bytes(32 - len(v)) + v
    return out


def check_csr(req, pub, common_name):
    """Walks a CertificationRequest and checks every field; returns its parts."""
    tag, s, e = der.read_tlv(req, 0)
    assert tag == 0x30 and e == len(req)
    top = children(req, s, e)
    assert [t for t, _, _ in top] == [0x30, 0x30, 0x03]
    _, info_s, info_e = top[0]
    info = req[s:info_e]                        # the whole encoding, to hash
    fields = children(req, info_s, info_e)
    assert [t for t, _, _ in fields] == [0x02, 0x30, 0x30, 0xA0]
    # version 0
    assert req[fields[0][1]:fields[0][2]] == b"\x00"
    # subject: one RDN with one CN attribute, a UTF8String
    rdns = children(req, fields[1][1], fields[1][2])
    assert len(rdns) == 1 and rdns[0][0] == 0x31
    atvs = children(req, rdns[0][1], rdns[0][2])
    assert len(atvs) == 1 and atvs[0][0] == 0x30
    oid_, value = children(req, atvs[0][1], atvs[0][2])
    assert oid_[0] == 0x06 and req[oid_[1]:oid_[2]] == der.OID_COMMON_NAME[2:]
    assert value[0] == 0x0C
    assert req[value[1]:value[2]] == common_name.encode("utf-8")
    # subjectPKInfo: id-ecPublicKey, prime256v1, the uncompressed point
    alg, key = children(req, fields[2][1], fields[2][2])
    assert req[alg[1]:alg[2]] == der.OID_EC_PUBLIC_KEY + der.OID_PRIME256V1
    assert key[0] == 0x03 and req[key[1]:key[2]] == b"\x00" + pub
    # attributes: [0] constructed, empty
    assert fields[3][1] == fields[3][2]
    # signatureAlgorithm: ecdsa-with-SHA256, parameters absent
    assert req[top[1][1]:top[1][2]] == der.OID_ECDSA_WITH_SHA256
    # signature: BIT STRING, no unused bits, DER Ecdsa-Sig-Value
    _, sig_s, sig_e = top[2]
    assert req[sig_s] == 0
    sig = raw_signature(req, sig_s + 1, sig_e)
    return info, sig


def test_known_answer_matches_openssl():
    assert p256.public_key(KEY) == PUB
    assert csr.build_csr(KEY, PUB, "a1b2c3d4e5f6") == EXPECTED


def test_structure_and_signature():
    for cn in ("a1b2c3d4e5f6", "sbd-device", "x", "Gr\u00fc\u00dfe \u6e29\u5ea6\u8a08", "d" * 64):
        req = csr.build_csr(KEY, PUB, cn)
        info, sig = check_csr(req, PUB, cn)
        digest = sha256(info).digest()
        assert p256.verify(PUB, digest, sig), cn
        assert sig == p256.sign(KEY, digest)
        assert not p256.verify(PUB, sha256(info + b"\x00").digest(), sig)
        # A request has a certificate's outer shape; the readers still refuse it.
        for fn in (der.cert_public_key, der.cert_not_after, der.cert_tbs_and_signature):
            assert raises(fn, req), fn


def test_long_common_name_uses_long_lengths():
    cn = "\u00e9" * 64                           # 128 bytes of UTF-8
    req = csr.build_csr(KEY, PUB, cn)
    assert req[:2] == b"\x30\x82"
    info, sig = check_csr(req, PUB, cn)
    assert p256.verify(PUB, sha256(info).digest(), sig)


def test_generated_key():
    priv, pub = p256.generate_keypair()
    req = csr.build_csr(priv, pub, "0123456789ab")
    info, sig = check_csr(req, pub, "0123456789ab")
    assert p256.verify(pub, sha256(info).digest(), sig)
    assert not p256.verify(PUB, sha256(info).digest(), sig)


def test_deterministic():
    assert csr.build_csr(KEY, PUB, "abc") == csr.build_csr(KEY, PUB, "abc")
    assert csr.build_csr(KEY, PUB, "abc") != csr.build_csr(KEY, PUB, "abd")


def test_rejects_bad_inputs():
    for cn in ("", "d" * 65, None, b"abc", 5):
        assert raises(csr.build_csr, KEY, PUB, cn), cn
    for pub in (PUB[:-1], PUB + b"\x00", b"\x02" + PUB[1:33], b""):
        assert raises(csr.build_csr, KEY, pub, "x"), pub
    for key in (bytes(32), b"\xff" * 32, KEY[:-1]):
        assert raises(csr.build_csr, key, PUB, "x"), key
