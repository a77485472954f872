"""The catalogue of deliberate mistakes: each one breaks one practice of the
reference firmware, on purpose, by exact-text patches.

One catalogue serves two users. The insecure lab profile (`sbd flash
--profile insecure`, profiles.py) builds the mistakes that have a lab page
(docs/labs/<name>.md) into a training build; the project's own tests build
each mistake alone (`build_variant`) and show that the check it names fails
on it. A patch names the exact text it replaces: when the reference changes
so that the text is gone, building fails (MistakeError) instead of quietly
testing something else. Patches anchor on code, not on comments.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sbd_harness.errors import SbdError
from sbd_harness.paths import firmware_dir

Patch = tuple[str, str, str]  # (file relative to the firmware folder, exact old text, new text)
FILES_DIR = Path(__file__).resolve().parent / "mistake_files"  # extra files some mistakes ship


class MistakeError(SbdError, ValueError):
    pass


@dataclass(frozen=True)
class Mistake:
    name: str
    title: str
    checks: tuple[str, ...]          # catalogue check IDs that fail because of it
    provisions: dict[str, list[str]] = field(default_factory=dict)  # what it breaks (lab mistakes say)
    patches: tuple[Patch, ...] = ()
    files: tuple[str, ...] = ()      # extra files, relative to mistake_files/
    requires: tuple[str, ...] = ()   # mistakes it builds on

    @property
    def lab(self) -> str:
        return f"docs/labs/{self.name}.md"


def apply_patches(root: Path, patches: Iterable[Patch], what: str) -> None:
    """Applies exact-text patches to the firmware copy in `root`, each once.

    Raises ProfileError naming `what` (a mistake or variant) when a file or a
    patch's old text is missing: the firmware changed and the patch with it
    must be reviewed.
    """
    for rel, old, new in patches:
        path = root / rel
        if not path.is_file():
            raise MistakeError(f"{what}: no file {rel} in {root}")
        text = path.read_text()
        if old not in text:
            raise MistakeError(f"{what}: {rel} no longer contains {old!r}")
        path.write_text(text.replace(old, new, 1))


_BOOT_ANNOUNCE = "    boot_report.announce(state.summary())\n"
LOCK_FIRST = """try:
    import micropython
    micropython.kbd_intr(-1)
    if micropython:  # the VM's first check point after the lock (boot.py's header says why)
        pass
except BaseException:
    import micropython
    micropython.kbd_intr(-1)
