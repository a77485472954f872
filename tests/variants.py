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
    "late-lock": [
        ("boot.py", LOCK_FIRST, ""),
        ("main.py", LOCK_FIRST, ""),
        ("lib/sbd/boot.py", "def run():\n", "def run():\n    console.open()\n"),
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
}


def build_variant(name: str, target: Path) -> Path:
    """A copy of the reference firmware in `target` with one variant's patches."""
    shutil.copytree(FIRMWARE, target, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, old, new in VARIANTS[name]:
        path = target / rel
        text = path.read_text()
        if old not in text:
            raise AssertionError(f"variant {name}: {rel} no longer contains {old!r}")
        path.write_text(text.replace(old, new, 1))
    return target
