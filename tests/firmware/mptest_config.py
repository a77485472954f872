# MicroPython unit tests of device settings validation (sbd.config).
import mphelpers


mphelpers.install_fake_nvs()
from sbd import config  # noqa: E402

GOOD = {"wifi_ssid": "lab", "wifi_psk": "correct horse", "broker_addr": "198.18.0.1"}


def rejected(settings, text):
    try:
        config.validate(settings)
    except config.ConfigError as e:
        assert text in str(e), (str(e), text)
        return
    raise AssertionError("accepted %r" % (settings,))


def test_valid_settings_get_defaults_and_round_trip():
    assert config.load() is None
    config.save(GOOD)
    got = config.load()
    assert got["broker_port"] == 8883 and got["broker_host"] == "broker.sbd.lab" and got["wifi_ssid"] == "lab"
    assert got["ntp_host"] == "" and got["ntp_port"] == 123


def test_every_field_is_validated():
    rejected(dict(GOOD, wifi_psk="short"), "wifi_psk")
    rejected(dict(GOOD, wifi_ssid=""), "wifi_ssid")
    rejected(dict(GOOD, wifi_ssid="x" * 33), "wifi_ssid")
    rejected(dict(GOOD, broker_addr="198.18.0.256"), "broker_addr")
    rejected(dict(GOOD, broker_addr="broker"), "broker_addr")
    rejected(dict(GOOD, broker_port=0), "broker_port")
    rejected(dict(GOOD, broker_port="8883"), "broker_port")
    rejected(dict(GOOD, broker_port=True), "broker_port")
    rejected(dict(GOOD, broker_host="Evil_Host"), "broker_host")
    rejected(dict(GOOD, telemetry_s=0), "telemetry_s")
    rejected(dict(GOOD, ntp_port=0), "ntp_port")
    rejected(dict(GOOD, ntp_port="123"), "ntp_port")
    rejected(dict(GOOD, ntp_host="ntp:123"), "ntp_host")
    rejected(dict(GOOD, wifi_psk="bad\x00byte!!"), "wifi_psk")
    rejected(dict(GOOD, debug=True), "unknown field")
    rejected([1, 2], "not an object")
    rejected({"wifi_ssid": "lab", "wifi_psk": "correct horse"}, "missing broker_addr")
