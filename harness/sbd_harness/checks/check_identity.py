"""Unique device identity, no default or shared secrets, a locked console,
authenticated commands, and a factory reset that leaves no trace.

They work on a locked board through what it exposes (boot line, console
input, the lab CA's records); emulated boards also let them read the flash.
"""
from __future__ import annotations

import re
import tempfile
import threading
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sbd_harness.bootline import last_boot_line
from sbd_harness.checks.leaks import find_key
from sbd_harness.pki import LabCA, fingerprint, public_point

NVS_NS = "sbd"
PROMPTS = (">>> ", "raw REPL", "paste mode")
DEFAULT_CREDENTIALS = {"admin", "password", "passw0rd", "root", "toor", "1234", "12345", "123456", "12345678",
                       "default", "changeme", "guest", "user", "esp32", "micropython", "secret", "letmein"}
CREDENTIAL_NAME = re.compile(r"(pass(word|wd)?|pwd|secret|token|api_?key|psk|private_?key|priv_?key|_sk\b|"
                             r"factory_?key|credential)", re.I)
ASSIGNED_LITERAL = re.compile(r"""^\s*([A-Za-z_][\w.]*)\s*[:=]\s*[bru]*(["'])(.*?)\2""", re.M)


def _boot(sbd_boot):
    boot = sbd_boot.boot_line
    if boot is None:
        pytest.skip("no boot line to learn the device's state from (see boot-line-identifies-firmware)")
    return boot


def _require_provisioned(boot):
    if not boot.get("security", {}).get("provisioned"):
        pytest.skip("the board is not provisioned (sbd provision)")


def _flash_store(board):
    """The NVS store of an emulated board, read off its flash image."""
    from sbd_harness.emulator.nvs_reader import read_store
    return read_store(board.flash_image().read_partition("nvs"))


def _emulated(board):
    return getattr(board, "kind", "") == "emulated"


@pytest.mark.sbd_check(
    id="identity-certified-by-lab-ca",
    title="The device holds a certificate the lab CA issued for its own key and ID, not revoked",
    etsi_en_303_645=["5.1-3", "5.4-4"], nist_ir_8259a=["1"], eu_cra=["I(2)(d)"])
def check_identity_certified(sbd_board, sbd_boot, sbd_ca, sbd_evidence):
    boot = _boot(sbd_boot)
    _require_provisioned(boot)
    device_id = boot["device_id"]
    cert = sbd_ca.issued_certificate(device_id)
    assert cert is not None, f"the lab CA never certified device {device_id}"
    fp = fingerprint(cert)
    sbd_evidence.update({"device_id": device_id, "cert_sha256": fp, "boot_cert_sha256": boot["security"].get("cert_sha256")})
    assert boot["security"].get("cert_sha256") == fp, "the device's certificate is not the one the CA issued it"
    try:
        sbd_ca.certificate.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AssertionError("the certificate on record is not signed by the lab CA") from None
    assert cert.subject.rfc4514_string() == f"CN={device_id}"
    if _emulated(sbd_board):  # the device holds the key its certificate names
        held = _flash_store(sbd_board).get((NVS_NS, "pk"), b"")
        assert held == public_point(cert.public_key()), "the device's key is not the certified one"
    assert not sbd_ca.is_revoked(device_id), "the device's certificate is revoked"


@pytest.mark.sbd_check(
    id="device-keys-unique",
    title="No other device shares this device's key or ID",
    etsi_en_303_645=["5.4-4"], nist_ir_8259a=["1"], owasp_isvs=["2.1.10"])
def check_device_keys_unique(sbd_board, sbd_boot, sbd_ca, sbd_evidence):
    boot = _boot(sbd_boot)
    _require_provisioned(boot)
    device_id = boot["device_id"]
    devices = sbd_ca.index()["devices"]
    mine = devices[device_id]["public_key"]
    clashes = sorted(other for other, e in devices.items() if other != device_id and e["public_key"] == mine)
    sbd_evidence["devices_certified"] = len(devices)
    if _emulated(sbd_board):
        from sbd_harness.boards.emulated import EmulatedBoard
        for other in EmulatedBoard.all():
            if other.name == sbd_board.name:
                continue
            if _flash_store(other).get((NVS_NS, "pk"), b"").hex() == mine:
                clashes.append(f"key of emulated board {other.name}")
            if other.conf["unique_id"] == device_id:
                clashes.append(f"ID of emulated board {other.name}")
        sbd_evidence["emulated_boards_compared"] = len(EmulatedBoard.all()) - 1
    assert not clashes, f"the same key is held by: {clashes}"


