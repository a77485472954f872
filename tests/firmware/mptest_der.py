# MicroPython unit tests for sbd.der (run by mp_runner.py, never CPython).
from binascii import unhexlify

from sbd import der
from mphelpers import raises


def h(s):
    return unhexlify(s.replace(" ", ""))




# --- writers ------------------------------------------------------------------

def test_length_forms():
    assert der.length(0) == h("00")
    assert der.length(127) == h("7f")
    assert der.length(128) == h("81 80")
    assert der.length(255) == h("81 ff")
    assert der.length(256) == h("82 01 00")
    assert der.length(65535) == h("82 ff ff")
    assert der.length(65536) == h("83 01 00 00")
    assert raises(der.length, -1)


def test_tlv_long_body():
    body = bytes(200)
    assert der.tlv(0x04, body) == h("04 81 c8") + body
    assert der.octet_string(bytes(300))[:4] == h("04 82 01 2c")
    assert der.tlv(0x30, b"") == h("30 00")


def test_integer_ints():
    assert der.integer(0) == h("02 01 00")
    assert der.integer(1) == h("02 01 01")
    assert der.integer(127) == h("02 01 7f")
    assert der.integer(128) == h("02 02 00 80")
    assert der.integer(255) == h("02 02 00 ff")
    assert der.integer(256) == h("02 02 01 00")
    assert der.integer(0x7FFF) == h("02 02 7f ff")
    assert der.integer(0x8000) == h("02 03 00 80 00")
    assert der.integer(1 << 256) == h("02 21 01") + bytes(32)
    assert raises(der.integer, -1)


def test_integer_bytes_are_unsigned_and_minimal():
    assert der.integer(b"") == h("02 01 00")
    assert der.integer(bytes(32)) == h("02 01 00")
    assert der.integer(b"\x00\x00\x01") == h("02 01 01")
    assert der.integer(b"\x00\x80") == h("02 02 00 80")
    assert der.integer(b"\x80") == h("02 02 00 80")
    assert der.integer(bytearray(b"\x7f\xff")) == h("02 02 7f ff")
    assert der.integer(b"\xff" * 32) == h("02 21 00") + b"\xff" * 32


def test_sequence_and_set_of():
    assert der.sequence() == h("30 00")
    assert der.sequence(der.integer(1), der.null()) == h("30 05 02 01 01 05 00")
    # DER sorts SET OF by encoding, whatever order the parts come in.
    assert der.set_of(der.integer(2), der.integer(1)) == h("31 06 02 01 01 02 01 02")
    assert der.set_of(der.null(), der.integer(5)) == h("31 05 02 01 05 05 00")


def test_oid():
    assert der.oid("1.2.840.10045.2.1") == h("06 07 2a 86 48 ce 3d 02 01")
    assert der.oid("1.2.840.10045.3.1.7") == h("06 08 2a 86 48 ce 3d 03 01 07")
    assert der.oid("1.2.840.10045.4.3.2") == h("06 08 2a 86 48 ce 3d 04 03 02")
    assert der.oid("2.5.4.3") == h("06 03 55 04 03")
    assert der.oid("2.999.3") == h("06 03 88 37 03")    # X.690 8.19.5 example
    assert der.oid("0.0") == h("06 01 00")
    assert der.oid("1.3.6.1.4.1.128") == h("06 07 2b 06 01 04 01 81 00")
    assert der.OID_EC_PUBLIC_KEY == der.oid("1.2.840.10045.2.1")
    assert der.OID_PRIME256V1 == der.oid("1.2.840.10045.3.1.7")
    assert der.OID_ECDSA_WITH_SHA256 == der.oid("1.2.840.10045.4.3.2")
    assert der.OID_COMMON_NAME == der.oid("2.5.4.3")
    for bad in ("", "1", "3.1", "1.40", "0.40", "1.2.x", "1..2", "1.-2", "-1.2"):
        assert raises(der.oid, bad), bad


