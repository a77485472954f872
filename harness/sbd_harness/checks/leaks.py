"""Every way a private key could show up in text: used to search serial logs."""
from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def key_encodings(secret: bytes) -> dict[str, bytes]:
    """Byte strings that reveal `secret` (a P-256 private scalar) if found."""
    forms: dict[str, bytes] = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "hex-reversed": secret[::-1].hex().encode(),
        "decimal": str(int.from_bytes(secret, "big")).encode(),
        "bytes-repr": repr(secret).encode()[2:-1],
    }
    for shift in range(3):  # base64 of the key wherever it sits in a longer blob
        chunk = secret[shift:shift + 27]
        forms[f"base64@{shift}"] = base64.b64encode(chunk)[:32]
        forms[f"base64url@{shift}"] = base64.urlsafe_b64encode(chunk)[:32]
    key = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1())
    for name, fmt in (("pkcs8", serialization.PrivateFormat.PKCS8),
                      ("sec1", serialization.PrivateFormat.TraditionalOpenSSL)):
        forms[f"der-{name}"] = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        forms[f"pem-{name}"] = key.private_bytes(serialization.Encoding.PEM, fmt,
                                                 serialization.NoEncryption()).splitlines()[1]
    return forms


def find_key(secret: bytes, haystack: bytes) -> list[str]:
    """Names of the encodings of `secret` present in `haystack`."""
    folded = haystack.replace(b"\r", b"").replace(b"\n", b"")
    return sorted(name for name, form in key_encodings(secret).items() if form in haystack or form in folded)
