"""A product built on the reference, as a manufacturer makes one (docs/product.md): the reference
firmware copied and changed (model, version, documents' address, support date, MUD base, a sensor
module, its declaration), its own documents and its own reviewed network policy.

`build_product(target, leave=...)` writes it under `target` and returns its paths; each name in
`leave` keeps that value at the reference's, as a team that forgot it would."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from sbd_harness.paths import REPO_ROOT
from sbd_harness.release.mistakes import apply_patches
from sbd_harness.release.product import REFERENCE

MODEL = "acme-thermo-esp32"
VERSION = "2.3.0"
DOCS_URL = "https://docs.acme-sensors.com/thermo/"
SUPPORT_UNTIL = "2030-06-30"
MUD_BASE = "https://mud.acme-sensors.com/"
NAME = "Acme Thermo"
SUPPLIER = "Acme Sensors Ltd"
DESCRIPTION = "Acme Thermo, a Wi-Fi room thermostat"
# What a team can leave at the reference's value.
LEAVABLE = ("DOCS_URL", "SUPPORT_UNTIL", "MUD_BASE", "features.json", "network-policy.json")

SECURITY_MD = f"""# Acme Thermo: reporting a vulnerability

## At a glance

| Item | Commitment |
|---|---|
| Contact | psirt@acme-sensors.com |
| Acknowledgement | within 3 working days |
| Status updates | every 2 weeks |
| Support period | security updates until {SUPPORT_UNTIL} ([support.md](support.md)) |

## How to report

Write to psirt@acme-sensors.com.

## What happens after you report

We acknowledge, assess, keep you informed and fix.
"""

SUPPORT_MD = f"""# Acme Thermo: support period

| Item | Declaration |
|---|---|
| Product | `{MODEL}` |
| Security updates until | {SUPPORT_UNTIL} |
| Placed on the market | 2025-05-01 |

## What support covers

Security fixes for every vulnerability reported until the end of the period.
"""

SENSOR_PY = '''# The room temperature sensor of the Acme Thermo (an NTC on ADC 34).
def read_temp_c(adc_value=2048):
    return round(25.0 + (2048 - adc_value) / 40.0, 1)
'''


@dataclass
class ProductFiles:
    firmware: Path
    docs: Path
    policy: Path


def build_product(target: Path, leave: tuple[str, ...] = ()) -> ProductFiles:
    unknown = set(leave) - set(LEAVABLE)
    assert not unknown, f"cannot leave {unknown}: choose from {LEAVABLE}"
    fw = target / "firmware"
    shutil.copytree(REPO_ROOT / "firmware", fw, ignore=shutil.ignore_patterns("__pycache__"))
    version = [('MODEL = "sbd-reference-esp32"', f'MODEL = "{MODEL}"'),
               ('VERSION = "0.1.0"', f'VERSION = "{VERSION}"')]
    if "DOCS_URL" not in leave:
        version.append((f'DOCS_URL = "{REFERENCE["DOCS_URL"]}"', f'DOCS_URL = "{DOCS_URL}"'))
    if "SUPPORT_UNTIL" not in leave:
        version.append((f'SUPPORT_UNTIL = "{REFERENCE["SUPPORT_UNTIL"]}"', f'SUPPORT_UNTIL = "{SUPPORT_UNTIL}"'))
    patches = [("lib/sbd/version.py", old, new) for old, new in version]
    if "MUD_BASE" not in leave:
        patches.append(("lib/sbd/network_policy.py", f'MUD_BASE = "{REFERENCE["MUD_BASE"]}"',
                        f'MUD_BASE = "{MUD_BASE}"'))
    apply_patches(fw, tuple(patches), "the product fixture")
    (fw / "lib/sbd/sensor.py").write_text(SENSOR_PY)
    if "features.json" not in leave:
        decl = json.loads((fw / "features.json").read_text())
        decl["model"] = MODEL
        decl["product"] = {"name": NAME, "supplier": SUPPLIER, "description": DESCRIPTION,
                           "docs": {"SECURITY.md": "SECURITY.md", "support.md": "support.md"}}
        decl["features"]["sensors"] = {"present": True, "detail": "A room temperature sensor (lib/sbd/sensor.py)."}
        (fw / "features.json").write_text(json.dumps(decl, indent=2))
    docs = target / "docs"
    docs.mkdir()
    (docs / "SECURITY.md").write_text(SECURITY_MD)
    (docs / "support.md").write_text(SUPPORT_MD)
    policy = json.loads((REPO_ROOT / "boards/network-policy.json").read_text())
    if "network-policy.json" not in leave:
        policy.update(model=MODEL, mud_url=f"{MUD_BASE}{MODEL}.json",
                      about=f"The reviewed network policy of {MODEL}.")
    (target / "network-policy.json").write_text(json.dumps(policy, indent=2))
    return ProductFiles(fw, docs, target / "network-policy.json")