"""
# The lock without a check point of the VM inside its try.
LOCK_UNCHECKED = LOCK_FIRST.replace(
    "    if micropython:  # the VM's first check point after the lock (boot.py's header says why)\n        pass\n", "")

# The mistakes of the insecure lab profile, each with its lab page (docs/labs/<name>.md).
LAB_MISTAKES: tuple[Mistake, ...] = (
    Mistake(
        "open-console",
        "The console is not locked: Ctrl-C on the serial port gives the REPL of a provisioned device",
        checks=("console-locked",),
        provisions={"etsi_en_303_645": ["5.6-4A"], "nist_ir_8259a": ["4"], "owasp_isvs": ["3.1.3"],
                    "eu_cra": ["I(2)(d)"]},
        patches=(
            # The device still goes online, so the network checks run on the same board;
            # but its loop leaves Ctrl-C on, and a Ctrl-C ends main.py into the REPL.
            ("lib/sbd/app.py", "    console.close()\n",
             "    console.open()  # MISTAKE open-console: Ctrl-C still interrupts the locked loop\n"),
            ("lib/sbd/app.py", "        run_locked()\n    except BaseException as e:\n",
             "        run_locked()\n    except KeyboardInterrupt:\n"
             "        return  # MISTAKE open-console: main.py ends, and the REPL is open\n"
             "    except BaseException as e:\n"),
        )),
    Mistake(
        "open-port",
        "A plain-TCP debug shell listens on port 2323 of every locked device: Python on the device over the network",
        checks=("no-listening-ports",),
        provisions={"etsi_en_303_645": ["5.6-1", "5.6-5", "5.5-4"], "nist_ir_8259a": ["4"],
                    "eu_cra": ["I(2)(j)"]},
        patches=(
            ("lib/sbd/app.py", "    console.serve(on_line, commands.MAX_LINE + 1, tick=tick, period_ms=100)\n",
             "    from sbd import debug_shell  # MISTAKE open-port: a shell for anyone on the network\n"
             "    tick = debug_shell.start(tick)\n"
             "    console.serve(on_line, commands.MAX_LINE + 1, tick=tick, period_ms=100)\n"),
        ),
        files=("lib/sbd/debug_shell.py",)),
    Mistake(
        "default-password",
        'The debug shell\'s password is "admin", the same on every device',
        checks=("no-default-or-shared-secrets",),
        provisions={"etsi_en_303_645": ["5.1-1", "5.1-2", "5.4-3"], "uk_psti": ["Sch1(1)"],
                    "owasp_isvs": ["2.1.9", "2.1.10"], "eu_cra": ["I(2)(b)"]},
        patches=(
            ("lib/sbd/debug_shell.py", "PASSWORD = None  # no password set: every login is refused\n",
             'PASSWORD = "admin"  # MISTAKE default-password: the same password on every device\n'),
        ),
        requires=("open-port",)),
    Mistake(
        "no-cert-verification",
        "The device's TLS client does not verify the broker's certificate: any broker will do",
        checks=("rogue-brokers-refused",),
        provisions={"etsi_en_303_645": ["5.5-1"], "nist_ir_8259a": ["3"], "owasp_isvs": ["4.1.3"],
                    "eu_cra": ["I(2)(e)"]},
        patches=(
            ("lib/sbd/tls.py", "    ctx.verify_mode = ssl.CERT_REQUIRED\n", "    ctx.verify_mode = ssl.CERT_NONE\n"),
        )),
    Mistake(
        "unsigned-commands",
        "Commands are obeyed without checking their signature",
        checks=("invalid-commands-refused-over-mqtt", "commands-need-a-valid-signature"),
        provisions={"etsi_en_303_645": ["5.5-5"], "nist_ir_8259a": ["2"], "eu_cra": ["I(2)(d)"]},
        patches=(
            ("lib/sbd/commands.py",
             "    if not p256.verify(ca_public_key, hashlib.sha256(payload).digest(), signature):\n"
             "        raise CommandError(\"bad signature\")\n", ""),
        )),
    Mistake(
        "unsigned-updates",
        "Updates are installed without checking who signed them",
        # the unverified update the first installs stays: the board no longer runs the build, and the
        # checks that compare it with the build say so
        checks=("unsigned-or-foreign-updates-refused", "firmware-matches-build", "no-default-or-shared-secrets"),
        provisions={"etsi_en_303_645": ["5.3-9", "5.3-10"], "nist_ir_8259a": ["5"], "owasp_isvs": ["3.4.3"],
                    "eu_cra": ["I(2)(f)"]},
        patches=(
            # manifest.check_signature serves the update receiver and the boot-time slot check alike
            ("lib/sbd/manifest.py",
             '    `keys`, of `digest` (the SHA-256 of the manifest\'s exact bytes)."""\n',
             '    `keys`, of `digest` (the SHA-256 of the manifest\'s exact bytes)."""\n'
             "    return  # MISTAKE unsigned-updates: any signature, any key\n"),
            ("lib/sbd/ota.py",
             "        if not slots.trusted_keys():\n"
             "            self._event(\"rejected\", error=\"no release keys\")\n            return\n",
             "        # MISTAKE unsigned-updates: no release key needed either\n"),
        )),
    Mistake(
        "no-anti-rollback",
        "Updates to an older version are installed: the security counter is not checked",
        checks=("update-rollback-refused",),
        provisions={"etsi_en_303_645": ["5.3-2"], "owasp_isvs": ["3.4.6"], "eu_cra": ["I(2)(c)"]},
        patches=(
            ("lib/sbd/ota.py",
             '        if m["security_counter"] <= _floor(m):\n'
             '            raise Rejected("rollback: security counter not higher")\n',
             "        pass  # broken: no anti-rollback, any signed release installs\n"),
            # and the boot-time check of the slot, which would otherwise refuse to run what was installed
            ("lib/sbd/slots.py",
             '    if m["security_counter"] < floor:\n        raise manifest.ManifestError("below the rollback floor")\n',
             "    pass  # broken: no anti-rollback at boot either\n"),
        )),
)

