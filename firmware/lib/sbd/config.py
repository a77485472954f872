# Device settings (Wi-Fi, broker, telemetry interval): validated field by
# field before anything is stored, kept in NVS, never printed. The Wi-Fi
# passphrase is the user's network's, set at provisioning: nothing in the
# firmware image is a default credential.
# Provisions: ETSI EN 303 645 5.13-1A/5.13-1B (input validation), 5.4-1,
# 5.1-1; NIST IR 8259A 2 (device configuration).
import json
from sbd import store

KEY = "config"
DEFAULTS = {"broker_port": 8883, "broker_host": "broker.sbd.lab", "telemetry_s": 10, "ntp_host": "",
            "ntp_port": 123}


class ConfigError(ValueError):
    pass


def _text(v, lo, hi, allowed=None):
    if not isinstance(v, str) or not lo <= len(v) <= hi:
        raise ConfigError("bad length")
    for c in v:
        if ord(c) < 0x20 or ord(c) > 0x7E or (allowed is not None and c not in allowed):
            raise ConfigError("bad character")
    return v


def _int(v, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError("out of range")
    return v


def _ipv4(v):
    parts = _text(v, 7, 15, "0123456789.").split(".")
    if len(parts) != 4 or not all(p and len(p) <= 3 and int(p) <= 255 for p in parts):
        raise ConfigError("not an IPv4 address")
    return v


HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-"
FIELDS = {
    "wifi_ssid": lambda v: _text(v, 1, 32),
    "wifi_psk": lambda v: _text(v, 8, 63),
    "broker_addr": _ipv4,
    "broker_port": lambda v: _int(v, 1, 65535),
    "broker_host": lambda v: _text(v, 1, 253, HOST_CHARS),
    "ntp_host": lambda v: _text(v, 0, 253, HOST_CHARS),
    "ntp_port": lambda v: _int(v, 1, 65535),
    "telemetry_s": lambda v: _int(v, 1, 3600),
}
REQUIRED = ("wifi_ssid", "wifi_psk", "broker_addr")


def validate(settings):
    if not isinstance(settings, dict):
        raise ConfigError("not an object")
    out = dict(DEFAULTS)
    for key, value in settings.items():
        check = FIELDS.get(key)
        if check is None:
            raise ConfigError("unknown field " + str(key)[:32])
        try:
            out[key] = check(value)
        except ConfigError as e:
            raise ConfigError(key + ": " + str(e))
    for key in REQUIRED:
        if key not in out:
            raise ConfigError("missing " + key)
    return out


def save(settings):
    store.put(KEY, json.dumps(validate(settings)).encode())


def load():
    raw = store.get(KEY)
    return json.loads(raw) if raw else None
