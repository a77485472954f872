# Provisioning over the serial console, possible only while the device is
# unprovisioned (its console is then open; afterwards it is locked). The
# harness asks for a CSR, the device builds and signs it with its own key,
# the CA's certificate for it comes back, and the device locks its console.
# Provisions: ETSI EN 303 645 5.1-1, 5.4-4 (per-device identity), 5.6-4A
# (debug console access-controlled after provisioning); NIST IR 8259A 1.
import binascii
import machine
from sbd import identity, store, state


def _unprovisioned():
    if identity.provisioned():
        raise RuntimeError("already provisioned: factory reset first")


def request():
    """Prints the CSR, base64 DER, on one line."""
    _unprovisioned()
    identity.ensure_keypair()
    print("CSR", binascii.b2a_base64(identity.csr()).decode().strip())


def install(cert_b64, ca_b64):
    _unprovisioned()
    identity.install(binascii.a2b_base64(cert_b64), binascii.a2b_base64(ca_b64))
    print("INSTALLED", identity.fingerprint())


def release_keys(keys_hex):
    """The release public keys that must sign every update (docs/ota.md)."""
    _unprovisioned()
    import binascii
    from sbd import manifest, slots
    blob = b""
    for k in keys_hex.split(","):
        point = binascii.unhexlify(k)
        if len(point) != 65 or point[0] != 4:
            raise ValueError("not an uncompressed P-256 point")
        blob += point
    if not manifest.trusted_keys(blob):
        raise ValueError("no keys")
    store.put(slots.KEYS_KEY, blob)
    print("RELEASE_KEYS", len(blob) // 65)


def configure(settings_json):
    """Wi-Fi and broker settings; refused whole if any field is invalid."""
    _unprovisioned()
    import json
    from sbd import config
    config.save(json.loads(settings_json))
    print("CONFIGURED")


def lock():
    """Locks the console and reboots into the locked firmware."""
    if not identity.provisioned():
        raise RuntimeError("not provisioned")
    store.put_int(state.LOCKED, 1)
    print("LOCKED")
    machine.reset()
