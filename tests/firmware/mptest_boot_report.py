# MicroPython unit tests of the boot line and the device identity helpers.
import sys
import json


class FakeMachine:
    uid = b"\x24\x0a\xc4\x01\x02\x03"
    cause = 1

    def unique_id(self):
        return self.uid

    def reset_cause(self):
        return self.cause


sys.modules["machine"] = FakeMachine()

from sbd import boot_report, device, version  # noqa: E402


def test_device_id_is_hex_of_unique_id():
    assert device.device_id() == "240ac4010203"
    assert device.device_id(b"\xff" * 6) == "ffffffffffff"


def test_device_id_rejects_short_ids():
    for bad in (b"", b"\x01\x02"):
        try:
            device.device_id(bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % bad)


def test_reset_cause_names():
    assert device.reset_cause() == "power_on"
    sys.modules["machine"].cause = 5
    assert device.reset_cause() == "soft"
    sys.modules["machine"].cause = 99
    assert device.reset_cause() == "unknown"


def test_boot_line_is_one_json_object_with_the_required_keys():
    line = boot_report.boot_line("240ac4010203", "hard", boot_report.security_state())
    assert "\n" not in line
    obj = json.loads(line)
    for key in ("sbd", "model", "fw_version", "device_id", "reset_cause", "security"):
        assert key in obj, key
    assert obj["sbd"] == "boot" and obj["fw_version"] == version.VERSION
    assert obj["security"] == {"profile": "reference", "provisioned": False, "console": "open", "cert_sha256": None}
