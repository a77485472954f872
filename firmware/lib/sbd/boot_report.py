# The boot line: one JSON object on the console at every boot, so the harness
# (or a person with a serial terminal) learns which firmware runs on which
# device, in which security state, from the UART alone, even on a locked
# board. It discloses nothing secret: no keys, no credentials, no settings.
# Provisions: ETSI EN 303 645 5.3-16 (model and version recognisable),
# 5.6-2 (minimal unauthenticated disclosure); NIST IR 8259A 1 (device
# identification) and 6 (cybersecurity state awareness).
import json
from sbd import device, version


def security_state(provisioned=False, console="open", cert_sha256=None):
    return {"profile": version.PROFILE, "provisioned": provisioned, "console": console,
            "cert_sha256": cert_sha256}


def boot_line(device_id, reset_cause, security):
    return json.dumps({
        "sbd": "boot",
        "model": version.MODEL,
        "fw_version": version.VERSION,
        "device_id": device_id,
        "reset_cause": reset_cause,
        "security": security,
    })


def announce(security=None):
    line = boot_line(device.device_id(), device.reset_cause(), security or security_state())
    print(line)
    return line
