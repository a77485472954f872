"""The search for a device's private key in its NVS partition finds it in a plaintext ESP-IDF NVS page and
finds nothing in the same page encrypted as NVS encryption does (XTS-AES per 32-byte entry group)."""
from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.asymmetric import ec

from sbd_harness.identity.keys_at_rest import find_private_key, nvs_partition
from sbd_harness.identity.pki import public_point
from sbd_harness.paths import boards_dir


def _page_with(secret: bytes) -> bytes:
    """A 4 KiB NVS page: header, bitmap, a blob header entry, then the blob's 32 bytes on an entry boundary."""
    page = bytearray(b"\xff" * 4096)
    page[0:32] = b"\xfe\xff\xff\xff" + bytes(28)  # page state ACTIVE, sequence, version, crc
    page[32:64] = b"\xaa" * 32  # entry state bitmap
    page[64:96] = b"\x01\x42\x01\xff" + bytes(4) + b"sk".ljust(16, b"\x00") + (32).to_bytes(2, "little") + bytes(6)
    page[96:128] = secret
    return bytes(page) + b"\xff" * 4096 * 3


def _encrypted(data: bytes) -> bytes:
    """XTS-AES-256 over each 32-byte entry, its offset as the tweak (ESP-IDF's NVS encryption scheme)."""
    key = os.urandom(64)
    out = bytearray()
    for at in range(0, len(data), 32):
        enc = Cipher(algorithms.AES(key), modes.XTS(at.to_bytes(16, "little"))).encryptor()
        out += enc.update(data[at:at + 32]) + enc.finalize()
    return bytes(out)


def test_a_plaintext_key_is_found_and_an_encrypted_one_is_not():
    key = ec.generate_private_key(ec.SECP256R1())
    secret = key.private_numbers().private_value.to_bytes(32, "big")
    point = public_point(key.public_key())
    plain = find_private_key(_page_with(secret), point)
    assert plain.plaintext and plain.offset == 96
    hidden = find_private_key(_encrypted(_page_with(secret)), point)
    assert not hidden.plaintext and not hidden.blank and hidden.windows > 500
    other = ec.generate_private_key(ec.SECP256R1())
    assert not find_private_key(_page_with(secret), public_point(other.public_key())).plaintext
    assert find_private_key(b"\xff" * 16384, point).blank


def test_the_nvs_partition_comes_from_the_board_table():
    assert nvs_partition(boards_dir() / "esp32" / "partitions.csv") == (0x9000, 0x4000)