def _literal_credentials(files: dict[str, bytes]) -> list[str]:
    found = []
    for path, data in files.items():
        if not path.endswith(".py"):
            continue
        for m in ASSIGNED_LITERAL.finditer(data.decode(errors="replace")):
            name, value = m.group(1), m.group(3)
            if CREDENTIAL_NAME.search(name) and value:
                found.append(f"{path}: {name} = {value[:12]!r}")
            elif value.lower() in DEFAULT_CREDENTIALS and CREDENTIAL_NAME.search(m.group(0)):
                found.append(f"{path}: {name} = {value!r}")
    return found


@pytest.mark.sbd_check(
    id="no-default-or-shared-secrets",
    title="The firmware image holds no password, key or other shared secret, and no two boards share one",
    etsi_en_303_645=["5.1-1", "5.1-2", "5.4-3"], uk_psti=["Sch1(1)"], owasp_isvs=["2.1.9", "2.1.10"],
    eu_cra=["I(2)(b)"])
def check_no_shared_secrets(sbd_board, sbd_bundle, sbd_evidence):
    found = _literal_credentials(sbd_bundle.sources)
    shared = []
    if _emulated(sbd_board):
        from sbd_harness.boards.emulated import EmulatedBoard
        mine = _flash_store(sbd_board)
        for other in EmulatedBoard.all():
            if other.name == sbd_board.name:
                continue
            theirs = _flash_store(other)
            for key, value in mine.items():
                if key[1] in ("sk",) and isinstance(value, bytes) and theirs.get(key) == value:
                    shared.append(f"{key[0]}/{key[1]} also on {other.name}")
    sbd_evidence.update({"files_scanned": len(sbd_bundle.sources), "literal_credentials": found, "shared": shared})
    assert not found, f"credentials in the firmware image: {found}"
    assert not shared, f"secrets shared between boards: {shared}"


@pytest.mark.sbd_check(
    id="no-private-key-on-serial",
    title="The device's private key appears nowhere in all it ever sent on the serial port",
    etsi_en_303_645=["5.4-1", "5.6-2"], nist_ir_8259a=["3"], eu_cra=["I(2)(e)"])
def check_no_key_on_serial(sbd_board, sbd_evidence):
    if not _emulated(sbd_board):
        pytest.skip("needs the key from the flash image: emulated boards only")
    secret = _flash_store(sbd_board).get((NVS_NS, "sk"))
    if not secret:
        pytest.skip("the device has no key yet")
    log = sbd_board.state.serial_log.read_bytes()
    hits = find_key(secret, log)
    from sbd_harness.checks.leaks import key_encodings
    sbd_evidence.update({"serial_log_bytes": len(log), "encodings_searched": len(key_encodings(secret)),
                         "found_as": hits})
    assert not hits, f"the private key is in the serial log as {hits}"


def _prompts(text: str) -> list[str]:
    return [p for p in PROMPTS if p in text]


@pytest.mark.sbd_check(
    id="console-locked",
    title="A locked board gives no REPL: not to Ctrl-C/Ctrl-A/Ctrl-E, not to a Ctrl-C storm during boot",
    etsi_en_303_645=["5.6-4A"], owasp_isvs=["3.1.3"], nist_ir_8259a=["4"], eu_cra=["I(2)(d)", "I(2)(j)"])
def check_console_locked(sbd_board, sbd_boot, sbd_evidence):
    boot = _boot(sbd_boot)
    if boot.get("security", {}).get("console") != "locked":
        pytest.skip("the console is open by design until the board is provisioned and locked")
    with sbd_board._open_port() as port:
        port.reset_input_buffer()
        for keys in (b"\r\x03\x03", b"\r\x01", b"\r\x02", b"\r\x05", b"\x04", b"help()\r"):
            port.write(keys)
            time.sleep(0.3)
        time.sleep(1.0)
        quiet = port.read(65536).decode(errors="replace")
    sbd_evidence["after_control_keys"] = quiet[-300:]
    if _prompts(quiet):
        _leave_running(sbd_board)
    assert not _prompts(quiet), f"the locked console answered with {_prompts(quiet)}"
    # A Ctrl-C storm from power-on: the window before the firmware closes the console.
    stop = threading.Event()
    with sbd_board._open_port() as port:
        port.reset_input_buffer()

        def storm() -> None:
            while not stop.is_set():
                port.write(b"\x03\x01\x03\x05")
                time.sleep(0.002)

        t = threading.Thread(target=storm)
        t.start()
        try:
            sbd_board._trigger_reset(port, "hard")
            data = bytearray()
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                data += port.read(4096)
        finally:
            stop.set()
            t.join()
        time.sleep(0.5)
        data += port.read(65536)
    text = data.decode(errors="replace")
    after = text[text.rfind("rst:0x"):] if "rst:0x" in text else text
    sbd_evidence["storm_boot_line"] = last_boot_line(after)
    if _prompts(after):
        _leave_running(sbd_board)
    assert not _prompts(after), f"a Ctrl-C storm during boot got {_prompts(after)}"


