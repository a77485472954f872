# MicroPython unit tests for sbd.p256 (run by mp_runner.py, never CPython).
from binascii import unhexlify
from hashlib import sha256
import os

from sbd import p256

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
G = unhexlify(
    "04"
    "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296"
    "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5"
)

# RFC 6979 A.2.5: P-256, SHA-256.
RFC_KEY = unhexlify("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
RFC_PUB = unhexlify(
    "04"
    "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"
)
RFC_SAMPLE = unhexlify(
    "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
    "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
)
RFC_TEST = unhexlify(
    "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367"
    "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083"
)
SAMPLE = sha256(b"sample").digest()
TEST = sha256(b"test").digest()


def i2b(v, size=32):
    return v.to_bytes(size, "big")


def flip(data, bit):
    out = bytearray(data)
    out[bit >> 3] ^= 0x80 >> (bit & 7)
    return bytes(out)


def with_rs(r, s):
    return i2b(r) + i2b(s)


def test_public_key_rfc6979_vector():
    assert p256.public_key(RFC_KEY) == RFC_PUB


def test_public_key_of_one_and_n_minus_one():
    assert p256.public_key(i2b(1)) == G
    minus_g = p256.public_key(i2b(N - 1))
    assert minus_g[:33] == G[:33]
    assert int.from_bytes(minus_g[33:], "big") == P - int.from_bytes(G[33:], "big")


def test_sign_rfc6979_sample():
    assert p256.sign(RFC_KEY, SAMPLE) == RFC_SAMPLE


def test_sign_rfc6979_test():
    assert p256.sign(RFC_KEY, TEST) == RFC_TEST


def test_verify_rfc6979_signatures():
    assert p256.verify(RFC_PUB, SAMPLE, RFC_SAMPLE) is True
    assert p256.verify(RFC_PUB, TEST, RFC_TEST) is True
    assert p256.verify(RFC_PUB, TEST, RFC_SAMPLE) is False
    assert p256.verify(RFC_PUB, SAMPLE, RFC_TEST) is False


def test_sign_is_deterministic():
    digest = sha256(b"firmware image").digest()
    assert p256.sign(RFC_KEY, digest) == p256.sign(RFC_KEY, digest)


def test_sign_verify_roundtrip():
    for i in range(8):
        priv, pub = p256.generate_keypair()
        digest = sha256(b"message %d" % i).digest()
        sig = p256.sign(priv, digest)
        assert len(sig) == 64
        assert p256.verify(pub, digest, sig)
        assert not p256.verify(pub, sha256(b"other %d" % i).digest(), sig)


def test_roundtrip_extreme_keys_and_digests():
    for d in (1, 2, N - 2, N - 1):
        priv = i2b(d)
        pub = p256.public_key(priv)
        for digest in (bytes(32), b"\xff" * 32, i2b(N), i2b(N - 1), SAMPLE):
            sig = p256.sign(priv, digest)
            assert p256.verify(pub, digest, sig), (d, digest)


def test_accepts_bytearray_inputs():
    assert p256.verify(bytearray(RFC_PUB), bytearray(SAMPLE), bytearray(RFC_SAMPLE))
    assert p256.sign(bytearray(RFC_KEY), bytearray(SAMPLE)) == RFC_SAMPLE


def test_high_s_also_verifies():
    # ECDSA is malleable: (r, n - s) is valid too. sign() never normalises s.
    r = int.from_bytes(RFC_SAMPLE[:32], "big")
    s = int.from_bytes(RFC_SAMPLE[32:], "big")
    assert p256.verify(RFC_PUB, SAMPLE, with_rs(r, N - s))


def test_generate_keypair():
    seen = set()
    for _ in range(4):
        priv, pub = p256.generate_keypair()
        assert isinstance(priv, bytes) and len(priv) == 32
        assert isinstance(pub, bytes) and len(pub) == 65 and pub[0] == 4
        assert 0 < int.from_bytes(priv, "big") < N
        assert p256.public_key(priv) == pub
        assert p256._decode_point(pub) is not None  # on the curve
        seen.add(priv)
    assert len(seen) == 4


def test_flipped_digest_bits_fail():
    for bit in range(0, 256, 3):
        assert not p256.verify(RFC_PUB, flip(SAMPLE, bit), RFC_SAMPLE), bit
    assert not p256.verify(RFC_PUB, flip(SAMPLE, 255), RFC_SAMPLE)


def test_flipped_signature_bits_fail():
    for bit in list(range(0, 512, 5)) + [511]:
        assert not p256.verify(RFC_PUB, SAMPLE, flip(RFC_SAMPLE, bit)), bit


def test_flipped_public_key_bits_fail():
    for bit in range(0, 520, 4):
        assert not p256.verify(flip(RFC_PUB, bit), SAMPLE, RFC_SAMPLE), bit


def test_other_key_fails():
    _, other = p256.generate_keypair()
    assert not p256.verify(other, SAMPLE, RFC_SAMPLE)
    assert not p256.verify(G, SAMPLE, RFC_SAMPLE)


def test_malformed_inputs_return_false():
    good = (RFC_PUB, SAMPLE, RFC_SAMPLE)
    bad_values = [
        None, "", "abc", 0, 1, -1, 3.5, True, [], [1, 2], (), {}, object(),
        b"", b"\x04", bytes(31), bytes(33), bytes(63), bytes(64), bytes(65),
        bytes(66), bytes(128), memoryview(b"x"),
        RFC_PUB.hex() if hasattr(RFC_PUB, "hex") else "04" * 65,
    ]
    for position in range(3):
        for bad in bad_values:
            args = list(good)
            args[position] = bad
            result = p256.verify(*args)
            assert result is False, (position, bad)
    # Right content, wrong type.
    assert p256.verify(list(RFC_PUB), SAMPLE, RFC_SAMPLE) is False
    assert p256.verify(RFC_PUB, list(SAMPLE), RFC_SAMPLE) is False
    assert p256.verify(RFC_PUB, SAMPLE, list(RFC_SAMPLE)) is False
    assert p256.verify(str(RFC_PUB), SAMPLE, RFC_SAMPLE) is False
    # Truncated and extended versions of good values.
    assert p256.verify(RFC_PUB[:-1], SAMPLE, RFC_SAMPLE) is False
    assert p256.verify(RFC_PUB + b"\x00", SAMPLE, RFC_SAMPLE) is False
    assert p256.verify(RFC_PUB, SAMPLE[:-1], RFC_SAMPLE) is False
    assert p256.verify(RFC_PUB, SAMPLE + b"\x00", RFC_SAMPLE) is False
    assert p256.verify(RFC_PUB, SAMPLE, RFC_SAMPLE[:-1]) is False
    assert p256.verify(RFC_PUB, SAMPLE, RFC_SAMPLE + b"\x00") is False
    assert p256.verify(RFC_PUB, SAMPLE, b"\x30" + RFC_SAMPLE) is False  # not DER
    # Wrong number of arguments is the caller's bug and still a TypeError.
    raised = False
    try:
        p256.verify(RFC_PUB, SAMPLE)
    except TypeError:
        raised = True
    assert raised


def test_wrong_prefix_byte_fails():
    for prefix in (0x00, 0x02, 0x03, 0x05, 0x06, 0x07, 0x44, 0xFF):
        key = bytes([prefix]) + RFC_PUB[1:]
        assert p256.verify(key, SAMPLE, RFC_SAMPLE) is False, prefix
    # The compressed form of the right key is not accepted either.
    y_odd = RFC_PUB[64] & 1
    compressed = bytes([2 + y_odd]) + RFC_PUB[1:33]
    assert p256.verify(compressed, SAMPLE, RFC_SAMPLE) is False
    # SEC1's encoding of the point at infinity.
    assert p256.verify(b"\x00", SAMPLE, RFC_SAMPLE) is False


def test_r_or_s_zero_or_out_of_range_fails():
    r = int.from_bytes(RFC_SAMPLE[:32], "big")
    s = int.from_bytes(RFC_SAMPLE[32:], "big")
    for bad_r, bad_s in (
        (0, s), (r, 0), (0, 0), (N, s), (r, N), (N, N),
        (r + N, s), (r, s + N), (N + 1, s), (r, N + 1),
        ((1 << 256) - 1, s), (r, (1 << 256) - 1), (P, s), (r, P),
    ):
        if bad_r >= 1 << 256 or bad_s >= 1 << 256:
            continue
        assert p256.verify(RFC_PUB, SAMPLE, with_rs(bad_r, bad_s)) is False, (bad_r, bad_s)
    # r = 1 and s = 1 are in range but not a signature.
    assert p256.verify(RFC_PUB, SAMPLE, with_rs(1, 1)) is False
    assert p256.verify(RFC_PUB, SAMPLE, with_rs(N - 1, N - 1)) is False


def test_point_not_on_curve_fails():
    x = RFC_PUB[1:33]
    y = int.from_bytes(RFC_PUB[33:], "big")
    off_curve = (
        b"\x04" + x + i2b((y + 1) % P),
        b"\x04" + x + i2b(0),
        b"\x04" + bytes(64),                    # (0, 0)
        b"\x04" + i2b(1) + i2b(1),
        b"\x04" + b"\xff" * 64,
        b"\x04" + i2b(P) + G[33:],              # x = p
        b"\x04" + G[1:33] + i2b(P),             # y = p
    )
    for key in off_curve:
        assert p256.verify(key, SAMPLE, RFC_SAMPLE) is False
        assert p256._decode_point(key) is None
    assert p256._decode_point(G) is not None
    assert p256._decode_point(RFC_PUB) is not None


def test_out_of_range_coordinates_are_rejected_not_reduced():
    # A key whose x is x0 + p for a small on-curve x0: equal mod p to a valid
    # point, so a verifier that forgets the range check would accept it.
    x0 = 0
    while True:
        x0 += 1
        rhs = (x0 * x0 * x0 - 3 * x0 + B) % P
        y0 = pow(rhs, (P + 1) // 4, P)
        if y0 * y0 % P == rhs:
            break
    valid = b"\x04" + i2b(x0) + i2b(y0)
    assert p256._decode_point(valid) == (x0, y0)
    assert p256._decode_point(b"\x04" + i2b(x0 + P) + i2b(y0)) is None


def test_sign_rejects_bad_private_keys():
    for bad in (bytes(32), i2b(N), i2b(N + 1), b"\xff" * 32, bytes(31), bytes(33),
                None, "00" * 32, 5):
        raised = False
        try:
            p256.sign(bad, SAMPLE)
        except ValueError:
            raised = True
        except TypeError:
            raised = True
        assert raised, bad
        raised = False
        try:
            p256.public_key(bad)
        except (ValueError, TypeError):
            raised = True
        assert raised, bad


def test_sign_rejects_bad_digest():
    for bad in (b"", bytes(31), bytes(33), bytes(64), None, "x" * 32):
        raised = False
        try:
            p256.sign(RFC_KEY, bad)
        except (ValueError, TypeError):
            raised = True
        assert raised, bad


def test_signature_for_sum_at_infinity_fails():
    # Key d, digest e = -r*d mod n: u1*G + u2*Q = (e + r*d)/s * G = infinity.
    d = 7
    pub = p256.public_key(i2b(d))
    r = 0x1234567890ABCDEF
    s = 0xFEDCBA0987654321
    e = (-r * d) % N
    assert p256.verify(pub, i2b(e), with_rs(r, s)) is False


def test_intermediate_doubling_case_verifies():
    # Key 1 (Q = G), u1 = u2 = 1: the loop adds G to G, which the addition
    # formula must hand to doubling. r = x(2G) mod n, s = r, e = r.
    two_g = p256.public_key(i2b(2))
    r = int.from_bytes(two_g[1:33], "big") % N
    assert p256.verify(G, i2b(r), with_rs(r, r)) is True
    assert p256.verify(G, i2b(r), with_rs(r, (r + 1) % N)) is False


def test_digest_zero_and_digest_n():
    priv = i2b(12345)
    pub = p256.public_key(priv)
    sig = p256.sign(priv, bytes(32))
    assert p256.verify(pub, bytes(32), sig)
    # Digests are taken mod n: e = n and e = 0 give the same signature.
    assert p256.verify(pub, i2b(N), sig)
    assert p256.sign(priv, i2b(N)) == sig


def test_never_raises_on_random_garbage():
    for _ in range(40):
        key = b"\x04" + os.urandom(64)
        assert p256.verify(key, os.urandom(32), os.urandom(64)) is False
    for size in (0, 1, 32, 64, 65, 100):
        junk = os.urandom(size)
        assert p256.verify(junk, junk, junk) is False


# --- blinding -------------------------------------------------------------------

class _RecordingOs:
    """Stands in for the os module in sbd.p256: urandom from a seeded stream, recorded."""

    def __init__(self, seed):
        self.state = sha256(seed).digest()
        self.drawn = 0

    def urandom(self, n):
        out = b""
        while len(out) < n:
            self.state = sha256(self.state).digest()
            out += self.state
        self.drawn += n
        return out[:n]


def _with_rng(rng, fn, *args):
    saved = p256.os
    p256.os = rng
    try:
        return fn(*args)
    finally:
        p256.os = saved


def test_blinding_leaves_rfc6979_signatures_unchanged():
    # Each signature with another random stream for the blinding: always the published one.
    for seed in (b"one", b"two", b"three", b"four"):
        rng = _RecordingOs(seed)
        assert _with_rng(rng, p256.sign, RFC_KEY, SAMPLE) == RFC_SAMPLE
        assert _with_rng(rng, p256.sign, RFC_KEY, TEST) == RFC_TEST
        # m (4 bytes), the random Z (32), b (32) and the inversion's blinding (32), per signature
        assert rng.drawn >= 2 * (4 + 32 + 32 + 32), rng.drawn
    assert _with_rng(_RecordingOs(b"five"), p256.public_key, RFC_KEY) == RFC_PUB


def test_scalar_blinding_is_fresh_and_keeps_the_scalar_mod_n():
    for k in (1, 2, N - 1, int.from_bytes(RFC_KEY, "big")):
        a, b = p256._blind_scalar(k), p256._blind_scalar(k)
        assert a != b and a % N == k and b % N == k
        for v in (a, b):  # 288 or 289 bits: always past the nonce's own 256, within the comb's 290
            assert v >> 287 and not v >> 289, hex(v)


def test_projective_coordinates_are_random_but_the_point_is_not():
    k = int.from_bytes(RFC_KEY, "big")
    first, second = p256._comb_mul(k), p256._comb_mul(k)
    assert first[2] != second[2] and first[0] != second[0]
    x, y = p256._affine(*first)
    assert (x, y) == p256._affine(*second)
    assert b"\x04" + i2b(x) + i2b(y) == RFC_PUB


def test_s_is_the_same_for_any_blinding_factor():
    d = int.from_bytes(RFC_KEY, "big")
    e = int.from_bytes(SAMPLE, "big")
    k = 0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60  # RFC 6979 A.2.5, SHA-256, "sample"
    sigs = set(_with_rng(_RecordingOs(bytes([i])), p256._sign_with_nonce, d, e, k) for i in range(6))
    assert sigs == {RFC_SAMPLE}
