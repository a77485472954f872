# PKCS#10 certificate signing request (RFC 2986) for the device's own key.
#
# The device makes its identity key pair itself (sbd.p256) and asks the
# manufacturer's or operator's CA for a certificate with this request. The
# private key is used in place, to sign the request, and never leaves the
# device: only the public key and the proof of possessing its private half go
# out. Provisions: ETSI EN 303 645 5.4-4 (unique per-device secrets, not
# shared or baked into the image) and 5.5-8 (keys managed over the device's
# lifecycle: a new request whenever the key is renewed); NIST IR 8259A 1
# (device identification: the common name is the device ID).
#
# CertificationRequest ::= SEQUENCE {
#     certificationRequestInfo SEQUENCE {
#         version INTEGER (0), subject Name, subjectPKInfo, attributes [0] },
#     signatureAlgorithm ecdsa-with-SHA256 (no parameters, RFC 5758 3.2),
#     signature BIT STRING (DER Ecdsa-Sig-Value) }
from hashlib import sha256

from sbd import der, p256


def subject_public_key_info(public_key):
    """SubjectPublicKeyInfo of a P-256 public key (65 bytes, 04 || X || Y)."""
    if len(public_key) != 65 or public_key[0] != 4:
        raise ValueError("public key must be an uncompressed P-256 point")
    return der.sequence(
        der.sequence(der.OID_EC_PUBLIC_KEY, der.OID_PRIME256V1),
        der.bit_string(public_key),
    )


def name(common_name):
    """Name with one RDN, CN=common_name as a UTF8String (RFC 5280 4.1.2.4)."""
    if not isinstance(common_name, str) or not 0 < len(common_name) <= 64:
        raise ValueError("common name must be 1 to 64 characters")  # ub-common-name
    atv = der.sequence(der.OID_COMMON_NAME, der.utf8_string(common_name))
    return der.sequence(der.set_of(atv))


def build_csr(private_key, public_key, common_name):
    """DER CertificationRequest for CN=common_name, signed with private_key
    (32 bytes; public_key must be its public half). Deterministic: the
    signature's nonce follows RFC 6979."""
    info = der.sequence(
        der.integer(0),
        name(common_name),
        subject_public_key_info(public_key),
        der.context(0, b""),                 # attributes: none
    )
    signature = p256.sign(private_key, sha256(info).digest())
    return der.sequence(
        info,
        der.sequence(der.OID_ECDSA_WITH_SHA256),
        der.bit_string(der.ecdsa_signature(signature)),
    )