def _leave_running(board) -> None:
    """A console that broke into the REPL leaves the firmware stopped; reset it so the
    checks after this one find the device running, as they would otherwise."""
    try:
        board.reset("hard")
    except Exception:  # noqa: BLE001 - best effort; the failure is already recorded
        pass


@pytest.mark.sbd_check(
    id="commands-need-a-valid-signature",
    title="Forged, replayed, misdirected or malformed commands are refused and change nothing",
    etsi_en_303_645=["5.5-5", "5.13-1A"], nist_ir_8259a=["2"], eu_cra=["I(2)(d)"])
def check_commands_authenticated(sbd_board, sbd_boot, sbd_ca, sbd_evidence):
    boot = _boot(sbd_boot)
    if boot.get("security", {}).get("console") != "locked":
        pytest.skip("commands are served by the locked firmware")
    device_id, cert = boot["device_id"], boot["security"].get("cert_sha256")
    with tempfile.TemporaryDirectory() as tmp:
        rogue = LabCA(tmp)
        rogue.init("rogue CA")
        forged = rogue.sign_payload({"cmd": "status", "device": device_id, "cert": cert, "seq": 2**30})
    body = {"device": device_id, "cert": cert, "seq": 2**30}
    # Harmless commands only: a device that wrongly accepts one must not wipe itself.
    must_refuse = {
        "forged": forged,
        "other-device": sbd_ca.sign_payload(dict(body, cmd="status", device="0000deadbeef")),
        "earlier-certificate": sbd_ca.sign_payload(dict(body, cmd="status", cert="00" * 32)),
        "unknown-command": sbd_ca.sign_payload(dict(body, cmd="shell")),
        "bad-args": sbd_ca.sign_payload(dict(body, cmd="status", args={"x": 1})),
        "malformed": "SBD-CMD not-base64!! ???",
        "oversized": "SBD-CMD " + "A" * 3000 + " B",
    }
    replies = {}
    for name, line in must_refuse.items():
        replies[name] = sbd_board.console_request(line)
        if replies[name].get("ok"):
            break
    else:
        good = sbd_ca.sign_command(device_id, "status")
        replies["valid"] = sbd_board.console_request(good)
        replies["replayed"] = sbd_board.console_request(good)
        replies["still-serving"] = sbd_board.console_request(sbd_ca.sign_command(device_id, "status"))
    sbd_evidence["replies"] = replies
    accepted = [n for n in replies if n in must_refuse or n == "replayed" if replies[n].get("ok")]
    assert not accepted, f"accepted what it must refuse: {accepted}"
    assert replies["valid"].get("ok"), f"a valid signed command was refused: {replies['valid']}"
    assert replies["still-serving"].get("ok"), "the device stopped serving commands after the refused ones"

@pytest.mark.sbd_check(
    id="factory-reset-erases-identity",
    title="Factory reset leaves no trace of the old key, certificate or data and asks for provisioning again",
    etsi_en_303_645=["5.11-1"], nist_ir_8259a=["2"], eu_cra=["I(2)(m)", "I(2)(b)"])
def check_factory_reset(sbd_board, sbd_boot, sbd_ca, sbd_evidence, sbd_destructive):
    boot = _boot(sbd_boot)
    _require_provisioned(boot)
    device_id = boot["device_id"]
    old = {}
    if _emulated(sbd_board):
        store = _flash_store(sbd_board)
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
        reply = sbd_board.console_request(sbd_ca.sign_command(device_id, "factory_reset"))
        assert reply.get("ok"), f"the signed factory-reset command was refused: {reply}"
        trigger = "signed factory_reset command"
        text = ""
    capture = sbd_board.capture_boot("hard") if not _emulated(sbd_board) else None
    after = capture.boot_line if capture else last_boot_line(text[text.rfind("rst:0x"):])
    sbd_evidence.update({"trigger": trigger, "boot_line_after": after})
    assert after is not None and after["device_id"] == device_id
    assert after["security"]["provisioned"] is False and after["security"].get("cert_sha256") is None
    if old:
        image = sbd_board.flash_image().read(0, sbd_board.flash_image().size)
        left = sorted(name for name, value in old.items() if value in image)
        sbd_evidence["old_secrets_left_in_flash"] = left
        assert not left, f"after the factory reset the flash still holds the old {left}"
