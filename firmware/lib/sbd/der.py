# Minimal DER (ASN.1 Distinguished Encoding Rules, ITU-T X.690) for the device.
#
# What it is for: the device makes its own identity, a P-256 key pair whose
# private half never leaves it, and asks for a certificate with a PKCS#10
# request (sbd.csr); then it reads back, from the X.509 certificate it is
# given, the public key, the end of validity and the issuer's signature.
# Provisions: ETSI EN 303 645 5.1-3 (best-practice cryptography for
# authentication) and 5.4-4 (unique per-device secrets), through standard
# formats any PKI accepts.
#
# Writers return bytes and cover only what a certificate request needs:
# single-byte tags, non-negative INTEGERs, SET OF sorted as DER requires.
# The reader is strict DER (definite, minimal lengths) and raises ValueError
# on anything malformed; each step moves forward, so it cannot loop.
# MicroPython builtins only (no int.bit_length on MicroPython).

OID_EC_PUBLIC_KEY = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"         # 1.2.840.10045.2.1
OID_PRIME256V1 = b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"        # 1.2.840.10045.3.1.7
OID_ECDSA_WITH_SHA256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"  # 1.2.840.10045.4.3.2
OID_COMMON_NAME = b"\x06\x03\x55\x04\x03"                          # 2.5.4.3

_PRINTABLE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"


# --- writing ------------------------------------------------------------------

def _uint_bytes(n):
    """Big-endian bytes of n >= 0, as few as possible (at least one)."""
    size = 1
    while n >> (8 * size):
        size += 1
    return n.to_bytes(size, "big")


def length(n):
    """Length octets: short form below 128, else 0x80|count then the count."""
    if n < 0:
        raise ValueError("negative length")
    if n < 0x80:
        return bytes([n])
    b = _uint_bytes(n)
    return bytes([0x80 | len(b)]) + b


def tlv(tag, body):
    return bytes([tag]) + length(len(body)) + bytes(body)


def integer(n_or_bytes):
    """INTEGER of a non-negative int, or of unsigned big-endian bytes."""
    if isinstance(n_or_bytes, int):
        if n_or_bytes < 0:
            raise ValueError("negative integer")
        b = _uint_bytes(n_or_bytes)
    else:
        b = bytes(n_or_bytes)
        i = 0
        while i < len(b) - 1 and not b[i]:    # minimal: drop leading zeros
            i += 1
        b = b[i:] or b"\x00"
    if b[0] & 0x80:                          # keep it positive
        b = b"\x00" + b
    return tlv(0x02, b)


def sequence(*parts):
    return tlv(0x30, b"".join(parts))


def set_of(*parts):
    # DER (X.690 11.6): SET OF elements in ascending order of their encodings.
    return tlv(0x31, b"".join(sorted(parts)))


def oid(dotted):
    arcs = [int(a) for a in dotted.split(".")]
    if (len(arcs) < 2 or min(arcs) < 0 or arcs[0] > 2
            or (arcs[0] < 2 and arcs[1] > 39)):
        raise ValueError("bad OID")
    arcs[1] += 40 * arcs[0]                  # the first two arcs share one number
    out = bytearray()
    for arc in arcs[1:]:
        shift = 0                            # base 128, most significant
        while arc >> (shift + 7):            # first; high bit = "more"
            shift += 7
        while shift:
            out.append(0x80 | ((arc >> shift) & 0x7F))
            shift -= 7
        out.append(arc & 0x7F)
    return tlv(0x06, out)


def utf8_string(s):
    return tlv(0x0C, s.encode("utf-8") if isinstance(s, str) else s)


def printable_string(s):
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    for c in b:
        if c not in _PRINTABLE:
            raise ValueError("not a PrintableString character")
    return tlv(0x13, b)


def bit_string(data, unused_bits=0):
    if not 0 <= unused_bits <= 7 or (unused_bits and not data):
        raise ValueError("bad unused bits")
    return tlv(0x03, bytes([unused_bits]) + bytes(data))


def octet_string(b):
    return tlv(0x04, b)


def null():
    return b"\x05\x00"


def context(n, body, constructed=True):
    """[n] context-specific tag (0 <= n <= 30); IMPLICIT or EXPLICIT is the
    caller's choice: pass the contents or a whole encoding."""
    if not 0 <= n <= 30:
        raise ValueError("tag number")
    return tlv((0xA0 if constructed else 0x80) | n, body)


def ecdsa_signature(rs64):
    """DER Ecdsa-Sig-Value SEQUENCE { r INTEGER, s INTEGER } of raw r || s."""
    if len(rs64) != 64:
        raise ValueError("signature must be 64 bytes")
    return sequence(integer(rs64[:32]), integer(rs64[32:]))


# --- reading ------------------------------------------------------------------

