"""What a TLS client offers, read from its ClientHello: the protocol versions,
the cipher suites, the signature algorithms and the groups, each judged
against what the lab broker accepts (TLS 1.2 or newer, ECDHE or TLS 1.3 key
exchange, AEAD ciphers; no SHA-1 or MD5 in signatures).

The lab reads the ClientHello as the first bytes of a connection, before any
TLS library touches them (`peek_client_hello`), so what is judged is what the
device sent on the wire, not what a server chose from it (RFC 8446 4.1.2,
RFC 5246 7.4.1.2).
"""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
# Signaling values, not suites (RFC 5746, RFC 7507); GREASE values (RFC 8701) are skipped too.
SIGNALING = {0x00FF, 0x5600}
TLS13_SUITES = {0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
                0x1303: "TLS_CHACHA20_POLY1305_SHA256", 0x1304: "TLS_AES_128_CCM_SHA256"}
# TLS 1.2 suites with forward secrecy (ECDHE, DHE) and an AEAD cipher (IANA TLS Cipher Suites registry).
STRONG_TLS12 = {
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256", 0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305", 0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305",
    0xC0AC: "ECDHE-ECDSA-AES128-CCM", 0xC0AD: "ECDHE-ECDSA-AES256-CCM",
    0x009E: "DHE-RSA-AES128-GCM-SHA256", 0x009F: "DHE-RSA-AES256-GCM-SHA384",
}
# A few weak ones by name, for the report (any other suite is shown by its code).
WEAK_NAMES = {
    0xC009: "ECDHE-ECDSA-AES128-SHA (CBC)", 0xC00A: "ECDHE-ECDSA-AES256-SHA (CBC)",
    0xC013: "ECDHE-RSA-AES128-SHA (CBC)", 0xC014: "ECDHE-RSA-AES256-SHA (CBC)",
    0xC023: "ECDHE-ECDSA-AES128-SHA256 (CBC)", 0xC024: "ECDHE-ECDSA-AES256-SHA384 (CBC)",
    0xC027: "ECDHE-RSA-AES128-SHA256 (CBC)", 0xC028: "ECDHE-RSA-AES256-SHA384 (CBC)",
    0x009C: "RSA-AES128-GCM-SHA256 (no forward secrecy)", 0x009D: "RSA-AES256-GCM-SHA384 (no forward secrecy)",
    0x002F: "RSA-AES128-SHA (CBC, no forward secrecy)", 0x0035: "RSA-AES256-SHA (CBC, no forward secrecy)",
    0x003C: "RSA-AES128-SHA256 (CBC, no forward secrecy)", 0x003D: "RSA-AES256-SHA256 (CBC, no forward secrecy)",
    0x00A8: "PSK-AES128-GCM-SHA256 (pre-shared key)", 0x00A9: "PSK-AES256-GCM-SHA384 (pre-shared key)",
    0x008C: "PSK-AES128-CBC-SHA (pre-shared key)", 0x008D: "PSK-AES256-CBC-SHA (pre-shared key)",
    0x00AE: "PSK-AES128-CBC-SHA256 (pre-shared key)", 0x00AF: "PSK-AES256-CBC-SHA384 (pre-shared key)",
    0x000A: "RSA-3DES-EDE-CBC-SHA", 0x0005: "RSA-RC4-SHA", 0x0004: "RSA-RC4-MD5",
}
# TLS SignatureScheme values (RFC 8446 4.2.3, RFC 5246 7.4.1.4.1): SHA-1 or MD5 hashes are weak.
SIG_NAMES = {
    0x0401: "rsa_pkcs1_sha256", 0x0501: "rsa_pkcs1_sha384", 0x0601: "rsa_pkcs1_sha512",
    0x0403: "ecdsa_secp256r1_sha256", 0x0503: "ecdsa_secp384r1_sha384", 0x0603: "ecdsa_secp521r1_sha512",
    0x0804: "rsa_pss_rsae_sha256", 0x0805: "rsa_pss_rsae_sha384", 0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519", 0x0808: "ed448", 0x0809: "rsa_pss_pss_sha256", 0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512", 0x0201: "rsa_pkcs1_sha1", 0x0203: "ecdsa_sha1", 0x0202: "dsa_sha1",
    0x0101: "rsa_pkcs1_md5", 0x0301: "rsa_pkcs1_sha224", 0x0303: "ecdsa_sha224", 0x0302: "dsa_sha224",
}
GROUP_NAMES = {0x0017: "secp256r1", 0x0018: "secp384r1", 0x0019: "secp521r1", 0x001D: "x25519", 0x001E: "x448",
               0x0015: "secp224r1", 0x0013: "secp192r1", 0x001A: "brainpoolP256r1"}


class ClientHelloError(ValueError):
    pass


def _grease(value: int) -> bool:
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def _suite_name(code: int) -> str:
    return TLS13_SUITES.get(code) or STRONG_TLS12.get(code) or WEAK_NAMES.get(code) or f"0x{code:04x}"