def test_strings_bits_and_context():
    assert der.utf8_string("ab") == h("0c 02 61 62")
    assert der.utf8_string("\u00fc") == h("0c 02 c3 bc")
    assert der.utf8_string("") == h("0c 00")
    assert der.printable_string("Ab 1-?") == h("13 06 41 62 20 31 2d 3f")
    for bad in ("a@b", "a*", "x_y", "\u00fc", "a&b"):
        assert raises(der.printable_string, bad), bad
    assert der.octet_string(b"\x01\x02") == h("04 02 01 02")
    assert der.null() == h("05 00")
    assert der.bit_string(b"\x04\x05") == h("03 03 00 04 05")
    assert der.bit_string(b"\x80", 7) == h("03 02 07 80")
    assert der.bit_string(b"") == h("03 01 00")
    assert raises(der.bit_string, b"\x80", 8)
    assert raises(der.bit_string, b"", 1)
    assert der.context(0, b"") == h("a0 00")
    assert der.context(3, der.integer(2)) == h("a3 03 02 01 02")
    assert der.context(1, b"\x01", False) == h("81 01 01")
    assert raises(der.context, 31, b"")


def test_ecdsa_signature():
    r = b"\x80" + bytes(31)                 # high bit: needs a 0x00
    s = bytes(31) + b"\x01"                 # leading zeros: stripped
    assert der.ecdsa_signature(r + s) == h("30 26 02 21 00 80") + bytes(31) + h("02 01 01")
    low = b"\x7f" * 32
    sig = der.ecdsa_signature(low + b"\xff" * 32)
    assert sig == h("30 45 02 20") + low + h("02 21 00") + b"\xff" * 32
    assert len(der.ecdsa_signature(b"\xff" * 64)) == 72  # the largest
    assert raises(der.ecdsa_signature, bytes(63))
    assert raises(der.ecdsa_signature, bytes(65))


def test_ecdsa_signature_rs_round_trips():
    for rs in (bytes(64), b"\xff" * 64, b"\x80" + bytes(62) + b"\x01",
               bytes(31) + b"\x01" + b"\x7f" * 32, bytes(range(64))):
        assert der.ecdsa_signature_rs(der.ecdsa_signature(rs)) == rs
    assert der.ecdsa_signature_rs(memoryview(der.ecdsa_signature(b"\x01" * 64))) == b"\x01" * 64


def test_ecdsa_signature_rs_rejects_malformed():
    good = der.ecdsa_signature(b"\x80" * 64)
    i1 = der.integer(1)
    bad = [
        b"", good[:-1], good + b"\x00", der.sequence(i1), der.sequence(i1, i1, i1),
        der.sequence(i1, der.null()), der.set_of(i1, i1),
        der.sequence(der.tlv(0x02, b""), i1),                   # empty INTEGER
        der.sequence(der.tlv(0x02, b"\x80"), i1),               # negative
        der.sequence(der.tlv(0x02, b"\x00\x01"), i1),           # not minimal
        der.sequence(i1, der.integer(1 << 256)),                 # too big
        der.sequence(i1, der.tlv(0x02, b"\x01" + bytes(32))),
        h("30 80 02 01 01 02 01 01 00 00"),                      # indefinite
    ]
    for b in bad:
        assert raises(der.ecdsa_signature_rs, b), b


# --- reader -------------------------------------------------------------------

def test_read_tlv_round_trips():
    for size in (0, 1, 127, 128, 255, 256, 1000):
        enc = der.octet_string(bytes(size))
        assert der.read_tlv(enc, 0) == (0x04, len(enc) - size, len(enc))
    enc = der.sequence(der.integer(300), der.utf8_string("x"), der.null())
    tag, pos, end = der.read_tlv(enc, 0)
    assert (tag, pos, end) == (0x30, 2, len(enc))
    seen = []
    while pos < end:
        tag, start, stop = der.read_tlv(enc, pos, end)
        seen.append((tag, enc[start:stop]))
        pos = stop
    assert seen == [(0x02, b"\x01\x2c"), (0x0C, b"x"), (0x05, b"")]
    assert der.read_tlv(bytearray(enc), 2) == (0x02, 4, 6)
    assert der.read_tlv(memoryview(enc), 2) == (0x02, 4, 6)