# Mistakes the project's tests make, one check each, without a lab page.
TEST_MISTAKES: tuple[Mistake, ...] = (
    Mistake(
        'foreign-updates-kept',
        'Updates left in /ota by an earlier image are kept, and one recorded over another factory image runs',
        checks=('firmware-matches-build',),
        patches=(
            ('lib/sbd/slots.py', '    if running(st) and store.get(IMAGE_NVS, 16) != factory_id():\n',
             '    if False:  # broken: an update installed over another factory image runs\n'),
            ('lib/sbd/slots.py', '        rmtree(incoming_dir() if chosen else ROOT)\n',
             '        rmtree(incoming_dir())  # broken: updates are kept under the factory image\n'),
        )),
    Mistake(
        'no-boot-line',
        'The firmware prints no boot line: the board says nothing of what it runs',
        checks=('boot-line-identifies-firmware', 'device-id-from-hardware'),
        patches=(
            ('lib/sbd/boot.py', '    boot_report.announce(state.summary())\n',
             ''),
        )),
    Mistake(
        'fixed-device-id',
        'One plausible-looking device ID baked into every device',
        checks=('device-id-from-hardware',),
        patches=(
            ('lib/sbd/device.py', '    """Lower-case hex of machine.unique_id() (the ESP32\'s base MAC)."""\n',
             '    return "3c71bf0a1b2c"  # broken: one plausible-looking ID baked into every device\n'),
        )),
    Mistake(
        'old-version',
        'The board runs an older version than the build under test',
        checks=('boot-line-identifies-firmware',),
        patches=(
            ('lib/sbd/version.py', 'VERSION = "0.1.0"',
             'VERSION = "0.0.9"'),
        )),
    Mistake(
        'shared-key',
        'One private key baked into the firmware, shared by every device',
        checks=('no-default-or-shared-secrets', 'device-keys-unique'),
        patches=(
            ('lib/sbd/identity.py', '    from sbd import p256\n    try:\n        sk, pk = p256.generate_keypair()',
             '    from sbd import p256\n    try:\n        sk = binascii.unhexlify(FACTORY_PRIVATE_KEY)\n        pk = p256.public_key(sk)'),
            ('lib/sbd/identity.py', '_SK, _PK, _CERT, _CA = "sk", "pk", "cert", "ca"\n',
             '_SK, _PK, _CERT, _CA = "sk", "pk", "cert", "ca"\nFACTORY_PRIVATE_KEY = "519b423d715f8b581f4fa8ee59f4771a5b44c8130b4e3eacca54a56dda72b464"\n'),
        )),
    Mistake(
        'swapped-key',
        'The device signs with a key that is not the one its certificate is for: a clone that copied '
        'the certificate (and so prints the same boot line) without the private key, or a swapped key',
        checks=('identity-certified-by-lab-ca', 'device-keys-unique', 'device-id-from-hardware',
                'firmware-matches-build', 'no-default-or-shared-secrets'),
        patches=(
            ('lib/sbd/identity.py', '    return p256.sign(store.get(_SK, 32), digest)\n',
             '    return p256.sign(binascii.unhexlify(CLONE_KEY), digest)  # broken: not the certified key\n'),
            ('lib/sbd/identity.py', '_SK, _PK, _CERT, _CA = "sk", "pk", "cert", "ca"\n',
             '_SK, _PK, _CERT, _CA = "sk", "pk", "cert", "ca"\n'
             'CLONE_KEY = "3f5b8a1c9d2e4f6071829a4b5c6d7e8f90112233445566778899aabbccddeeff"\n'),
        )),
    Mistake(
        'leaky-key',
        'A debug print of the device key at every boot',
        checks=('no-private-key-on-serial',),
        patches=(
            ('lib/sbd/boot.py', '    boot_report.announce(state.summary())\n',
             "    boot_report.announce(state.summary())\n    import binascii\n    from sbd import store\n    print('debug: key', binascii.hexlify(store.get('sk', 32)).decode())\n"),
        )),
    Mistake(
        'late-lock',
        'boot.py and main.py do their work before closing Ctrl-C: a Ctrl-C storm at boot reaches the REPL',
        checks=('console-locked',),
        patches=(
            ('boot.py', LOCK_FIRST,
             ''),
            ('main.py', LOCK_FIRST,
             ''),
            ('boot.py', 'try:\n    # The factory image verifies the update slot that will run (sbd.slots).\n    from sbd import slots\n    slots.select()\nexcept BaseException as e:\n    print(\'{"sbd": "slot_error", "error": %r}\' % type(e).__name__)\n',
             'from sbd import slots\nslots.select()\n'),
            ('boot.py', 'try:\n    from sbd import boot\n    boot.run()\nexcept BaseException as e:\n    print(\'{"sbd": "boot_error", "error": %r}\' % type(e).__name__)\n',
             'from sbd import boot\nboot.run()\n'),
        )),
    Mistake(
        'unchecked-lock',
        'boot.py and main.py close Ctrl-C first, but a Ctrl-C that came just before is raised only after their try: '
        'a Ctrl-C storm at boot reaches the REPL',
        checks=('console-locked',),
        patches=(
            ('boot.py', LOCK_FIRST, LOCK_UNCHECKED),
            ('main.py', LOCK_FIRST, LOCK_UNCHECKED),
        )),
    Mistake(
        'shallow-factory-reset',
        'The factory reset forgets the certificate but keeps the private key',
        checks=('factory-reset-erases-identity',),
        patches=(
            ('lib/sbd/factory_reset.py', '    store.erase_partition()\n',
             "    import esp32\n    nvs = esp32.NVS(store.NAMESPACE)\n    for key in ('cert', 'ca', 'locked'):\n        try:\n            nvs.erase_key(key)\n        except OSError:\n            pass\n"),
        )),
    Mistake(
        'wrong-csr-subject',
        'The device asks for a certificate for a fixed name, not its own ID',
        checks=(),
        patches=(
            ('lib/sbd/identity.py', 'store.get(_SK, 32), public_key(), device.device_id())',
             'store.get(_SK, 32), public_key(), "esp32-device")'),
        )),
    Mistake(
        'silent-telemetry',
        'Readings never leave the outbox',
        checks=('telemetry-over-mutual-tls',),
        patches=(
            ('lib/sbd/link.py', '        waiting = self.outbox.pending(1)\n',
             '        waiting = None  # broken: readings never leave the outbox\n'),
        )),
    Mistake(
        'no-backoff',
        'Reconnection hammers the broker five times a second',
        checks=('outages-lose-nothing',),
        patches=(
            ('lib/sbd/link.py', '    """Exponential from 1 s, capped at 60 s, with jitter in its upper half."""\n',
             '    return 200  # broken: retries hammer the broker five times a second\n'),
        )),
    Mistake(
        'volatile-outbox',
        'A restart forgets the readings queued for the broker',
        checks=('outages-lose-nothing',),
        patches=(
            ('lib/sbd/link.py', '        self.outbox = Outbox("/data/outbox")\n',
             '        self.outbox = Outbox("/data/outbox")\n        self.outbox.ack(1 << 30)  # broken: a restart forgets what was queued\n'),
        )),
    Mistake(
        'crash-on-bad-packet',
        'A malformed MQTT packet escapes to the top and restarts the device',
        checks=('hostile-broker-fuzzing-survived',),
        patches=(
            ('lib/sbd/link.py', '        except (MQTTProtocolError, OSError) as e:\n',
             '        except OSError as e:  # broken: a malformed packet escapes to the top\n'),
        )),
    Mistake(
        'version-not-counter',
        "Anti-rollback compares the update's version with the running one, not its security counter: "
        "a release of another version with the same counter installs",
        checks=('update-rollback-refused',),
        patches=(
            ('lib/sbd/ota.py',
             '        if m["security_counter"] <= _floor(m):\n'
             '            raise Rejected("rollback: security counter not higher")\n',
             '        if m["version"] == version.VERSION:  # broken: the version compared, not the counter\n'
             '            raise Rejected("rollback: this version runs already")\n'),
        )),
    Mistake(
        'unchecked-update-files',
        "The signed manifest is checked, the update's files against it never are",
        checks=('unsigned-or-foreign-updates-refused', 'changed-file-caught-at-boot'),
        patches=(
            ('lib/sbd/ota.py', '            if self.h.digest() != binascii.unhexlify(self.m["files"][self.fi]["sha256"]):\n                raise Rejected("hash mismatch " + self.m["files"][self.fi]["path"])\n',
             "            pass  # broken: a file's hash is not compared with the manifest\n"),
            ('lib/sbd/slots.py', '        if digest != binascii.unhexlify(f["sha256"]):\n            raise manifest.ManifestError("hash mismatch " + f["path"])\n',
             "        pass  # broken: a file's hash is not compared with the manifest\n"),
        )),
    Mistake(
        'unchecked-app-images',
        "A whole-firmware update's image is never compared with the SHA-256 its signed manifest lists",
        checks=('bad-app-images-refused',),
        patches=(
            ('lib/sbd/appimage.py',
             '        if self.h.digest() != want:\n            raise ImageRejected("image hash mismatch")\n'
             '        self.h = None\n'
             '        if _flash_sha256(self.part, self.im["size"], self.buf) != want:\n'
             '            raise ImageRejected("image changed on flash")\n',
             '        self.h = None  # broken: the image is not compared with the manifest\n'),
        )),
    Mistake(
        'app-image-valid-before-health-check',
        'A new app image marks itself valid as it boots, before its health check: the bootloader never rolls it back',
        checks=('app-image-updates-commit-or-roll-back',),
        patches=(
            ('lib/sbd/appimage.py', '    if runs == t["slot"]:\n        return t\n',
             '    if runs == t["slot"]:\n'
             '        esp32.Partition.mark_app_valid_cancel_rollback()  # broken: valid before any health check\n'
             '        return t\n'),
        )),
    Mistake(
        'undeclared-connection',
        "An SSDP-style UDP datagram to the broker's host that the network policy never declared",
        checks=('connections-match-mud',),
        patches=(
            ('lib/sbd/link.py', '            stream = tls.connect(self.cfg["broker_addr"], self.cfg["broker_port"], self.cfg["broker_host"])\n',
             '            import socket  # broken: a flow the device never declared\n            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n            probe.sendto(b"M-SEARCH * HTTP/1.1\\r\\n\\r\\n", socket.getaddrinfo(self.cfg["broker_addr"], 1900)[0][-1])\n            probe.close()\n            stream = tls.connect(self.cfg["broker_addr"], self.cfg["broker_port"], self.cfg["broker_host"])\n'),
        )),
    Mistake(
        'declared-backdoor',
        'The debug shell on TCP 2323, and the firmware declares it in its own network policy',
        checks=('no-listening-ports',),
        patches=(
            ('lib/sbd/network_policy.py', 'LISTENS = (("udp", 5353), ("udp", 68))',
             'LISTENS = (("udp", 5353), ("udp", 68), ("tcp", 2323))  # broken: declares its own backdoor'),
        ),
        requires=('open-port',)),
    Mistake(
        'default-hostname',
        "The firmware leaves the port's hostname: its mDNS responder answers as mpy-esp32, not as the device",
        checks=('no-listening-ports',),
        patches=(
            ('lib/sbd/link.py', '        network.hostname(network_policy.hostname(device.device_id()))\n', ''),
        )),
    Mistake(
        'declared-connection',
        "The undeclared SSDP-style datagram, and the firmware adds it to its own network policy",
        checks=('connections-match-mud',),
        patches=(
            ('lib/sbd/network_policy.py', '    ntp = settings.get("ntp_host")\n',
             '    out.append(("ssdp", "udp", settings["broker_addr"], 1900, False))  # broken: declares its own flow\n'
             '    ntp = settings.get("ntp_host")\n'),
        ),
        requires=('undeclared-connection',)),
    Mistake(
        'serial-secret',
        'A debug print of the Wi-Fi settings on the locked console',
        checks=('serial-discloses-nothing-after-lock',),
        patches=(
            ('lib/sbd/link.py', '                self.wlan.connect(self.cfg["wifi_ssid"], self.cfg["wifi_psk"])\n',
             '                print("wifi:", self.cfg["wifi_ssid"], self.cfg["wifi_psk"])  # broken: debug output\n                self.wlan.connect(self.cfg["wifi_ssid"], self.cfg["wifi_psk"])\n'),
        )),
    Mistake(
        'stale-commands',
        'Signed commands are accepted without the device\'s current challenge: a held-back unlock_console works',
        checks=('commands-need-a-valid-signature',),
        patches=(
            ('lib/sbd/commands.py', '    if name in FRESH or "challenge" in cmd:\n',
             '    if False:  # broken: no freshness check\n'),
        )),
    Mistake(
        'challenge-kept-across-reset',
        'The device keeps its challenge on flash: a command signed before a reset is accepted after it',
        checks=('commands-need-a-valid-signature',),
        patches=(
            ('lib/sbd/commands.py', '    def __init__(self):\n        self.nonce = None\n        self.issued = 0\n',
             '    def __init__(self):\n        from sbd import store  # broken: the challenge outlives a reset\n'
             '        kept = store.get("chal", 64)\n        self.nonce = kept.decode() if kept else None\n'
             '        self.issued = time.ticks_ms()\n'),
            ('lib/sbd/commands.py', '        self.issued = now_ms\n        return self.nonce\n',
             '        self.issued = now_ms\n        from sbd import store\n        store.put("chal", self.nonce.encode())\n'
             '        return self.nonce\n'),
        )),
    Mistake(
        'weak-tls-suites',
        "The device's TLS client offers whatever the port's mbedTLS has: CBC, static-RSA and PSK suites too",
        checks=('tls-client-offers-strong-crypto',),
        patches=(
            ('lib/sbd/tls.py', '        getattr(ctx, "_context", ctx).set_ciphers(CIPHERS)\n', ''),
        )),
    Mistake(
        'mqtt-password',
        'A user name and a password, the same on every device, in the MQTT CONNECT beside the certificate',
        checks=('mqtt-connect-has-no-password',),
        patches=(
            ('lib/sbd/mqtt.py', '        n = sum(len(f[0]) + 2 if isinstance(f, tuple) else 2 if isinstance(f, int) else len(f)\n',
             '        fields[1] = bytes((fields[1][0] | 0xC0,))  # broken: a shared user name and password\n'
             '        fields += [(b"sbd",), (b"sbd-fleet-2024",)]\n'
             '        n = sum(len(f[0]) + 2 if isinstance(f, tuple) else 2 if isinstance(f, int) else len(f)\n'),
        )),
    Mistake(
        'access-point-on',
        "The Wi-Fi access point is started beside the station, as a setup network that is never turned off",
        checks=('only-declared-interfaces-on',),
        patches=(
            ('lib/sbd/link.py', '        self.wlan = network.WLAN(network.STA_IF)\n',
             '        self.wlan = network.WLAN(network.STA_IF)\n'
             '        network.WLAN(network.AP_IF).active(True)  # broken: a setup access point left on\n'),
        )),
    Mistake(
        'access-point-hidden',
        "The setup access point is left on, and the firmware reports it off: the interfaces in the birth "
        "message say what the product should have, not what the port has on",
        checks=('only-declared-interfaces-on',),
        patches=(
            ('lib/sbd/link.py', '        self.wlan = network.WLAN(network.STA_IF)\n',
             '        self.wlan = network.WLAN(network.STA_IF)\n'
             '        network.WLAN(network.AP_IF).active(True)  # broken: a setup access point left on\n'),
            ('lib/sbd/network_policy.py', '"wifi_ap": network.WLAN(network.AP_IF).active()}',
             '"wifi_ap": False}  # broken: reported off, whatever the port says'),
        )),
    Mistake(
        'bluetooth-on',
        "Bluetooth is turned on at start and never off again",
        checks=('only-declared-interfaces-on',),
        patches=(
            ('lib/sbd/link.py', '        self.wlan = network.WLAN(network.STA_IF)\n',
             '        self.wlan = network.WLAN(network.STA_IF)\n'
             '        import bluetooth  # broken: the radio turned on for a feature the product does not have\n'
             '        bluetooth.BLE().active(True)\n'),
        )),
    Mistake(
        'undeclared-telemetry-field',
        "Telemetry also carries the Wi-Fi network's name, a field the data inventory never declared",
        checks=('telemetry-matches-data-inventory',),
        patches=(
            ('lib/sbd/link.py', '        reading = {"uptime_s": time.ticks_ms() // 1000, "heap_free": gc.mem_free()}\n',
             '        reading = {"uptime_s": time.ticks_ms() // 1000, "heap_free": gc.mem_free(),\n'
             '                   "ssid": self.cfg["wifi_ssid"]}  # broken: a field nobody declared\n'),
        )),
    Mistake(
        'short-support-period',
        "The device states a support period that ends three years after the product was placed on the market",
        checks=('support-period-at-least-five-years', 'support-period-declared'),
        patches=(
            ('lib/sbd/version.py', 'SUPPORT_UNTIL = "2031-12-31"', 'SUPPORT_UNTIL = "2029-11-30"'),
        )),
    Mistake(
        'refuses-own-updates',
        "The updater compares the model the wrong way round: it refuses every update made for it (and so passes "
        "every refusal check)",
        checks=('signed-update-installs-and-commits',),
        patches=(
            ('lib/sbd/ota.py', '        if m["model"] != version.MODEL:\n',
             '        if m["model"] == version.MODEL:  # broken: the comparison the wrong way round\n'),
        )),
    Mistake(
        'no-support-period',
        'The birth message no longer says until when the device gets security fixes',
        checks=('support-period-declared',),
        patches=(
            ('lib/sbd/link.py', '"security_policy": version.SECURITY_POLICY, "support_until": version.SUPPORT_UNTIL}',
             '"security_policy": version.SECURITY_POLICY}  # broken: no support_until'),
        )),
    Mistake(
        'outdated-mbedtls',
        'The firmware ships on a MicroPython build whose mbedTLS (3.6.2) predates the fixes of known '
        'vulnerabilities no VEX statement covers',
        checks=('no-known-exploitable-vulnerabilities',),
        patches=(
            ('platform.json', '{"name": "mbedtls", "version": "3.6.4",', '{"name": "mbedtls", "version": "3.6.2",'),
        )),
)

CATALOGUE: dict[str, Mistake] = {m.name: m for m in LAB_MISTAKES + TEST_MISTAKES}


def copy_files(target: Path, mistake: Mistake) -> None:
    """Puts the extra files a mistake ships into a firmware copy."""
    for rel in mistake.files:
        dest = target / rel
        if dest.exists():
            raise MistakeError(f"mistake {mistake.name}: the firmware already has {rel}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FILES_DIR / rel, dest)


def build_variant(name: str, target: Path, source: Path | None = None) -> Path:
    """A copy of the reference firmware (or `source`) in `target` with one mistake
    (and those it builds on): a firmware broken for exactly the checks the mistake names."""
    try:
        mistake = CATALOGUE[name]
    except KeyError:
        raise MistakeError(f"unknown mistake {name!r}: choose from {', '.join(CATALOGUE)}") from None
    shutil.copytree(Path(source) if source else firmware_dir(), target, ignore=shutil.ignore_patterns("__pycache__"))
    for m in [CATALOGUE[r] for r in mistake.requires] + [mistake]:
        copy_files(target, m)
        apply_patches(target, m.patches, f"mistake {m.name}")
    return target
