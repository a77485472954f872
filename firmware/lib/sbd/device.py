# The device's identity as the silicon gives it: a unique ID per chip.
# Provisions: NIST IR 8259A 1 (unique logical and physical identifier);
# ETSI EN 303 645 5.4-2 (per-device identity). Never a constant in the image.
import binascii
import machine


def device_id(uid=None):
    """Lower-case hex of machine.unique_id() (the ESP32's base MAC)."""
    if uid is None:
        uid = machine.unique_id()
    if not uid or len(uid) < 6:
        raise ValueError("unique_id too short")
    return binascii.hexlify(uid).decode()


RESET_CAUSES = {
    1: "power_on",
    2: "hard",
    3: "watchdog",
    4: "deep_sleep",
    5: "soft",
}


def reset_cause():
    return RESET_CAUSES.get(machine.reset_cause(), "unknown")
