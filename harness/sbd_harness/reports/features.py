"""The firmware's feature declaration (firmware/features.json), read as data.

It says which features the product has (passwords, personal data, keys that leave
the device, ...): a provision that applies only with a feature the firmware
declares absent is "not applicable (feature absent)" in the report and N/A in the
ICS, the declaration's own words its justification (EN 303 645 5.0-1). It also
carries what the IXIT draft needs that no check can see, and the product's identity
(`model`, and `product`: name, supplier, description, its documents; `release/product.py`). The file is JSON and is
never executed: the harness does not run firmware code to learn what the product is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sbd_harness.errors import SbdError
from sbd_harness.paths import REPO_ROOT
from sbd_harness.reports.provisions import CATALOGUE, FEATURE_PROVISIONS

FILE = "features.json"


class FeaturesError(SbdError, ValueError):
    """A feature declaration the report cannot rely on."""


def load(firmware: Path) -> dict[str, Any] | None:
    """The declaration beside a firmware folder's boot.py and lib/, or None when it has none."""
    path = Path(firmware) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FeaturesError(f"{path}: not valid JSON: {exc}") from exc
    bad = problems(data)
    if bad:
        raise FeaturesError(f"{path}: " + "; ".join(bad))
    data["path"] = _shown(path)
    return data


def _shown(path: Path) -> str:
    """The path as a report shows it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def problems(data: Any) -> list[str]:
    """What makes a declaration unusable: every feature the harness knows must be declared, present or not."""
    if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
        return ["no 'features' object"]
    out = []
    for name in FEATURE_PROVISIONS:
        entry = data["features"].get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("present"), bool):
            out.append(f"feature {name!r}: needs {{\"present\": true|false, \"detail\": ...}}")
        elif not str(entry.get("detail", "")).strip():
            out.append(f"feature {name!r}: says nothing about why (detail)")
    out += [f"unknown feature {n!r}" for n in data["features"] if n not in FEATURE_PROVISIONS]
    if "model" in data and not isinstance(data["model"], str):
        out.append("'model' is not a string")
    from sbd_harness.release.product import declaration_problems
    out += declaration_problems(data.get("product"))
    return out


def not_applicable(features: dict[str, Any] | None) -> dict[str, dict[str, dict[str, str]]]:
    """baseline -> provision -> {feature, detail} for the provisions whose feature is declared absent."""
    out: dict[str, dict[str, dict[str, str]]] = {b: {} for b in CATALOGUE}
    if not features:
        return out
    for name, by_baseline in FEATURE_PROVISIONS.items():
        entry = features["features"][name]
        if entry["present"]:
            continue
        for baseline, ids in by_baseline.items():
            for pid in ids:
                out[baseline][pid] = {"feature": name, "detail": entry["detail"]}
    return out
