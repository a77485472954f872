"""The debug console: a locked board gives no REPL, and what it prints on
its serial port from reset on discloses no secret."""
from __future__ import annotations

import os
import re
import threading
import time

import pytest

from sbd_harness.checks.common import NVS_NS, board_settings, boot_line_or_skip, flash_store, reads_flash
from sbd_harness.checks.leaks import find_key
from sbd_harness.device.bootline import last_boot_line, parse_json_lines


PROMPTS = (">>> ", "raw REPL", "paste mode")


SERIAL_WATCH_S = 10.0    # soak tier: serial output recorded after the first network event
FIRST_NET_EVENT_S = 30.0  # from reset to the firmware's first network event


TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")


PEM = re.compile(r"-----BEGIN [A-Z ]+-----")


SECRET_FIELD = re.compile(r'"(wifi_psk|psk|pass(word)?|secret|token|sk|private_key|key)"\s*:\s*"[^"]+"', re.I)


@pytest.mark.sbd_check(
    id="no-private-key-on-serial",
    title="The device's private key appears nowhere in all it ever sent on the serial port")
def check_no_key_on_serial(sbd_board, sbd_evidence):
    if not reads_flash(sbd_board):
        pytest.skip("needs the key from the flash image: emulated boards only")
    secret = flash_store(sbd_board).get((NVS_NS, "sk"))
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


# A line the locked firmware answers (an error: it is no valid command) only from its own console
# loop, with Ctrl-C off: its answer shows every byte written before it reached that loop, not a REPL.
PROBE = b"\r\nSBD-CMD probe\r\n"
PROBE_TIMEOUT_S = 5.0   # for the answer to a probe line
STORM_S = 6.0           # the longest a Ctrl-C storm from reset lasts (until the probe is answered)
STORM_RESETS = 3        # resets under a storm


def _answered(text: str) -> bool:
    return any(o.get("sbd") == "cmd" for o in parse_json_lines(text))


def _until_answer_or_prompt(port, data: bytearray, timeout: float, start: int = 0) -> None:
    """Reads the port into `data` until what follows `start` shows a probe's answer or a prompt."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data += port.read(port.in_waiting or 1)
        text = data[start:].decode(errors="replace")
        if _answered(text) or _prompts(text):
            return


@pytest.mark.sbd_check(
    id="console-locked",
    title="A locked board gives no REPL: not to Ctrl-C/Ctrl-A/Ctrl-E, not to a Ctrl-C storm during boot")
def check_console_locked(sbd_board, sbd_boot, sbd_evidence):
    boot = boot_line_or_skip(sbd_boot)
    if boot.get("security", {}).get("console") != "locked":
        pytest.skip("the console is open by design until the board is provisioned and locked")
    # The control keys one after the other, each followed by a probe line: once the firmware answers
    # the probe, the keys before it reached its console loop (a REPL would show a prompt instead).
    quiet = bytearray()
    unanswered = []
    with sbd_board.open_port() as port:
        port.reset_input_buffer()
        for keys in (b"\r\x03\x03", b"\r\x01", b"\r\x02", b"\r\x05", b"\x04", b"help()\r"):
            start = len(quiet)
            port.write(keys + PROBE)
            _until_answer_or_prompt(port, quiet, PROBE_TIMEOUT_S, start)
            text = quiet[start:].decode(errors="replace")
            if _prompts(text):
                break
            if not _answered(text):
                unanswered.append(keys.decode(errors="replace"))
    quiet = quiet.decode(errors="replace")
    sbd_evidence["after_control_keys"] = quiet[-300:]
    if _prompts(quiet):
        _leave_running(sbd_board)
    assert not _prompts(quiet), f"the locked console answered with {_prompts(quiet)}"
    assert not unanswered, (f"after {unanswered!r} the locked firmware no longer answered on its console "
                            f"within {PROBE_TIMEOUT_S} s (stopped?): {quiet[-200:]!r}")
    # A Ctrl-C storm from power-on: the window before the firmware closes the console. It lasts
    # until the new boot's firmware answers a probe from its console loop (or shows a prompt).
    # Several resets: on a chip a Ctrl-C meets a window of microseconds only at some of them.
    storms = []
    for _ in range(STORM_RESETS):
        after = _storm_from_reset(sbd_board)
        storms.append({"boot_line": last_boot_line(after), "answered_probe": _answered(after)})
        if _prompts(after):
            break
    sbd_evidence["storms"] = storms
    if _prompts(after):
        _leave_running(sbd_board)
    assert not _prompts(after), f"a Ctrl-C storm during boot {len(storms)} got {_prompts(after)}"


def _storm_from_reset(sbd_board) -> str:
    """Resets the board while sending Ctrl-C, Ctrl-A, Ctrl-E every 2 ms; returns what the
    port showed from the reset on."""
    stop = threading.Event()
    booted = threading.Event()
    with sbd_board.open_port() as port:
        port.reset_input_buffer()

        def storm() -> None:
            n = 0
            while not stop.is_set():
                port.write(b"\x03\x01\x03\x05")
                n += 1
                if booted.is_set() and n % 25 == 0:  # about every 50 ms once the boot line is out
                    port.write(PROBE)
                time.sleep(0.002)

        t = threading.Thread(target=storm)
        t.start()
        data = bytearray()
        try:
            sbd_board.trigger_reset(port, "hard")
            deadline = time.monotonic() + STORM_S
            while time.monotonic() < deadline:
                data += port.read(port.in_waiting or 1)
                at = data.rfind(b"rst:0x")
                after = data[at:].decode(errors="replace") if at >= 0 else ""
                if at >= 0 and last_boot_line(after) is not None:
                    booted.set()
                if _prompts(after) or (booted.is_set() and _answered(after)):
                    break
        finally:
            stop.set()
            t.join()
        data += port.read(port.in_waiting or 1)
    text = data.decode(errors="replace")
    return text[text.rfind("rst:0x"):] if "rst:0x" in text else text


def _leave_running(board) -> None:
    """A console that broke into the REPL leaves the firmware stopped; reset it so the
    checks after this one find the device running, as they would otherwise."""
    try:
        board.reset("hard")
    except Exception:  # noqa: BLE001 - best effort; the failure is already recorded
        pass


def _secrets_in(text: str, board) -> list[str]:
    """Names of the device's own secrets that appear in `text`."""
    found = []
    settings = board_settings(board) or {}
    psk = settings.get("wifi_psk") or os.environ.get("SBD_WIFI_PSK")
    if psk and psk in text:
        found.append("Wi-Fi passphrase")
    if reads_flash(board):
        from sbd_harness.emulator.nvs_reader import read_store
        secret = read_store(board.flash_image().read_partition("nvs")).get(("sbd", "sk"))
        if secret:
            found += [f"private key ({form})" for form in find_key(secret, text.encode(errors="replace"))]
    return found


