# The device's own identity: a P-256 key pair born on the device, and the
# certificate the manufacturer's CA issues for it. The private key is used in
# place and never printed, logged or sent anywhere.
# Provisions: ETSI EN 303 645 5.1-1/5.1-2 (no shared default credential: each
# device authenticates with its own key), 5.4-1, 5.4-3, 5.4-4 (per-device
# secrets); NIST IR 8259A 1 (identification) and 3 (data protection);
# EU CRA Annex I (2)(d) and (e).
import binascii
import hashlib
from sbd import device, store

_SK, _PK, _CERT, _CA = "sk", "pk", "cert", "ca"


def public_key():
    return store.get(_PK, 65)


def certificate():
    return store.get(_CERT)


def ca_certificate():
    return store.get(_CA)


def provisioned():
    return certificate() is not None


def fingerprint():
    """SHA-256 of the device certificate (hex), or None before provisioning."""
    cert = certificate()
    if cert is None:
        return None
    return binascii.hexlify(hashlib.sha256(cert).digest()).decode()


def ensure_keypair():
    """Generates the key pair on first boot; returns True when it made one."""
    if public_key() is not None:
        return False
    # os.urandom is the ESP32's hardware RNG, fully random only while the
    # radio runs: switch it on for the moment of key generation.
    import network
    wlan = network.WLAN(network.STA_IF)
    was_active = wlan.active()
    wlan.active(True)
    from sbd import p256
    try:
        sk, pk = p256.generate_keypair()
    finally:
        wlan.active(was_active)
    store.put(_SK, sk)
    store.put(_PK, pk)
    return True


def csr():
    """A PKCS#10 request, CN = device ID, signed on the device."""
    from sbd import csr as csr_mod
    return csr_mod.build_csr(store.get(_SK, 32), public_key(), device.device_id())


def sign(digest):
    from sbd import p256
    return p256.sign(store.get(_SK, 32), digest)


def install(cert_der, ca_der):
    """Stores the certificate and its CA after checking that the certificate
    is for this device's key and that the CA signed it."""
    from sbd import der, p256
    if der.cert_public_key(cert_der) != public_key():
        raise ValueError("certificate is not for this device's key")
    tbs, sig = der.cert_tbs_and_signature(cert_der)
    if not p256.verify(der.cert_public_key(ca_der), hashlib.sha256(tbs).digest(), sig):
        raise ValueError("certificate is not signed by the given CA")
    store.put(_CERT, cert_der)
    store.put(_CA, ca_der)