@dataclass
class ClientHello:
    """What the client offered."""
    legacy_version: int
    suites: list[int]
    sig_algs: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)

    @property
    def versions(self) -> list[int]:
        """The versions offered: the supported_versions extension where there is one, else the legacy
        field, which in TLS 1.2 is the highest the client speaks."""
        return self.supported_versions or [self.legacy_version]

    def weak_suites(self) -> list[str]:
        return [_suite_name(s) for s in self.suites
                if s not in SIGNALING and not _grease(s) and s not in TLS13_SUITES and s not in STRONG_TLS12]

    def weak_sig_algs(self) -> list[str]:
        """Signature schemes hashing with MD5 or SHA-1 (the high byte 1 or 2 of TLS 1.2's
        hash/signature pairs), offered for the server's signature."""
        return [SIG_NAMES.get(a, f"0x{a:04x}") for a in self.sig_algs if not _grease(a) and (a >> 8) in (1, 2)]

    def problems(self) -> list[str]:
        """What a best-practice client would not offer (the lab broker's own bar)."""
        out = []
        if max(v for v in self.versions if not _grease(v)) < 0x0303:
            out.append("offers nothing newer than " + VERSIONS.get(max(self.versions), hex(max(self.versions))))
        old = [VERSIONS.get(v, hex(v)) for v in self.supported_versions if v < 0x0303 and not _grease(v)]
        if old:
            out.append("offers " + ", ".join(old))
        weak = self.weak_suites()
        if weak:
            out.append(f"offers {len(weak)} cipher suite(s) without forward secrecy or AEAD: " + ", ".join(weak))
        if not [s for s in self.suites if s in STRONG_TLS12 or s in TLS13_SUITES]:
            out.append("offers no suite with forward secrecy and AEAD")
        if self.weak_sig_algs():
            out.append("accepts server signatures with weak hashes: " + ", ".join(self.weak_sig_algs()))
        return out

    def summary(self) -> dict[str, Any]:
        return {"versions": [VERSIONS.get(v, f"0x{v:04x}") for v in self.versions if not _grease(v)],
                "cipher_suites": [_suite_name(s) for s in self.suites if s not in SIGNALING and not _grease(s)],
                "signature_algorithms": [SIG_NAMES.get(a, f"0x{a:04x}") for a in self.sig_algs if not _grease(a)],
                "groups": [GROUP_NAMES.get(g, f"0x{g:04x}") for g in self.groups if not _grease(g)],
                "extensions": self.extensions}


def parse(record: bytes) -> ClientHello:
    """A ClientHello from the first TLS record of a connection (RFC 8446 4.1.2); ClientHelloError
    when the bytes are not one."""
    try:
        if len(record) < 9 or record[0] != 0x16:
            raise ClientHelloError("not a TLS handshake record")
        length = struct.unpack("!H", record[3:5])[0]
        body = record[5:5 + length]
        if body[0] != 0x01:
            raise ClientHelloError("the first handshake message is not a ClientHello")
        hs_len = int.from_bytes(body[1:4], "big")
        msg = body[4:4 + hs_len]
        if len(msg) < hs_len:
            raise ClientHelloError("the ClientHello spans more than one record")
        legacy = struct.unpack("!H", msg[0:2])[0]
        at = 2 + 32  # random
        sid_len = msg[at]
        at += 1 + sid_len
        cs_len = struct.unpack("!H", msg[at:at + 2])[0]
        at += 2
        suites = [struct.unpack("!H", msg[i:i + 2])[0] for i in range(at, at + cs_len, 2)]
        at += cs_len
        comp_len = msg[at]
        at += 1 + comp_len
        hello = ClientHello(legacy, suites)
        if at + 2 > len(msg):
            return hello
        end = at + 2 + struct.unpack("!H", msg[at:at + 2])[0]
        at += 2
        while at + 4 <= end:
            ext, n = struct.unpack("!HH", msg[at:at + 4])
            data = msg[at + 4:at + 4 + n]
            at += 4 + n
            hello.extensions.append(ext)
            if ext == 13:  # signature_algorithms
                hello.sig_algs = [struct.unpack("!H", data[i:i + 2])[0] for i in range(2, 2 + struct.unpack("!H", data[:2])[0], 2)]
            elif ext == 10:  # supported_groups
                hello.groups = [struct.unpack("!H", data[i:i + 2])[0] for i in range(2, 2 + struct.unpack("!H", data[:2])[0], 2)]
            elif ext == 43:  # supported_versions
                hello.supported_versions = [struct.unpack("!H", data[i:i + 2])[0] for i in range(1, 1 + data[0], 2)]
        return hello
    except (IndexError, struct.error) as exc:
        raise ClientHelloError(f"a truncated ClientHello: {exc}") from None


def peek_client_hello(conn: socket.socket, timeout: float = 5.0) -> bytes:
    """The first TLS record of a connection, read without taking it off the socket (MSG_PEEK), so a
    TLS server can still be run over the same connection. Empty when the client sent nothing."""
    deadline = time.monotonic() + timeout
    want, got = 5, b""
    while time.monotonic() < deadline:
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            got = conn.recv(65536, socket.MSG_PEEK)
        except (socket.timeout, TimeoutError):
            break
        if not got:
            break
        if len(got) >= 5:
            want = 5 + struct.unpack("!H", got[3:5])[0]
        if len(got) >= want:
            return got[:want]
        time.sleep(0.01)
    return got
