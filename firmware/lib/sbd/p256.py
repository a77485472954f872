"""ECDSA signatures on NIST P-256 (secp256r1) with SHA-256, in pure MicroPython.

What it is for
    The device checks that a firmware update or a provisioning bundle was
    signed by the manufacturer's key before it uses it (`verify`), and proves
    its own identity with a key pair made on the device, whose private half
    never leaves it (`generate_keypair`, `public_key`, `sign`).

Provisions it serves
    ETSI EN 303 645 5.1-3 (best-practice cryptography for authentication) and
    5.3-7 (best-practice cryptography for the secure update mechanism);
    OWASP ISVS 3.4.3 (updates are signed and the signature is checked before
    they are installed); EU CRA Annex I (2)(k) (exploitation mitigation: the
    device signs on request, so the arithmetic on its secrets is blinded
    against timing).

Interface (all values are bytes, integers big-endian)
    generate_keypair() -> (private_key 32 bytes, public_key 65 bytes)
    public_key(private_key) -> 65 bytes, uncompressed SEC1 point 04 || X || Y
    sign(private_key, digest) -> 64 bytes r || s, nonce per RFC 6979
    verify(public_key, digest, signature) -> bool; never raises
    is_public_key(data) -> bool: 65 bytes 04 || X || Y, a point on the curve
The caller hashes the message with hashlib.sha256 and passes the 32-byte
digest. Signatures are raw r || s (not DER), as in JOSE/COSE.

Only what the ESP32 port of MicroPython has is used: arbitrary-size ints,
hashlib.sha256 and os.urandom.

How it computes, for a reviewer
  * Field elements are plain ints, reduced mod p after every product.
  * Points are Jacobian (X, Y, Z), meaning the affine (X/Z^2, Y/Z^3); Z == 0
    is the point at infinity. Doubling uses the a = -3 shortcut, additions
    add an affine point to a Jacobian one ("mixed" addition).
  * k*G uses a fixed-base comb: a table of 31 multiples of G, built on first
    use and then kept (3-5 KiB of heap), so k*G costs 58 doublings and at
    most 58 additions (58 columns of 5 teeth: 290 bits, room for a blinded
    scalar).
  * Secrets are blinded (see _mul_g and sign): a secret scalar k is used as
    k + m*n for a fresh random m of 32 bits, the comb's running point gets a
    random Z, and s = k^-1 (e + r*d) is computed as (k*b)^-1 (b*e + (b*r)*d)
    for a fresh random b. The results are the same numbers; only the
    intermediate values, and so the time the big-int operations take, change
    from one call to the next.
  * u1*G + u2*Q in verify is one loop of 257 doublings in which the comb
    additions for G and signed-window (width-5 NAF) additions for Q are
    interleaved (Shamir's trick); Q's 8 odd multiples are computed per call.
  * Inverses use the extended Euclidean algorithm, which MicroPython runs
    about four times faster than pow(a, m - 2, m).
  * Not constant-time (see sign()); verify handles only public values.
"""
import os
from hashlib import sha256

try:
    from micropython import const
except ImportError:  # CPython, so host-side tools can import this file too
    def const(x):
        return x


# P-256 (FIPS 186-4 D.1.2.3, SEC 2 secp256r1): y^2 = x^3 - 3x + b over GF(p),
# generator G of prime order n, cofactor 1.
_P = const(0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF)
_N = const(0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551)
_B = const(0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B)
_GX = const(0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296)
_GY = const(0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)

_TEETH = const(5)     # comb: table of 2^5 - 1 = 31 points ...
_SPACING = const(58)  # ... whose teeth are 58 bits apart: 5 * 58 = 290 bits >= 289,
_COMB_BYTES = const(37)  # the length of a blinded scalar k + m*n (m < 2^33); 37 bytes hold it
_BLIND_BITS = const(32)  # random bits of the scalar blinding factor m
_WIDTH = const(5)     # width of the signed windows for Q in verify


# --- arithmetic -------------------------------------------------------------

def _inv(a, m):
    """a^-1 mod m, for prime m and a not divisible by m (extended Euclid)."""
    r0, r1 = m, a % m
    t0, t1 = 0, 1
    while r1:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        t0, t1 = t1, t0 - q * t1
    return t0 % m


def _random_below(m):
    """A fresh random number in [1, m-1] (os.urandom: the ESP32's hardware RNG).
    Only for blinding: a slight bias of the reduction does not matter there."""
    return int.from_bytes(os.urandom(32), "big") % (m - 1) + 1


def _inv_blinded(a, m):
    """a^-1 mod m for a secret a: Euclid's steps then depend on a * b for a
    random b, not on a itself."""
    b = _random_below(m)
    return _inv(a * b % m, m) * b % m


