"""User-data erase: a factory reset leaves no trace of the device's key,
certificate or data, and the device asks to be provisioned again."""
from __future__ import annotations

import pytest

from sbd_harness.checks.common import boot_line_or_skip, flash_store, reads_flash, require_provisioned
from sbd_harness.device.bootline import last_boot_line
from sbd_harness.identity.commands import console_command


@pytest.mark.sbd_check(
    id="factory-reset-erases-identity",
    title="Factory reset leaves no trace of the old key, certificate or data and asks for provisioning again")
def check_factory_reset(sbd_board, sbd_boot, sbd_ca, sbd_evidence, sbd_destructive):
    boot = boot_line_or_skip(sbd_boot)
    require_provisioned(boot)
    device_id = boot["device_id"]
    old = {}
    if reads_flash(sbd_board):
        store = flash_store(sbd_board)
        old = {k[1]: v for k, v in store.items() if k[1] in ("sk", "cert") and isinstance(v, bytes)}
        assert old.get("sk") and old.get("cert"), "no key or certificate in the flash before the reset"
        since = sbd_board.log_size()
        sbd_board.press_boot_button(True)
        try:
            sbd_board.control({"cmd": "reset", "kind": "hard"})
            sbd_board.wait_for_output('"done": true', since, timeout=30, after='"factory_reset"')
        finally:
            sbd_board.press_boot_button(False)  # let go once the device says it erased
        text = sbd_board.wait_for_output('"provisioned": false', since, timeout=30, after='"done": true')
        trigger = "BOOT button held at power-on"
    else:
        reply = console_command(sbd_board, sbd_ca, device_id, "factory_reset")  # with the device's challenge
        assert reply.get("ok"), f"the signed factory-reset command was refused: {reply}"
        trigger = "signed factory_reset command"
        text = ""
    capture = sbd_board.capture_boot("hard") if not reads_flash(sbd_board) else None
    after = capture.boot_line if capture else last_boot_line(text[text.rfind("rst:0x"):])
    sbd_evidence.update({"trigger": trigger, "boot_line_after": after})
    assert after is not None and after["device_id"] == device_id
    assert after["security"]["provisioned"] is False and after["security"].get("cert_sha256") is None
    if old:
        image = sbd_board.flash_image().read(0, sbd_board.flash_image().size)
        left = sorted(name for name, value in old.items() if value in image)
        sbd_evidence["old_secrets_left_in_flash"] = left
        assert not left, f"after the factory reset the flash still holds the old {left}"