def test_read_tlv_malformed_raises_value_error():
    bad = [
        b"",                        # empty
        h("30"),                    # no length
        h("04 01"),                 # content missing
        h("04 05 01 02"),           # truncated content
        h("30 80 00 00"),           # indefinite length
        h("04 81"),                 # long form, length bytes missing
        h("04 82 01"),
        h("04 84 ff ff ff ff 00"),  # length far beyond the buffer
        h("04 85 01 00 00 00 00"),  # more length bytes than we accept
        h("04 ff 00"),              # reserved 0xff
        h("04 81 05 00 00 00 00 00"),  # non-minimal: long form for < 128
        h("04 82 00 80") + bytes(128),  # non-minimal: leading zero
        h("1f 01 01 00"),           # multi-byte tag
    ]
    for b in bad:
        assert raises(der.read_tlv, b, 0), b
    enc = der.integer(5)
    assert raises(der.read_tlv, enc, len(enc))  # at the end
    assert raises(der.read_tlv, enc, -1)
    assert raises(der.read_tlv, enc, 99)
    assert raises(der.read_tlv, enc, 0, 2)      # element overruns its parent
    assert raises(der.read_tlv, None, 0)
    assert raises(der.read_tlv, "30 00", 0)


def test_read_tlv_every_truncation():
    enc = der.sequence(der.octet_string(bytes(300)), der.integer(1 << 100))
    assert der.read_tlv(enc, 0)[2] == len(enc)
    for n in range(len(enc)):
        assert raises(der.read_tlv, enc[:n], 0), n


def test_cert_readers_reject_non_certificates():
    not_certs = [
        b"", b"\x30", h("30 00"), h("30 80 00 00"), der.integer(1),
        der.sequence(der.sequence()),
        der.sequence(der.sequence(der.integer(1))),
        der.sequence(der.null()) + b"\x00",
        bytes(64), b"\xff" * 64,
    ]
    for b in not_certs:
        for fn in READERS:
            assert raises(fn, b), b
    for fn in READERS:
        assert raises(fn, None)
        assert raises(fn, 5)


READERS = (der.cert_public_key, der.cert_not_after, der.cert_tbs_and_signature)
SIG = b"\x01" * 64


def _cert(spki, not_after, version=True, alg=None, signature=None, inner_alg=None):
    """A certificate's shape, enough for the readers (nothing is signed)."""
    alg = alg or der.sequence(der.OID_ECDSA_WITH_SHA256)
    dn = der.sequence(der.set_of(der.sequence(der.OID_COMMON_NAME, der.utf8_string("x"))))
    tbs = der.sequence(
        der.context(0, der.integer(2)) if version else b"",
        der.integer(7), inner_alg or alg, dn,
        der.sequence(der.tlv(0x17, b"200101000000Z"), not_after),
        dn, spki,
    )
    if signature is None:
        signature = der.bit_string(der.ecdsa_signature(SIG))
    return der.sequence(tbs, alg, signature)


POINT = b"\x04" + bytes(range(1, 65))
P256_SPKI = der.sequence(der.sequence(der.OID_EC_PUBLIC_KEY, der.OID_PRIME256V1),
                         der.bit_string(POINT))


def test_cert_readers_on_built_shape():
    utc = der.tlv(0x17, b"300102030405Z")
    for version in (True, False):
        cert = _cert(P256_SPKI, utc, version)
        assert der.cert_public_key(cert) == POINT
        assert der.cert_not_after(cert) == "20300102030405Z"
        tbs, rs = der.cert_tbs_and_signature(cert)
        assert rs == SIG
        tag, _, end = der.read_tlv(tbs, 0)
        assert (tag, end) == (0x30, len(tbs))
        assert cert[der.read_tlv(cert, 0)[1]:].startswith(tbs)
        assert der.cert_tbs_and_signature(bytearray(cert)) == (tbs, rs)
    assert der.cert_not_after(_cert(P256_SPKI, der.tlv(0x17, b"491231235959Z"))) == "20491231235959Z"
    assert der.cert_not_after(_cert(P256_SPKI, der.tlv(0x17, b"500101000000Z"))) == "19500101000000Z"
    assert der.cert_not_after(_cert(P256_SPKI, der.tlv(0x18, b"20510630120000Z"))) == "20510630120000Z"
    assert der.cert_not_after(_cert(P256_SPKI, der.tlv(0x18, b"99991231235959Z"))) == "99991231235959Z"