def _double(X, Y, Z):
    """2 * (X, Y, Z), Jacobian; formula dbl-2001-b for a = -3."""
    if not Z:
        return X, Y, Z
    delta = Z * Z % _P
    gamma = Y * Y % _P
    beta = X * gamma % _P
    alpha = 3 * (X - delta) * (X + delta) % _P
    X3 = (alpha * alpha - 8 * beta) % _P
    Y3 = (alpha * (4 * beta - X3) - 8 * gamma * gamma) % _P
    return X3, Y3, 2 * Y * Z % _P


def _add_affine(X1, Y1, Z1, x2, y2):
    """(X1, Y1, Z1) + (x2, y2): Jacobian plus affine (not infinity)."""
    if not Z1:
        return x2, y2, 1
    z1z1 = Z1 * Z1 % _P
    h = x2 * z1z1 % _P - X1          # both terms are in [0, p): h == 0 iff
    r = y2 * Z1 * z1z1 % _P - Y1     # the x (r: the y) coordinates are equal
    if not h:
        if not r:
            return _double(x2, y2, 1)  # same point
        return 0, 1, 0                 # P + (-P)
    hh = h * h % _P
    hhh = h * hh % _P
    v = X1 * hh % _P
    X3 = (r * r - hhh - 2 * v) % _P
    Y3 = (r * (v - X3) - Y1 * hhh) % _P
    return X3, Y3, Z1 * h % _P


def _compact(v):
    """v as a new int with just 32 bytes of digits: a product reduced mod p
    keeps the product's larger buffer, and tables are kept for a while."""
    return int.from_bytes(v.to_bytes(32, "big"), "big")


def _affine(X, Y, Z, inv=_inv):
    """Affine (x, y) of a Jacobian point that is not infinity."""
    zi = inv(Z, _P)
    zi2 = zi * zi % _P
    return X * zi2 % _P, Y * zi2 * zi % _P


def _to_affine(points):
    """Affine xs, ys of Jacobian points (none at infinity), one inversion."""
    count = len(points)
    prefix = []                        # Montgomery's trick: invert the product
    acc = 1                            # of all Zs, then peel off each 1/Z
    for X, Y, Z in points:
        prefix.append(acc)
        acc = acc * Z % _P
    inv = _inv(acc, _P)
    xs = [0] * count
    ys = [0] * count
    for i in range(count - 1, -1, -1):
        X, Y, Z = points[i]
        zi = inv * prefix[i] % _P
        inv = inv * Z % _P
        zi2 = zi * zi % _P
        xs[i] = _compact(X * zi2 % _P)
        ys[i] = _compact(Y * zi2 * zi % _P)
    return xs, ys


# --- k*G with a fixed-base comb -------------------------------------------

_comb_x = None
_comb_y = None


def _comb_table():
    """T[c] = sum of 2^(58*m) G over the bits m set in c, for 1 <= c < 32."""
    global _comb_x, _comb_y
    if _comb_x is None:
        xs = [0]                       # T[0] would be infinity; never used
        ys = [0]
        tx, ty = _GX, _GY              # tooth m: 2^(58*m) G
        for m in range(_TEETH):
            if m:
                X, Y, Z = tx, ty, 1
                for _ in range(_SPACING):
                    X, Y, Z = _double(X, Y, Z)
                tx, ty = _affine(X, Y, Z)
            # T[2^m + c] = T[c] + tooth m; built a tooth at a time so that
            # few Jacobian points are alive at once (heap).
            new = [(tx, ty, 1)]
            for c in range(1, 1 << m):
                new.append(_add_affine(xs[c], ys[c], 1, tx, ty))
            new_x, new_y = _to_affine(new)
            xs.extend(new_x)
            ys.extend(new_y)
        _comb_x = xs
        _comb_y = ys
    return _comb_x, _comb_y


def _comb_columns(k):
    """Column i of k (0 <= i < 58): bit m is bit i + 58*m of k (k < 2^290)."""
    b = k.to_bytes(_COMB_BYTES, "little")
    cols = bytearray(_SPACING)
    for i in range(_SPACING):
        c = 0
        j = i + (_TEETH - 1) * _SPACING
        while j >= i:                  # top tooth first
            c = (c << 1) | ((b[j >> 3] >> (j & 7)) & 1)
            j -= _SPACING
        cols[i] = c
    return cols