def read_tlv(buf, pos, limit=None):
    """(tag, start, end) of the element at buf[pos]: its contents are
    buf[start:end]. The element must end by `limit` (default len(buf))."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise ValueError("not bytes")
    if limit is None or limit > len(buf):
        limit = len(buf)
    if pos < 0 or pos + 2 > limit:
        raise ValueError("truncated")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tag")
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        if count == 0:
            raise ValueError("indefinite length")
        if count > 4:
            raise ValueError("length too long")
        if pos + count > limit:
            raise ValueError("truncated")
        n = 0
        for i in range(count):
            n = (n << 8) | buf[pos + i]
        if n < 0x80 or not buf[pos]:
            raise ValueError("non-minimal length")
        pos += count
    if n > limit - pos:
        raise ValueError("truncated")
    return tag, pos, pos + n


def _expect(buf, pos, limit, tag):
    t, start, end = read_tlv(buf, pos, limit)
    if t != tag:
        raise ValueError("unexpected tag")
    return start, end


def ecdsa_signature_rs(sig_der):
    """r || s (64 bytes) of a DER Ecdsa-Sig-Value; the inverse of
    ecdsa_signature()."""
    tag, pos, end = read_tlv(sig_der, 0)
    if tag != 0x30 or end != len(sig_der):
        raise ValueError("bad signature")
    out = b""
    for _ in range(2):
        tag, start, pos = read_tlv(sig_der, pos, end)
        v = bytes(sig_der[start:pos])
        if (tag != 0x02 or not v or v[0] & 0x80            # positive INTEGER
                or (len(v) > 1 and not v[0] and not v[1] & 0x80)):  # minimal
            raise ValueError("bad signature")
        if len(v) == 33 and not v[0]:
            v = v[1:]                        # the 0x00 before a high bit
        if len(v) > 32:
            raise ValueError("bad signature")
        out += bytes(32 - len(v)) + v
    if pos != end:
        raise ValueError("bad signature")
    return out


def _certificate(cert):
    """(start, end) of the contents of the outer Certificate SEQUENCE."""
    start, end = _expect(cert, 0, None, 0x30)
    if end != len(cert):
        raise ValueError("trailing data")
    return start, end


def cert_tbs_and_signature(cert_der):
    """(TBSCertificate encoding, r || s) of an ecdsa-with-SHA256 certificate:
    the issuer's signature is valid if p256.verify(issuer_key,
    sha256(tbs).digest(), rs) is."""
    start, end = _certificate(cert_der)
    tbs_end = _expect(cert_der, start, end, 0x30)[1]
    # signatureAlgorithm, outside and inside the TBS (equal: RFC 5280 4.1.1.2)
    alg, alg_end = _expect(cert_der, tbs_end, end, 0x30)
    tag, inner, inner_end = _tbs_field(cert_der, 1)
    if (bytes(cert_der[alg:alg_end]) != OID_ECDSA_WITH_SHA256 or tag != 0x30
            or bytes(cert_der[inner:inner_end]) != OID_ECDSA_WITH_SHA256):
        raise ValueError("not ecdsa-with-SHA256")
    _tbs_field(cert_der, 5)    # a certificate's fields up to the key: not a CSR
    sig, sig_end = _expect(cert_der, alg_end, end, 0x03)
    if sig_end != end or sig == sig_end or cert_der[sig]:
        raise ValueError("bad signature")
    return bytes(cert_der[start:tbs_end]), ecdsa_signature_rs(cert_der[sig + 1:sig_end])


def _tbs_field(cert, index):
    """(tag, start, end) of field `index` of TBSCertificate, counted from
    serialNumber = 0 (the optional [0] version is skipped)."""
    start, end = _certificate(cert)
    pos, tbs_end = _expect(cert, start, end, 0x30)  # TBSCertificate
    tag, _, next_pos = read_tlv(cert, pos, tbs_end)
    if tag == 0xA0:                                 # version
        pos = next_pos
    for _ in range(index):
        pos = read_tlv(cert, pos, tbs_end)[2]
    return read_tlv(cert, pos, tbs_end)


def cert_public_key(cert_der):
    """65-byte uncompressed point (04 || X || Y) of an X.509 certificate's
    P-256 SubjectPublicKeyInfo; ValueError for anything else."""
    tag, pos, end = _tbs_field(cert_der, 5)   # serial, sig, issuer, validity, subject, spki
    if tag != 0x30:
        raise ValueError("bad SubjectPublicKeyInfo")
    alg, alg_end = _expect(cert_der, pos, end, 0x30)
    if bytes(cert_der[alg:alg_end]) != OID_EC_PUBLIC_KEY + OID_PRIME256V1:
        raise ValueError("not a P-256 key")
    start, key_end = _expect(cert_der, alg_end, end, 0x03)
    if key_end != end:
        raise ValueError("trailing data")
    key = bytes(cert_der[start:key_end])
    if len(key) != 66 or key[0] != 0 or key[1] != 4:
        raise ValueError("not an uncompressed point")
    return key[1:]


def _two(t, i):
    return (t[i] - 0x30) * 10 + t[i + 1] - 0x30


def _validity(cert_der, which):
    """notBefore (which=0) or notAfter (which=1) as "YYYYMMDDHHMMSSZ"
    (UTCTime years 50-99 are 19xx, RFC 5280)."""
    tag, pos, end = _tbs_field(cert_der, 3)   # serial, sig, issuer, validity
    if tag != 0x30:
        raise ValueError("bad Validity")
    not_before = read_tlv(cert_der, pos, end)
    tag, start, t_end = not_before if which == 0 else read_tlv(cert_der, not_before[2], end)
    if which == 1 and t_end != end:
        raise ValueError("trailing data")
    t = bytes(cert_der[start:t_end])
    if tag == 0x17 and len(t) == 13:          # UTCTime YYMMDDHHMMSSZ
        t = (b"19" if t[0] >= 0x35 else b"20") + t
    elif tag != 0x18 or len(t) != 15:         # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("bad time")
    if t[14] != 0x5A:
        raise ValueError("bad time")
    for c in t[:14]:
        if not 0x30 <= c <= 0x39:
            raise ValueError("bad time")
    if not (1 <= _two(t, 4) <= 12 and 1 <= _two(t, 6) <= 31 and _two(t, 8) < 24
            and _two(t, 10) < 60 and _two(t, 12) < 60):
        raise ValueError("bad time")
    return t.decode()


def cert_not_before(cert_der):
    return _validity(cert_der, 0)


def cert_not_after(cert_der):
    return _validity(cert_der, 1)
