"""What most checks need to know about the board under test: its boot line,
whether it is provisioned, and what it holds on its flash where the harness
can read the flash back. (A helper module of the catalogue, not a check file.)"""
from __future__ import annotations

from typing import Any

import pytest

from sbd_harness.boards.base import FlashReadback, has
from sbd_harness.release import mud

NVS_NS = "sbd"


def boot_line_or_skip(sbd_boot):
    boot = sbd_boot.boot_line
    if boot is None:
        pytest.skip("no boot line to learn the device's state from (see boot-line-identifies-firmware)")
    return boot


def require_provisioned(boot):
    if not boot.get("security", {}).get("provisioned"):
        pytest.skip("the board is not provisioned (sbd provision)")


def locked(boot: dict[str, Any] | None) -> bool:
    """True when the boot line says the console is locked."""
    return bool(boot) and boot.get("security", {}).get("console") == "locked"


def attested(board: Any, ca: Any, boot: dict[str, Any], evidence: dict[str, Any]) -> Any:
    """A locked board's attestation for the boot line's device ID, verified (fresh nonce, the key
    the lab CA certified; identity/attest.py); an AssertionError says why not. Skips when the lab
    CA cannot ask or check: none there, or not the one that certified this device."""
    from sbd_harness.identity.attest import DEVICE_ID_RE, AttestationError, attest
    device_id = str(boot.get("device_id"))
    assert DEVICE_ID_RE.fullmatch(device_id), f"boot line's device ID {device_id!r} is not 12 lower-case hex digits"
    if not ca.exists():
        pytest.skip(f"the console is locked and there is no lab CA in {ca.dir} to ask for an attestation "
                    "(give --pki DIR: the CA that provisioned the board)")
    if ca.issued_certificate(device_id) is None:
        pytest.skip(f"the console is locked and the lab CA in {ca.dir} never certified device {device_id}, "
                    "so it can neither ask for an attestation nor check one (give --pki DIR: the CA that "
                    "provisioned the board)")
    try:
        att = attest(board, ca, device_id)
    except AttestationError as exc:
        evidence["attestation_error"] = str(exc)
        raise AssertionError(f"the locked board did not attest: {exc}") from None
    evidence["attestation"] = {"device_id": att.device_id, "nonce": att.nonce, "slot": att.slot,
                               "fw_version": att.version, "security_counter": att.counter,
                               "cert_sha256": att.cert_sha256, "files": len(att.files),
                               "file_sha256": {path: f.sha256 for path, f in sorted(att.files.items())}}
    return att


# The statement's base64 is written a few hundred bytes at a time, as the firmware's own
# attest.write_reply does: joined, the statement and its base64 need blocks of several KiB,
# which the heap left after the signature may not have (a MemoryError at 156 KiB).
REPL_ATTEST = ("from sbd import attest\nimport binascii, sys\nparts, sig = attest.answer({nonce!r})\n"
               "pending = bytearray()\n"
               "for part in parts:\n"
               " pending.extend(part)\n"
               " if len(pending) >= 384:\n"
               "  n = len(pending) - len(pending) % 3\n"
               "  sys.stdout.write(binascii.b2a_base64(memoryview(pending)[:n], newline=False).decode())\n"
               "  pending = pending[n:]\n"
               "print(binascii.b2a_base64(pending, newline=False).decode())\n"
               "print(binascii.b2a_base64(sig, newline=False).decode())")


def possession(board: Any, ca: Any, boot: dict[str, Any], evidence: dict[str, Any]) -> Any:
    """Proof that the board holds the private key of the certificate the lab CA issued for the
    boot line's device ID: a statement over a fresh nonce, signed on the device, verified with
    that certificate's key (identity/attest.py). A clone that prints the same boot line, or a
    board whose key was swapped, cannot give it. A locked board is asked with the signed
    `attest` command; an open one through its REPL. An AssertionError says why not."""
    if locked(boot):
        return attested(board, ca, boot, evidence)
    from sbd_harness.boards.base import BoardError, BoardRaised
    from sbd_harness.identity.attest import AttestationError, new_nonce, verify_statement
    import base64
    nonce = new_nonce()
    try:
        # after a soft reset in the raw REPL, which runs boot.py but not main.py (ports/esp32/main.c
        # runs main.py only in the friendly REPL): the heap holds none of the interrupted firmware's
        # objects, which on a heap the size of the chip's leave too little for the signature
        out = board.exec(REPL_ATTEST.format(nonce=nonce), timeout=120, soft_reset=True)
        lines = [line.strip() for line in out.splitlines() if line.strip()]
    except BoardRaised as exc:  # it answered, with an error instead of a signature: no proof
        evidence["attestation_error"] = " ".join(str(exc).split())[-300:]
        raise AssertionError("the board did not prove it holds the certified key: its REPL raised instead of "
                             "signing the nonce: " + evidence["attestation_error"]) from None
    except BoardError as exc:  # no REPL to ask: nothing shown either way
        pytest.skip("the console is open but its REPL did not sign a nonce: " + " ".join(str(exc).split())[-300:])
    try:
        att = verify_statement(base64.b64decode(lines[-2]), base64.b64decode(lines[-1]), ca,
                               str(boot.get("device_id")), nonce)
    except (AttestationError, IndexError, ValueError) as exc:
        evidence["attestation_error"] = str(exc)
        raise AssertionError(f"the board did not prove it holds the certified key: {exc}") from None
    evidence["attestation"] = {"device_id": att.device_id, "nonce": att.nonce, "cert_sha256": att.cert_sha256,
                               "via": "REPL"}
    return att


def flash_store(board):
    """The NVS store of a board whose flash the harness reads back (FlashReadback)."""
    from sbd_harness.emulator.nvs_reader import read_store
    return read_store(board.flash_image().read_partition("nvs"))


def reads_flash(board) -> bool:
    """Whether the harness can read the board's flash: secrets at rest can then be compared."""
    return has(board, FlashReadback)


def board_settings(board) -> dict[str, Any] | None:
    try:
        return mud.board_settings(board)
    except mud.MudError:
        return None