@pytest.mark.sbd_check(
    id="serial-discloses-nothing-after-lock",
    title="A locked board's serial output, from reset through its first network attempts, discloses no "
          "secret, key, certificate armour, traceback or source path beyond its boot line")
def check_serial_discloses_nothing(sbd_board, sbd_boot, sbd_evidence, sbd_soak):
    boot = sbd_boot.boot_line
    if boot is None:
        pytest.skip("no boot line (see boot-line-identifies-firmware)")
    if boot.get("security", {}).get("console") != "locked":
        pytest.skip("the console is open by design until the board is provisioned and locked")
    # Through the first network attempt, the firmware's first network event on serial (a board
    # known to hold no settings makes none: up to its boot line); the soak tier watches on.
    configured = board_settings(sbd_board) is not None or not reads_flash(sbd_board)
    watch_s = SERIAL_WATCH_S if sbd_soak else 0.3
    capture = sbd_board.capture_boot("hard", timeout=FIRST_NET_EVENT_S, settle=watch_s,
                                     until='"event": ' if configured else None)
    text = capture.transcript
    text = text[text.rfind("rst:0x"):] if "rst:0x" in text else text
    problems = _secrets_in(text, sbd_board)
    problems += [f"traceback: {m.group(0)[:80]}" for m in TRACEBACK.finditer(text)][:5]
    problems += [f"PEM block: {m.group(0)}" for m in PEM.finditer(text)][:5]
    problems += [f"secret-named field: {m.group(0)[:40]}" for m in SECRET_FIELD.finditer(text)][:5]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    sbd_evidence.update({"bytes": len(text), "lines": len(lines), "seconds_watched": round(capture.elapsed_s, 1),
                         "until_first_network_event": configured,
                         "unstructured_lines": [line[:100] for line in lines if not line.startswith("{")][:20],
                         "problems": problems})
    assert capture.boot_line is not None, "the locked board showed no boot line on this boot"
    assert not problems, f"the locked board's serial output discloses: {problems}"