def _blind_scalar(k):
    """k + m*n for a fresh random m in [2^32, 2^33): the same multiple of G,
    but the comb walks the bits of a number that is new at every call, so
    which columns are zero, and how long the loop takes, no longer follow k
    (its leading zeros, its Hamming weight: what lattice attacks on ECDSA
    nonces feed on). The result is always 288 or 289 bits long."""
    m = int.from_bytes(os.urandom(_BLIND_BITS // 8), "big") | (1 << _BLIND_BITS)
    return k + m * _N


def _comb_mul(k):
    """Jacobian k*G for a secret 0 < k < n, blinded (k + m*n, random Z)."""
    cx, cy = _comb_table()
    cols = _comb_columns(_blind_scalar(k))
    X, Y, Z = 0, 1, 0
    for i in range(_SPACING - 1, -1, -1):
        X, Y, Z = _double(X, Y, Z)
        c = cols[i]
        if c:
            if Z:
                X, Y, Z = _add_affine(X, Y, Z, cx[c], cy[c])
            else:
                # The first point, in a random projective representation
                # (x*l^2, y*l^3, l): every later coordinate is randomised too.
                l = _random_below(_P)
                l2 = l * l % _P
                X, Y, Z = cx[c] * l2 % _P, cy[c] * l2 % _P * l % _P, l
    return X, Y, Z


def _mul_g(k):
    """Affine k*G for a secret 0 < k < n."""
    X, Y, Z = _comb_mul(k)
    return _affine(X, Y, Z, _inv_blinded)


# --- u1*G + u2*Q for verify ---------------------------------------------------

def _wnaf(k):
    """Width-5 NAF of 0 <= k < 2^256, least significant digit first.

    257 digits, each 0 or odd in -15..15, with k = sum(digit[i] * 2^i); a
    bytearray keeps them small, so a negative digit d is stored as 256 + d.
    """
    b = k.to_bytes(34, "little")       # spare bytes: windows may run past bit 255
    digits = bytearray(257)
    full = 1 << _WIDTH
    i = 0
    carry = 0
    while i < 257:
        bit = ((b[i >> 3] >> (i & 7)) & 1) + carry
        if bit == 1:
            j = i >> 3
            v = (((b[j] | b[j + 1] << 8) >> (i & 7)) & (full - 1)) + carry
            if v >= full >> 1:         # use v - 32 and carry 32 upwards
                v -= full
                carry = 1
            else:
                carry = 0
            digits[i] = v & 0xFF
            i += _WIDTH                # the next _WIDTH - 1 digits are 0
        else:
            carry = bit >> 1
            i += 1
    return digits


def _odd_multiples(x, y):
    """Affine xs, ys and -ys of Q, 3Q, 5Q, ..., 15Q for Q = (x, y)."""
    X, Y, Z = _double(x, y, 1)
    x2, y2 = _affine(X, Y, Z)
    points = [(x, y, 1)]
    for _ in range((1 << (_WIDTH - 2)) - 1):
        X, Y, Z = points[-1]
        points.append(_add_affine(X, Y, Z, x2, y2))
    xs, ys = _to_affine(points)
    return xs, ys, [_P - v for v in ys]  # y != 0: P-256 has no point of order 2


def _mul_add(u1, u2, qx, qy):
    """Jacobian u1*G + u2*Q (public scalars; time may depend on them)."""
    cx, cy = _comb_table()
    cols = _comb_columns(u1)
    digits = _wnaf(u2)
    tx, ty, tny = _odd_multiples(qx, qy)
    X, Y, Z = 0, 1, 0
    for i in range(256, -1, -1):
        X, Y, Z = _double(X, Y, Z)
        d = digits[i]
        if d:
            if d < 128:                # d * Q is table entry d // 2
                X, Y, Z = _add_affine(X, Y, Z, tx[d >> 1], ty[d >> 1])
            else:                      # digit d - 256 < 0: negate the entry
                d = 256 - d
                X, Y, Z = _add_affine(X, Y, Z, tx[d >> 1], tny[d >> 1])
        if i < _SPACING:
            c = cols[i]
            if c:
                X, Y, Z = _add_affine(X, Y, Z, cx[c], cy[c])
    return X, Y, Z


# --- encodings -------------------------------------------------------------------

def _is_bytes(value):
    return isinstance(value, (bytes, bytearray))


def _decode_point(data):
    """(x, y) of a valid uncompressed public key, else None.

    The point must be on the curve; with cofactor 1 that also puts it in the
    group of order n. Infinity has no 65-byte encoding, so it cannot pass.
    """
    if not _is_bytes(data) or len(data) != 65 or data[0] != 4:
        return None
    x = int.from_bytes(data[1:33], "big")
    y = int.from_bytes(data[33:], "big")
    if x >= _P or y >= _P or (y * y - x * x * x + 3 * x - _B) % _P:
        return None
    return x, y


def is_public_key(data):
    """True if data is a valid uncompressed public key (on the curve)."""
    return _decode_point(data) is not None


def _private_scalar(private_key):
    if not _is_bytes(private_key) or len(private_key) != 32:
        raise ValueError("private key must be 32 bytes")
    d = int.from_bytes(private_key, "big")
    if not 0 < d < _N:
        raise ValueError("private key out of range")
    return d


# --- RFC 6979 nonces ----------------------------------------------------------

def _hmac_sha256(key, data):
    """HMAC-SHA256 (RFC 2104); MicroPython on the device has no hmac module."""
    if len(key) > 64:
        key = sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = sha256(bytes(b ^ 0x36 for b in key))
    inner.update(data)
    outer = sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def _rfc6979_nonces(d, e):
    """Candidate nonces k for key d and digest e (RFC 6979 3.2, SHA-256)."""
    x = d.to_bytes(32, "big")
    h = (e % _N).to_bytes(32, "big")
    V = b"\x01" * 32
    K = _hmac_sha256(b"\x00" * 32, V + b"\x00" + x + h)
    V = _hmac_sha256(K, V)
    K = _hmac_sha256(K, V + b"\x01" + x + h)
    V = _hmac_sha256(K, V)
    while True:
        V = _hmac_sha256(K, V)         # qlen == hlen == 256: one block is k
        k = int.from_bytes(V, "big")
        if 0 < k < _N:
            yield k
        K = _hmac_sha256(K, V + b"\x00")
        V = _hmac_sha256(K, V)


# --- public API ---------------------------------------------------------------------

def generate_keypair():
    """New (private_key, public_key): private key uniform in [1, n-1].

    os.urandom on the ESP32 reads the hardware RNG, which is a true random
    source while Wi-Fi or Bluetooth is running (ESP-IDF docs); generate keys
    with the radio on.
    """
    while True:
        private_key = os.urandom(32)
        if 0 < int.from_bytes(private_key, "big") < _N:  # rejection sampling
            return private_key, public_key(private_key)


def public_key(private_key):
    """65-byte uncompressed public key (04 || X || Y) of a 32-byte private key."""
    x, y = _mul_g(_private_scalar(private_key))
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def sign(private_key, digest):
    """64-byte signature r || s of a 32-byte SHA-256 digest.

    The nonce is derived from key and digest (RFC 6979), so no RNG failure
    can leak the key, and equal inputs give equal signatures. s is left as
    computed (not normalised to the lower half) so the RFC 6979 test vectors
    match exactly.

    Not constant-time, and it cannot be in MicroPython: big-int operations
    take time that depends on the values, and the comb skips zero columns.
    So the values are blinded instead, afresh at every call: the nonce's
    multiple of G is computed from k + m*n with a random Z (_comb_mul), and
    s from (k*b)^-1 and (b*r)*d for a random b. The time then follows the
    random blinding, not the key or the nonce (tests/firmware/
    mptest_p256_timing.py measures it). The blinding changes no result:
    the signature is still exactly RFC 6979's.
    """
    d = _private_scalar(private_key)
    if not _is_bytes(digest) or len(digest) != 32:
        raise ValueError("digest must be 32 bytes")
    e = int.from_bytes(digest, "big")
    for k in _rfc6979_nonces(d, e):
        signature = _sign_with_nonce(d, e, k)
        if signature is not None:
            return signature


def _sign_with_nonce(d, e, k):
    """r || s for key d, digest e and nonce k, or None when r or s is 0."""
    r = _mul_g(k)[0] % _N
    if not r:
        return None
    # s = k^-1 (e + r*d) = (k*b)^-1 * (b*e + (b*r)*d): the inversion works on
    # k*b and the product with d on b*r, both new random numbers each time.
    b = _random_below(_N)
    s = _inv(k * b % _N, _N) * ((e * b + (r * b % _N) * d) % _N) % _N
    if not s:
        return None
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(public_key, digest, signature):
    """True if signature (r || s, 64 bytes) on digest (32 bytes) is valid
    for public_key (65 bytes, 04 || X || Y); False for anything else,
    including inputs of the wrong type or length. Never raises."""
    try:
        return _verify(public_key, digest, signature)
    except Exception:  # noqa: BLE001 - a malformed input must read as "invalid"
        return False


def _verify(public_key, digest, signature):
    q = _decode_point(public_key)
    if q is None or not _is_bytes(digest) or len(digest) != 32:
        return False
    if not _is_bytes(signature) or len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        return False
    w = _inv(s, _N)
    e = int.from_bytes(digest, "big")
    X, Y, Z = _mul_add(e * w % _N, r * w % _N, q[0], q[1])
    if not Z:
        return False
    # Valid iff x(R) mod n == r, where x(R) = X / Z^2 lies in [0, p) and
    # p < 2n: so x(R) is r or r + n. Compare without inverting Z.
    zz = Z * Z % _P
    if (r * zz - X) % _P == 0:
        return True
    return r + _N < _P and ((r + _N) * zz - X) % _P == 0
