# MicroPython unit tests: the TLS context (sbd.tls.context) is made once a boot
# and every reconnection reuses it. An SSLContext is one block of about 3 KiB in
# the Python heap; a heap fragmented by a long time online may no longer have it
# in one piece when the broker comes back (on the emulated board every
# reconnection after a broker outage was refused "memory allocation failed").
import gc
import sys
import mphelpers

sys.path.append(".frozen")  # the unix port freezes ssl, as the ESP32 build does
mphelpers.install_fake_nvs()
from sbd import tls  # noqa: E402
import ssl  # noqa: E402

made = []


class CountingContext:
    # Stands in for the port's SSLContext (the loading of real certificates is the port's).
    def __init__(self, protocol):
        self.protocol = protocol
        self.verify_mode = None
        made.append(self)

    def load_verify_locations(self, cadata=None):
        self.ca = cadata

    def load_cert_chain(self, cert, key):
        self.chain = (cert, key)


tls.ssl = type("ssl", (), {"SSLContext": CountingContext, "PROTOCOL_TLS_CLIENT": ssl.PROTOCOL_TLS_CLIENT,
                           "CERT_REQUIRED": ssl.CERT_REQUIRED})
tls.identity.ca_certificate = lambda: b"ca"
tls.identity.certificate = lambda: b"cert"
tls._private_key_der = lambda: b"key"


def test_every_connection_of_a_boot_uses_the_one_context():
    tls._context = None
    first = tls.context()
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(5):  # five reconnections
        assert tls.context() is first
    gc.collect()
    assert gc.mem_alloc() - before == 0
    assert len(made) == 1
    assert first.verify_mode == ssl.CERT_REQUIRED and first.ca == b"ca" and first.chain == (b"cert", b"key")
