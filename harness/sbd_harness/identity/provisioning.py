"""`sbd provision`: gives an unprovisioned board its certificate and locks it.

The device ID the board reports is checked first: the firmware's form
(12 lower-case hex digits), not a name of the lab's, and no valid certificate
for it unless the caller asks to re-issue (a factory-reset board); a board
that fails this is refused before anything is written to it or to the CA.
The device makes its own key pair and CSR; the CA checks the CSR (signature,
P-256, subject CN = the device ID the chip reports), issues the certificate
(with the MUD URL the device's firmware declares, as id-pe-mud-url),
the device checks and stores it, then locks its console and reboots. Every
byte the device sent on the serial port is kept in the result, so checks can
search it for key material.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from sbd_harness.boards.base import Board, BoardError
from sbd_harness.boards.serial_board import SerialBoard, read_boot
from sbd_harness.device.bootline import last_boot_line
from sbd_harness.identity.names import check_device_id
from sbd_harness.identity.pki import IssuedCertificate, LabCA

UNIQUE_ID_CODE = "import machine, binascii\nprint(binascii.hexlify(machine.unique_id()).decode())"


@dataclass
class ProvisionResult:
    device_id: str
    issued: IssuedCertificate
    boot_line: dict | None
    transcript: str
    release_key_made: Path | None = None  # the lab release key, when this provisioning made it


def _line(output: str, prefix: str) -> str:
    for line in output.splitlines():
        if line.startswith(prefix + " "):
            return line[len(prefix) + 1:].strip()
    raise BoardError(f"the device did not answer with {prefix!r}: {output.strip()[-300:]}")


MUD_URL_CODE = ("try:\n from sbd.network_policy import mud_url\n print('MUD', mud_url())\n"
                "except ImportError:\n print('MUD -')")


def _declared_mud_url(run) -> str | None:
    """The MUD URL the firmware on the device declares (sbd.network_policy), for
    the certificate's id-pe-mud-url; None for firmware that declares none."""
    url = _line(run(MUD_URL_CODE), "MUD")
    return None if url == "-" else url


def lab_settings(board: Board, broker_port: int | None = None) -> dict | None:
    """Settings for an emulated board: the lab's Wi-Fi and the lab broker (default: at the board's own
    lab broker port, `EmulatedBoard.broker_port`) and the lab's NTP
    server (started here if it is not running: the board's clock starts in 2000)."""
    from sbd_harness.boards.emulated import EmulatedBoard
    from sbd_harness.lab import ntp
    from sbd_harness.lab.broker import lab_address
    if not isinstance(board, EmulatedBoard):
        return None
    conf = board.conf
    ntp_host, ntp_port = ntp.ensure_running()
    return {"wifi_ssid": conf["lab_ssid"], "wifi_psk": conf["lab_psk"], "broker_addr": lab_address(),
            "broker_port": broker_port or board.broker_port, "ntp_host": ntp_host, "ntp_port": ntp_port}


def lab_release_keys() -> tuple[list[bytes], Path | None]:
    """The lab's release key, made on first use (`<state>/release/release-key.pem`, as
    `sbd ota keygen` makes it), so every board provisioned here can take signed updates:
    ([its public point], its path if it was made now, else None)."""
    from sbd_harness.release.ota import lab_release_key
    key, made = lab_release_key()
    return [key.public_point], (key.path if made else None)


def provision(board: Board, ca: LabCA, lock: bool = True, timeout: float = 60,
              settings: dict | None = None, release_keys: list[bytes] | None = None,
              reissue: bool = False) -> ProvisionResult:
    """Certifies the board's own key; stores `settings` (Wi-Fi, broker), or the
    lab's for an emulated board, and the release keys updates must be signed
    with (default: the lab's, made on first use); then locks the console unless lock=False.

    reissue: the board was factory-reset and its ID still has a valid certificate;
    the CA issues a new one and revokes that (without it, provisioning refuses)."""
    if not isinstance(board, SerialBoard):
        raise BoardError("provisioning needs a board on a serial port")
    transcript: list[str] = []
    key_made = None
    with board.session() as t:
        def run(code: str) -> str:
            out = board._exec(t, code, timeout=timeout)
            transcript.append(out)
            return out

        device_id = check_device_id(run(UNIQUE_ID_CODE).strip(),
                                    f"{board.name} was not provisioned, nothing was stored")
        state = run("from sbd import state\nprint(state.summary()['provisioned'])").strip()
        if state != "False":
            raise BoardError(f"{board.name} is already provisioned: factory reset it first")
        ca.check_can_issue(device_id, reissue)  # before the board stores anything
        csr_der = base64.b64decode(_line(run("from sbd import provisioning\nprovisioning.request()"), "CSR"))
        settings = settings if settings is not None else lab_settings(board)
        if settings:  # before the certificate: afterwards the device counts as provisioned
            run(f"provisioning.configure({json.dumps(settings)!r})")
        keys, key_made = lab_release_keys() if release_keys is None else (release_keys, None)
        if keys:
            run(f"provisioning.release_keys({','.join(k.hex() for k in keys)!r})")
        issued = ca.issue(csr_der, device_id, mud_url=_declared_mud_url(run), reissue=reissue)
        cert_b64 = base64.b64encode(issued.der).decode()
        ca_b64 = base64.b64encode(ca.certificate_der).decode()
        installed = _line(run(f"provisioning.install({cert_b64!r}, {ca_b64!r})"), "INSTALLED")
        if installed != issued.fingerprint:
            raise BoardError(f"the device stored a certificate with fingerprint {installed}, expected {issued.fingerprint}")

        boot = None
        if lock:
            t.exec_raw_no_follow("provisioning.lock()")
            boot_text = read_boot(t.serial, timeout)
            transcript.append(boot_text)
            boot = last_boot_line(boot_text)
            if boot is None:
                raise BoardError(f"{board.name} did not come back with a boot line after locking")
            t.in_raw_repl = False  # the board rebooted into its locked firmware
    return ProvisionResult(device_id, issued, boot, "".join(transcript), key_made)

