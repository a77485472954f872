# MicroPython unit tests of the TLS client's own check of the broker
# certificate (sbd.tls), with the peer certificate as an ESP32 build gives it:
# ports/esp32 builds ESP-IDF's mbedTLS with MBEDTLS_SSL_KEEP_PEER_CERTIFICATE
# (on by default), so the SSL socket has getpeercert(True) and the check runs
# there (extmod/modtls_mbedtls.c). The unix port's build lacks it, so the
# socket and the handshake are stand-ins here and the certificates are real
# DER (tls_vectors.py). Whatever the check finds, the stream must be closed.
#
# mptest-vectors: tls_vectors
import os
import sys
import mphelpers

sys.path.append(".frozen")  # the unix port freezes ssl, as the ESP32 build does
mphelpers.install_fake_nvs()
from sbd import tls  # noqa: E402

VECTORS = os.getenv("SBD_MP_VECTORS")


def cert(name):
    with open(VECTORS + "/" + name + ".der", "rb") as f:
        return f.read()


class FakeStream:
    # An ESP32 SSL socket after a completed handshake.
    def __init__(self, peer):
        self.peer = peer
        self.closed = False

    def getpeercert(self, binary_form):
        if not binary_form:
            raise NotImplementedError  # as modtls_mbedtls.c
        return self.peer

    def close(self):
        self.closed = True


class FakeSocket:
    def __init__(self, *args):
        self.closed = False

    def settimeout(self, t):
        pass

    def connect(self, addr):
        pass

    def close(self):
        self.closed = True


class FakeSocketModule:
    socket = FakeSocket

    @staticmethod
    def getaddrinfo(host, port):
        return [(2, 1, 0, "", (host, port))]


class FakeContext:
    def __init__(self, peer):
        self.stream = FakeStream(peer)

    def wrap_socket(self, sock, server_hostname=None):
        return self.stream


tls.socket = FakeSocketModule


def connect_with(peer):
    ctx = FakeContext(peer)
    tls.context = lambda: ctx
    try:
        return tls.connect("198.18.0.1", 8883, "broker.sbd.lab"), ctx.stream, None
    except Exception as e:
        return None, ctx.stream, e


def test_a_certificate_valid_now_gives_an_open_stream():
    stream, fake, err = connect_with(cert("valid"))
    assert err is None and stream is fake and not fake.closed, err


def test_an_expired_certificate_is_refused_and_the_stream_closed():
    stream, fake, err = connect_with(cert("expired"))
    assert isinstance(err, tls.TLSError) and "not valid now" in str(err), repr(err)
    assert fake.closed


def test_a_certificate_not_yet_valid_is_refused_and_the_stream_closed():
    stream, fake, err = connect_with(cert("future"))
    assert isinstance(err, tls.TLSError), repr(err)
    assert fake.closed


def test_a_certificate_that_does_not_parse_is_refused_and_the_stream_closed():
    for name in ("truncated", "not_der"):
        stream, fake, err = connect_with(cert(name))
        assert isinstance(err, tls.TLSError), (name, repr(err))
        assert fake.closed, name


def test_no_peer_certificate_leaves_the_dates_to_mbedtls():
    stream, fake, err = connect_with(None)
    assert err is None and not fake.closed
