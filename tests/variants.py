"""Deliberately broken firmware variants, each made by patching the reference.

A patch names the exact text it replaces; if the reference changes so that
the text is gone, building the variant fails instead of silently testing
the wrong thing. Each variant breaks one practice, and the tests assert
that the check for that practice fails on it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"

LOCK_FIRST = """try:
    import micropython
    micropython.kbd_intr(-1)
except BaseException:
    import micropython
    micropython.kbd_intr(-1)
"""

# variant -> [(file, old text, new text)]
VARIANTS: dict[str, list[tuple[str, str, str]]] = {
    "no-boot-line": [
        ("lib/sbd/boot.py", "    boot_report.announce(state.summary())\n", ""),
    ],
    "fixed-device-id": [
        ("lib/sbd/device.py", '    """Lower-case hex of machine.unique_id() (the ESP32\'s base MAC)."""\n',
         '    return "3c71bf0a1b2c"  # broken: one plausible-looking ID baked into every device\n'),
    ],
    "old-version": [
        ("lib/sbd/version.py", 'VERSION = "0.1.0"', 'VERSION = "0.0.9"'),
    ],
    "shared-key": [
        ("lib/sbd/identity.py", "    from sbd import p256\n    try:\n        sk, pk = p256.generate_keypair()",
         "    from sbd import p256\n    try:\n        sk = binascii.unhexlify(FACTORY_PRIVATE_KEY)\n"
         "        pk = p256.public_key(sk)"),
        ("lib/sbd/identity.py", '_SK, _PK, _CERT, _CA = "sk", "pk", "cert", "ca"\n',
         '_SK, _PK, _CERT, _CA = "sk", "pk", "cert", "ca"\n'
         'FACTORY_PRIVATE_KEY = "519b423d715f8b581f4fa8ee59f4771a5b44c8130b4e3eacca54a56dda72b464"\n'),
    ],
    "leaky-key": [
        ("lib/sbd/boot.py", "    boot_report.announce(state.summary())\n",
         "    boot_report.announce(state.summary())\n"
         "    import binascii\n    from sbd import store\n"
         "    print('debug: key', binascii.hexlify(store.get('sk', 32)).decode())\n"),
    ],
    "open-console": [
        ("lib/sbd/app.py", "    if not state.locked():\n        console.open()\n        return\n",
         "    console.open()  # broken: the REPL stays reachable on a locked device\n    return\n"),
    ],
    # The lock only comes in app.run_locked(), and boot.py does its work
    # (slot check, imports, identity) with nothing catching a Ctrl-C: one that
    # lands in those few hundred milliseconds ends boot.py, so MicroPython
    # skips main.py and starts the REPL.
    "late-lock": [
        ("boot.py", LOCK_FIRST, ""),
        ("main.py", LOCK_FIRST, ""),
        ("boot.py", "try:\n    # The factory image verifies the update slot that will run (sbd.slots).\n"
                    "    from sbd import slots\n    slots.select()\n"
                    "except BaseException as e:\n    print('{\"sbd\": \"slot_error\", \"error\": %r}' % type(e).__name__)\n",
         "from sbd import slots\nslots.select()\n"),
        ("boot.py", "try:\n    from sbd import boot\n    boot.run()\n"
                    "except BaseException as e:\n    print('{\"sbd\": \"boot_error\", \"error\": %r}' % type(e).__name__)\n",
         "from sbd import boot\nboot.run()\n"),
    ],
    "shallow-factory-reset": [
        ("lib/sbd/factory_reset.py", "    store.erase_partition()\n",
         "    import esp32\n    nvs = esp32.NVS(store.NAMESPACE)\n"
         "    for key in ('cert', 'ca', 'locked'):\n        try:\n            nvs.erase_key(key)\n"
         "        except OSError:\n            pass\n"),
    ],
    "unsigned-commands": [
        ("lib/sbd/commands.py",
         "    if not p256.verify(ca_public_key, hashlib.sha256(payload).digest(), signature):\n"
         "        raise CommandError(\"bad signature\")\n", ""),
    ],
    "wrong-csr-subject": [
        ("lib/sbd/identity.py", "store.get(_SK, 32), public_key(), device.device_id())",
         "store.get(_SK, 32), public_key(), \"esp32-device\")"),
    ],
    "no-cert-verification": [
        ("lib/sbd/tls.py", "    ctx.verify_mode = ssl.CERT_REQUIRED\n", "    ctx.verify_mode = ssl.CERT_NONE\n"),
    ],
    "silent-telemetry": [
        ("lib/sbd/link.py", "        waiting = self.outbox.pending(1)\n",
         "        waiting = None  # broken: readings never leave the outbox\n"),
    ],
    "no-backoff": [
        ("lib/sbd/link.py", '    """Exponential from 1 s, capped at 60 s, with jitter in its upper half."""\n',
         "    return 200  # broken: retries hammer the broker five times a second\n"),
    ],
    "volatile-outbox": [
        ("lib/sbd/link.py", '        self.outbox = Outbox("/data/outbox")\n',
         '        self.outbox = Outbox("/data/outbox")\n'
         "        self.outbox.ack(1 << 30)  # broken: a restart forgets what was queued\n"),
    ],
    "crash-on-bad-packet": [
        ("lib/sbd/link.py", "        except (MQTTProtocolError, OSError) as e:\n",
         "        except OSError as e:  # broken: a malformed packet escapes to the top\n"),
    ],
    # Signed updates (issue 5; check_ota.py). Each breaks one step of docs/ota.md.
    "unsigned-updates": [  # the key ID is looked up, the signature never checked (on update and at boot)
        ("lib/sbd/manifest.py",
         "            if not p256.verify(pk, digest, bytes(sig[8:])):\n"
         "                raise ManifestError(\"bad signature\")\n",
         "            pass  # broken: the signature is never checked\n"),
    ],
    "no-anti-rollback": [  # a security counter not above the device's is accepted
        ("lib/sbd/ota.py",
         "        if m[\"security_counter\"] <= slots.counter():\n"
         "            raise Rejected(\"rollback: security counter not higher\")\n",
         "        pass  # broken: no anti-rollback, any signed release installs\n"),
    ],
    "unchecked-update-files": [  # the signed manifest is checked, the files against it never are
        ("lib/sbd/ota.py",
         "            if self.h.digest() != binascii.unhexlify(self.m[\"files\"][self.fi][\"sha256\"]):\n"
         "                raise Rejected(\"hash mismatch \" + self.m[\"files\"][self.fi][\"path\"])\n",
         "            pass  # broken: a file's hash is not compared with the manifest\n"),
        ("lib/sbd/slots.py",
         "        if digest != binascii.unhexlify(f[\"sha256\"]):\n"
         "            raise manifest.ManifestError(\"hash mismatch \" + f[\"path\"])\n",
         "        pass  # broken: a file's hash is not compared with the manifest\n"),
    ],
    # Attack surface (issue 6; check_surface.py).
    "open-port": [  # a "debug shell" left listening on TCP 2323 by the running firmware
        ("lib/sbd/app.py", "    console.serve(on_line, commands.MAX_LINE + 1, tick=tick, period_ms=100)\n",
         "    import socket  # broken: a debug shell's socket, listening on every address\n"
         "    shell = socket.socket()\n"
         "    shell.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "    shell.bind(socket.getaddrinfo(\"0.0.0.0\", 2323)[0][-1])\n"
         "    shell.listen(1)\n"
         "    console.serve(on_line, commands.MAX_LINE + 1, tick=tick, period_ms=100)\n"),
    ],
    "undeclared-connection": [  # an NTP-style query to the broker's host before every connection
        ("lib/sbd/link.py",
         "            stream = tls.connect(self.cfg[\"broker_addr\"], self.cfg[\"broker_port\"], self.cfg[\"broker_host\"])\n",
         "            import socket  # broken: a flow the device never declared\n"
         "            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "            probe.sendto(b\"\\x1b\" + bytes(47), socket.getaddrinfo(self.cfg[\"broker_addr\"], 123)[0][-1])\n"
         "            probe.close()\n"
         "            stream = tls.connect(self.cfg[\"broker_addr\"], self.cfg[\"broker_port\"], self.cfg[\"broker_host\"])\n"),
    ],
    "serial-secret": [  # a debug print of the Wi-Fi settings on the locked console
        ("lib/sbd/link.py", "                    self.wlan.connect(self.cfg[\"wifi_ssid\"], self.cfg[\"wifi_psk\"])\n",
         "                    print(\"wifi:\", self.cfg[\"wifi_ssid\"], self.cfg[\"wifi_psk\"])  # broken: debug output\n"
         "                    self.wlan.connect(self.cfg[\"wifi_ssid\"], self.cfg[\"wifi_psk\"])\n"),
    ],
    # Documentation (issue 6; check_docs.py).
    "no-support-period": [  # the birth message no longer says until when the device gets fixes
        ("lib/sbd/link.py",
         '"security_policy": version.SECURITY_POLICY, "support_until": version.SUPPORT_UNTIL}',
         '"security_policy": version.SECURITY_POLICY}  # broken: no support_until'),
    ],
}


def build_variant(name: str, target: Path) -> Path:
    """A copy of the reference firmware in `target` with one variant's patches
    (the harness's exact-text patching, as for `sbd flash --profile insecure`)."""
    from sbd_harness.profiles import apply_patches
    shutil.copytree(FIRMWARE, target, ignore=shutil.ignore_patterns("__pycache__"))
    apply_patches(target, VARIANTS[name], f"variant {name}")
    return target
