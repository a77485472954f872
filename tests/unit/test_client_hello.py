"""The ClientHello reader judges what a real TLS client (Python's OpenSSL) offers on the wire, and an
MQTT CONNECT is read field by field without keeping a password."""
from __future__ import annotations

import ssl

from sbd_harness.lab.client_hello import parse
from sbd_harness.lab.first_contact import connect_fields


def _hello(ciphers: str, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
           minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version, ctx.maximum_version = minimum, maximum
    ctx.set_ciphers(ciphers)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="broker.sbd.lab")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_an_aead_ecdhe_offer_at_tls_1_2_has_no_problems():
    hello = parse(_hello("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"))
    assert hello.summary()["cipher_suites"] == ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"]
    assert hello.summary()["versions"] == ["TLS 1.2"]
    assert "ecdsa_secp256r1_sha256" in hello.summary()["signature_algorithms"]
    assert hello.problems() == []


def test_cbc_and_static_rsa_suites_are_named_as_weak():
    hello = parse(_hello("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA:AES128-GCM-SHA256"))
    [problem] = hello.problems()
    assert "2 cipher suite(s) without forward secrecy or AEAD" in problem
    assert "ECDHE-ECDSA-AES128-SHA (CBC)" in problem and "no forward secrecy" in problem


def test_tls_1_3_offers_are_read_from_supported_versions():
    hello = parse(_hello("ECDHE-ECDSA-AES128-GCM-SHA256", maximum=ssl.TLSVersion.TLSv1_3))
    assert hello.summary()["versions"][:2] == ["TLS 1.3", "TLS 1.2"]
    assert "TLS_AES_128_GCM_SHA256" in hello.summary()["cipher_suites"]
    assert hello.problems() == []


def test_a_connect_with_a_password_says_so_without_keeping_it():
    body = (b"\x00\x04MQTT\x04" + bytes([0x02 | 0x80 | 0x40]) + b"\x00\x1e" + b"\x00\x03dev"
            + b"\x00\x03sbd" + b"\x00\x06secret")
    fields = connect_fields(body)
    assert fields["password_flag"] and fields["password_length"] == 6 and fields["username"] == "sbd"
    assert "secret" not in repr(fields) and fields["bytes_after_fields"] == 0
    plain = connect_fields(b"\x00\x04MQTT\x04\x02\x00\x1e\x00\x03dev")
    assert not plain["password_flag"] and plain["client_id"] == "dev"
