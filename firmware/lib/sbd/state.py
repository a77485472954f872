# The device's security state, as the boot line reports it.
# Provisions: NIST IR 8259A 6 (cybersecurity state awareness).
from sbd import identity, store, version

LOCKED = "locked"


def locked():
    """The console is locked once provisioned, until a signed unlock or a factory reset."""
    return store.get_int(LOCKED, 0) == 1 and identity.provisioned()


def summary():
    return {
        "profile": version.PROFILE,
        "provisioned": identity.provisioned(),
        "console": "locked" if locked() else "open",
        "cert_sha256": identity.fingerprint(),
    }
