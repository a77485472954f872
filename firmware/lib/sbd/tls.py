# The device's TLS client: mutual TLS with the lab CA. Verification is always
# on (CERT_REQUIRED, the CA from provisioning, the broker's host name); there
# is no switch to turn it off. After the handshake the device also checks the
# broker certificate's validity dates itself against its (set) clock. It
# offers only cipher suites with forward secrecy (ECDHE) and authenticated
# encryption (AES-GCM) for its ECDSA key: the port's mbedTLS would otherwise
# also offer CBC, static-RSA and PSK suites (sbd verify reads the ClientHello).
# Provisions: ETSI EN 303 645 5.5-1, 5.5-6, 5.8-1, 5.8-2; NIST IR 8259A 3;
# EU CRA Annex I (2)(e); OWASP ISVS 4.1.1, 4.1.2, 4.1.3.
import socket
import ssl
from sbd import clock, der, identity, store


# mbedTLS's names (SSLContext.set_ciphers, extmod/modtls_mbedtls.c)
CIPHERS = ("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384")


class TLSError(Exception):
    pass


def _private_key_der():
    # SEC1 ECPrivateKey, built in RAM for mbedTLS only; never stored or printed.
    sk = store.get("sk", 32)
    return der.sequence(der.integer(1), der.octet_string(sk),
                        der.context(0, der.oid("1.2.840.10045.3.1.7")),
                        der.context(1, der.bit_string(identity.public_key())))


_context = None


def context():
    """The one TLS context of this boot, made when the link starts (sbd.link),
    else at the first connection, and reused by every reconnection: an SSLContext is one block of about 3 KiB in the
    Python heap (mbedTLS's configuration, entropy and certificates inside it),
    which a heap fragmented by an hour online may no longer have in one piece
    when the broker comes back (seen on the emulated board: every reconnection
    after a broker outage refused "memory allocation failed"). It holds the
    parsed device key in RAM for the boot, as the open connection does anyway."""
    global _context
    if _context is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        # micropython-lib's ssl.SSLContext wraps the port's tls.SSLContext, which has set_ciphers
        getattr(ctx, "_context", ctx).set_ciphers(CIPHERS)
        ctx.load_verify_locations(cadata=identity.ca_certificate())
        ctx.load_cert_chain(identity.certificate(), _private_key_der())
        _context = ctx
    return _context


def connect(address, port, hostname, timeout_s=10):
    """An authenticated TLS stream to the broker, or TLSError."""
    if not clock.is_set():
        raise TLSError("clock not set")
    import gc
    gc.collect()  # the handshake needs a few KiB in one piece
    sock = socket.socket()
    try:
        sock.settimeout(timeout_s)
        sock.connect(socket.getaddrinfo(address, port)[0][-1])
        stream = context().wrap_socket(sock, server_hostname=hostname)
    except Exception as e:
        sock.close()
        raise TLSError("handshake failed: %s" % (e.args[0] if e.args else type(e).__name__))
    # mbedTLS checks the validity dates against the clock; where the port
    # offers the peer certificate (ESP32 builds keep it), check them here too.
    # Any failure from here on, a certificate that does not parse included,
    # closes the stream before it is reported.
    try:
        getpeercert = getattr(stream, "getpeercert", None)
        peer = getpeercert(True) if getpeercert else None
        if peer:
            now = clock.asn1_now()
            if not der.cert_not_before(peer) <= now <= der.cert_not_after(peer):
                raise TLSError("broker certificate not valid now")
    except Exception as e:
        stream.close()
        if isinstance(e, TLSError):
            raise
        raise TLSError("broker certificate unreadable: %s" % type(e).__name__)
    return stream