def test_cert_readers_reject_bad_fields():
    good_time = der.tlv(0x17, b"300102030405Z")
    for t in (b"3001020304Z", b"300102030405", b"3001020304051", b"30010203040aZ",
              b"301302030405Z", b"300100030405Z", b"300102250405Z", b"300102036005Z",
              b"300102030460Z", b"300102030405+0100", b"20300102030405.5Z"):
        assert raises(der.cert_not_after, _cert(P256_SPKI, der.tlv(0x17, t))), t
        assert raises(der.cert_not_after, _cert(P256_SPKI, der.tlv(0x18, b"20" + t))), t
    assert raises(der.cert_not_after, _cert(P256_SPKI, der.tlv(0x04, b"300102030405Z")))
    assert raises(der.cert_not_after, _cert(P256_SPKI, der.tlv(0x18, b"300102030405Z")))
    p384 = der.sequence(der.sequence(der.OID_EC_PUBLIC_KEY, der.oid("1.3.132.0.34")),
                        der.bit_string(b"\x04" + bytes(96)))
    compressed = der.sequence(der.sequence(der.OID_EC_PUBLIC_KEY, der.OID_PRIME256V1),
                              der.bit_string(b"\x02" + bytes(32)))
    unused = der.sequence(der.sequence(der.OID_EC_PUBLIC_KEY, der.OID_PRIME256V1),
                          der.bit_string(POINT[:-1] + b"\x80", 7))
    rsa = der.sequence(der.sequence(der.oid("1.2.840.113549.1.1.1"), der.null()),
                       der.bit_string(der.sequence(der.integer(1 << 2047), der.integer(65537))))
    extra = der.sequence(der.sequence(der.OID_EC_PUBLIC_KEY, der.OID_PRIME256V1),
                         der.bit_string(POINT), der.null())
    for spki in (p384, compressed, unused, rsa, extra, der.null(), der.sequence()):
        assert raises(der.cert_public_key, _cert(spki, good_time)), spki
    cert = _cert(P256_SPKI, good_time)
    for fn in READERS:
        assert raises(fn, cert + b"\x00")                  # trailing data
    sig = der.ecdsa_signature(SIG)
    for alg in (der.sequence(der.OID_ECDSA_WITH_SHA256, der.null()),
                der.sequence(der.oid("1.2.840.10045.4.3.3")),  # ecdsa-with-SHA384
                der.sequence(der.oid("1.3.101.112")),          # Ed25519
                der.null()):
        assert raises(der.cert_tbs_and_signature, _cert(P256_SPKI, good_time, alg=alg)), alg
        # The TBS's copy of the algorithm must be the same (RFC 5280 4.1.1.2).
        assert raises(der.cert_tbs_and_signature, _cert(P256_SPKI, good_time, inner_alg=alg))
    # A TBS that stops before the key is no certificate.
    short = der.sequence(der.sequence(der.integer(7), der.sequence(der.OID_ECDSA_WITH_SHA256)),
                         der.sequence(der.OID_ECDSA_WITH_SHA256),
                         der.bit_string(der.ecdsa_signature(SIG)))
    for fn in READERS:
        assert raises(fn, short)
    for signature in (der.bit_string(sig[:-1] + b"\x80", 7), der.octet_string(sig),
                      der.bit_string(b""), der.bit_string(sig + b"\x00"),
                      der.bit_string(der.sequence(der.integer(1)))):
        bad = _cert(P256_SPKI, good_time, signature=signature)
        assert raises(der.cert_tbs_and_signature, bad), signature
        assert der.cert_public_key(bad) == POINT             # other fields still read


def test_cert_readers_every_truncation_and_mutation():
    cert = _cert(P256_SPKI, der.tlv(0x18, b"20510630120000Z"))
    for n in range(len(cert)):
        for fn in READERS:
            assert raises(fn, cert[:n]), n
    # Any single changed byte: a result or ValueError, nothing else.
    for i in range(len(cert)):
        for v in (0x00, 0x80, 0xFF, cert[i] ^ 0x01):
            b = bytearray(cert)
            b[i] = v
            for fn in READERS:
                try:
                    fn(b)
                except ValueError:
                    pass
