"""Physical access on emulated boards: what someone with the open console of an
unprovisioned board (the one a BOOT-button factory reset gives) can leave
behind, and what survives. Code beside the firmware is never imported at boot;
a factory reset and `sbd flash` leave only the firmware (and, for a flash, the
user data); an update left from another factory image does not run."""
from __future__ import annotations

import json

from sbd_harness.boards.flashing import flash_firmware

# Each prints a marker when imported: none may appear while the firmware boots.
SHADOW_PACKAGE = b'print("PLANTED sbd package ran")\n__path__ = "/lib/sbd"\n'  # hands sbd.* on to /lib/sbd
SHADOW_JSON = b'print("PLANTED json ran")\n'  # json is an extensible built-in: a file would win over it
PLANTED = {"/sbd/__init__.py": SHADOW_PACKAGE, "/notes.txt": b"not code",
           "/ota/slot_a/manifest.json": b'{"format": 1}', "/ota/slot_a/lib/sbd/version.py": b'VERSION = "9"\n'}
USER_DATA = {"/data/outbox/00000001.log": b"kept by a flash, erased by a factory reset"}


def _json(line: str) -> dict:
    try:
        value = json.loads(line.strip())
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _files(board) -> list[str]:
    return board.list_files()[0]


def test_code_beside_the_firmware_is_not_imported_at_boot(make_board, bundle):
    board = make_board("phys")
    flash_firmware(board, bundle)
    board.put_files({**PLANTED, "/json.py": SHADOW_JSON})
    capture = board.capture_boot("hard")
    assert capture.boot_line is not None, capture.transcript[-2000:]
    assert "PLANTED" not in capture.transcript, capture.transcript[-2000:]
    # the REPL an unprovisioned board opens imports from the verified places only, too
    _, path = board.list_files()
    assert path == [".frozen", "/lib"], path


def test_a_factory_reset_leaves_only_the_firmware(make_board, bundle):
    board = make_board("phys")
    flash_firmware(board, bundle)
    board.put_files({**PLANTED, **USER_DATA})
    since = board.log_size()
    board.press_boot_button(True)
    try:
        board.control({"cmd": "reset", "kind": "hard"})
        board.wait_for_output('"done": true', since, timeout=30, after='"factory_reset"')
    finally:
        board.press_boot_button(False)
    board.wait_for_output('"provisioned": false', since, timeout=30, after='"done": true')
    assert _files(board) == sorted(bundle.files)


def test_a_flash_leaves_the_build_and_user_data_and_no_update_state(make_board, bundle):
    board = make_board("phys")
    flash_firmware(board, bundle)
    board.put_files({**PLANTED, **USER_DATA})
    board.exec("import esp32\nn = esp32.NVS('sbd')\n"
               "n.set_blob('ota', b'{\"act\": \"a\", \"try\": \"\", \"prev\": \"\", \"boots\": 0}')\nn.commit()")
    flash_firmware(board, bundle)
    assert _files(board) == sorted([*bundle.files, *USER_DATA])
    record = board.exec("import esp32\ntry:\n    print(esp32.NVS('sbd').get_blob('ota', bytearray(256)))\n"
                        "except OSError as e:\n    print('absent', e.args[0])")
    assert record.strip().startswith("absent"), record


def test_an_update_left_from_another_factory_image_does_not_run(make_board, bundle):
    """The files flashed anew by another tool (NVS and /ota as they were): the
    record still names slot a, installed over the old image. The device refuses
    it, says why, and keeps no update while its factory image runs."""
    board = make_board("phys")
    flash_firmware(board, bundle)
    board.put_files(PLANTED)
    board.exec("import esp32\nn = esp32.NVS('sbd')\n"
               "n.set_blob('ota', b'{\"act\": \"a\", \"try\": \"\", \"prev\": \"\", \"boots\": 0}')\n"
               "n.set_blob('ota_fac', b'0123456789abcdef')\nn.commit()")
    capture = board.capture_boot("hard")
    reports = [r for r in map(_json, capture.transcript.splitlines()) if r.get("sbd") == "ota"]
    assert [(r["event"], r["slot"], r.get("runs")) for r in reports] == [("foreign", "a", "")], capture.transcript
    assert capture.boot_line is not None and "PLANTED" not in capture.transcript
    assert not [p for p in _files(board) if p.startswith("/ota/")]
