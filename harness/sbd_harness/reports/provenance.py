"""Where a report comes from, and what this run could not show.

An assessor signs a report only when it says which harness (version and commit)
with which mapping (the catalogue's hash and the baselines' editions) checked
which device (as the device itself attested it, when it did) in which lab
(emulated or real board, network namespace or shared loopback, deliberate
broker flaws), and what the run could not establish: checks skipped,
placeholder addresses that make the document provisions inconclusive.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess
from typing import Any
from urllib.parse import urlparse

from sbd_harness.paths import REPO_ROOT
from sbd_harness.reports.claims import CLAIMS
from sbd_harness.reports.provisions import BASELINES, CATALOGUE, EDITIONS, EN_STATUS, FEATURE_PROVISIONS

# The checks that read the documents the firmware's DOCS_URL points to: with a placeholder address, the
# documents they read are the lab's copy, not what a buyer can reach, so their provisions are inconclusive.
DOCS_URL_CHECKS = ("vulnerability-disclosure-policy-published", "support-period-declared")

RESERVED_SUFFIXES = (".invalid", ".example", ".test", ".localhost", ".local")  # RFC 2606, RFC 6761, RFC 6762
RESERVED_DOMAINS = ("example.com", "example.net", "example.org", "localhost")


def is_placeholder(url: str | None) -> bool:
    """True for an address no buyer can reach: reserved names (RFC 2606), or none at all."""
    if not url:
        return True
    host = (urlparse(url).hostname or "").lower().rstrip(".")
    return (not host or host.endswith(RESERVED_SUFFIXES) or host in RESERVED_DOMAINS
            or any(host.endswith("." + d) for d in RESERVED_DOMAINS))


def declared_url(source: str | None, name: str) -> str | None:
    """A `NAME = "..."` string constant from a firmware source, read as text (never executed)."""
    if not source:
        return None
    m = re.search(rf'^{name}\s*=\s*"([^"]*)"', source, re.M)
    return m.group(1) if m else None


def catalogue_sha256() -> str:
    """SHA-256 of the mapping a report rests on: the provision catalogue, the EN statuses, the feature
    conditions and every check's claims, as canonical JSON."""
    blob = json.dumps({"catalogue": CATALOGUE, "en_status": EN_STATUS, "features": FEATURE_PROVISIONS,
                       "claims": CLAIMS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def harness_commit() -> str | None:
    """The harness's git commit, with "-dirty" when its files differ from it; None outside a checkout."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no",
                                "--", "harness"], capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _evidence(checks: list[dict[str, Any]], check_id: str) -> dict[str, Any]:
    return next((c.get("evidence") or {} for c in checks if c["id"] == check_id), {})


def test_object(board: dict[str, Any], firmware: dict[str, Any], checks: list[dict[str, Any]],
                sbom: dict[str, Any] | None) -> dict[str, Any]:
    """The device as this run saw it: from its boot line and, where it ran, its attestation."""
    boot = _evidence(checks, "boot-line-identifies-firmware").get("boot_line") or {}
    integrity = _evidence(checks, "firmware-matches-build")
    att = integrity.get("attestation") or {}
    obj: dict[str, Any] = {
        "device_id": att.get("device_id") or boot.get("device_id"),
        "device_id_source": "attestation" if att.get("device_id") else "boot line" if boot.get("device_id") else None,
        "model": boot.get("model"),
        "firmware_version": att.get("fw_version") or boot.get("fw_version"),
        "security_state": boot.get("security"),
        "build": {"version": firmware.get("version"), "sha256": firmware.get("sha256"), "files": firmware.get("files")},
    }
    if att.get("file_sha256"):
        obj["firmware_hashes"] = {"source": "the device's attestation (signed with its certified key, fresh nonce)",
                                  "slot": att.get("slot"), "security_counter": att.get("security_counter"),
                                  "files": att["file_sha256"]}
    elif integrity and not integrity.get("changed") and not integrity.get("missing") and "files" in integrity:
        obj["firmware_hashes"] = {"source": "read back over the open REPL and compared with the build, not attested",
                                  "matches_build": True}
    else:
        obj["firmware_hashes"] = {"source": "not attested in this run"}
    platform = (sbom or {}).get("platform") or {}
    declared = "(the build's platform declaration, platform.json; not reported by the device)"
    obj["versions"] = {
        "firmware": obj["firmware_version"],
        "micropython": (f"{platform['micropython']} {declared}" if platform.get("micropython") else
                        f"{sbom['micropython']} or newer (the build's declared minimum, not reported by the device)"
                        if sbom and sbom.get("micropython") else "not reported by the device"),
        **{key: f"{platform[name]} {declared}" if platform.get(name) else "not reported by the device"
           for key, name in (("esp_idf", "esp-idf"), ("mbedtls", "mbedtls"), ("lwip", "lwip"))},
    }
    return obj


def environment(board: dict[str, Any], broker_flaws: list[str] | None = None) -> dict[str, Any]:
    kind = board.get("kind")
    net = board.get("network")
    return {"board": "emulated" if kind == "emulated" else "real" if kind else None,
            "network": {"netns": "network namespace", "loopback": "shared loopback"}.get(net, net),
            "weakened_by_loopback": board.get("weakened_by_loopback") or [],
            "broker_flaws": list(broker_flaws or [])}


def provenance(board: dict[str, Any], firmware: dict[str, Any], checks: list[dict[str, Any]],
               sbom: dict[str, Any] | None, context: dict[str, Any]) -> dict[str, Any]:
    from sbd_harness import __version__
    return {
        "date": context.get("date") or dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "harness_version": __version__,
        "harness_commit": context["harness_commit"] if "harness_commit" in context else harness_commit(),
        "catalogue_sha256": catalogue_sha256(),
        "baselines": {b: {"title": BASELINES[b], "edition": EDITIONS[b]} for b in CATALOGUE},
        "environment": environment(board, context.get("broker_flaws")),
        "test_object": test_object(board, firmware, checks, sbom),
        # the checks' results and evidence as canonical JSON: what the verdicts rest on, for a signature
        "evidence_sha256": hashlib.sha256(json.dumps(checks, sort_keys=True, separators=(",", ":"),
                                                     default=str).encode()).hexdigest(),
        "sbom_sha256": (sbom or {}).get("sha256"),
        "features": context.get("features_path"),
        "manufacturer_overrides": context.get("overrides_path"),
    }


def limitations(checks: list[dict[str, Any]], context: dict[str, Any], features: dict[str, Any] | None,
                env: dict[str, Any]) -> list[dict[str, Any]]:
    """What this run could not show, each with the provisions it touches."""
    out: list[dict[str, Any]] = []
    for c in checks:
        if c["status"] == "skip":
            out.append({"kind": "skipped check", "check": c["id"], "detail": c.get("message") or "skipped",
                        "provisions": _claimed_ids(c)})
    docs_url = context.get("docs_url")
    if any(c["id"] in DOCS_URL_CHECKS for c in checks) and is_placeholder(docs_url):
        out.append({"kind": "placeholder URL", "detail": f"DOCS_URL {docs_url!r} is a placeholder no buyer can reach: "
                    "the documents were read from the lab's copy, so the disclosure-policy and support-period "
                    "provisions are inconclusive, not verified",
                    "provisions": inconclusive_ids(checks, context)})
    mud_base = context.get("mud_base")
    if mud_base is not None and is_placeholder(mud_base):
        out.append({"kind": "placeholder URL", "detail": f"MUD_BASE {mud_base!r} is a placeholder: a network cannot "
                    "fetch the MUD file; the flows were compared with the file the harness wrote",
                    "provisions": {}})
    if env.get("weakened_by_loopback"):
        out.append({"kind": "environment", "detail": "no network namespace: " + "; ".join(env["weakened_by_loopback"]),
                    "provisions": {}})
    if env.get("broker_flaws"):
        out.append({"kind": "environment", "detail": "the lab broker ran with deliberate flaws: "
                    + ", ".join(env["broker_flaws"]), "provisions": {}})
    if env.get("board") == "emulated":
        out.append({"kind": "environment", "detail": "an emulated board: no eFuses, no radio; hardware evidence "
                    "(secure boot, flash encryption, JTAG) needs a real ESP32", "provisions": {}})
    product = context.get("product") or {}
    if product and not product.get("reference") and not any(product.get("docs") or {}):
        out.append({"kind": "no documentation map", "detail": f"{product.get('model')} maps none of its pages "
                    "(features.json, product.docs): the coverage tables cite no document of the product",
                    "provisions": {}})
    if features is None:
        out.append({"kind": "no feature declaration", "detail": "the firmware declares no features "
                    "(features.json): every conditional provision is treated as applicable", "provisions": {}})
    return out


def _claimed_ids(check: dict[str, Any]) -> dict[str, list[str]]:
    return {b: [c["id"] if isinstance(c, dict) else c for c in items]
            for b, items in check.get("provisions", {}).items() if items}


def inconclusive_ids(checks: list[dict[str, Any]], context: dict[str, Any]) -> dict[str, list[str]]:
    """Provisions this run cannot call verified whatever their checks say: those of the document checks when
    DOCS_URL is a placeholder."""
    if not any(c["id"] in DOCS_URL_CHECKS for c in checks) or not is_placeholder(context.get("docs_url")):
        return {}
    out: dict[str, list[str]] = {}
    for c in checks:
        if c["id"] in DOCS_URL_CHECKS:
            for b, ids in _claimed_ids(c).items():
                out.setdefault(b, []).extend(i for i in ids if i not in out.get(b, []))
    return out


def run_context(bundle: Any, broker_flaws: list[str] | None = None, features_path: str | None = None,
                overrides_path: str | None = None, features: dict[str, Any] | None = None,
                docs: str | None = None) -> dict[str, Any]:
    """What the report needs to know about the run beyond the checks' results: the firmware's declared
    addresses (read as text from its sources), the lab broker's flaws, the files the report rests on, and
    the product under test (`release/product.py`: its identity from the build and its declaration
    `features`, and the documentation map the coverage tables cite, the product's pages under `docs`)."""
    from sbd_harness.release.product import docs_folder, doc_maps, from_bundle
    version_py = (bundle.sources.get("/lib/sbd/version.py") or b"").decode(errors="replace")
    policy_py = (bundle.sources.get("/lib/sbd/network_policy.py") or b"").decode(errors="replace")
    product = from_bundle(bundle, features)
    coverage_map, limitation_map = doc_maps(product, docs_folder(product, docs))
    return {"docs_url": declared_url(version_py, "DOCS_URL"), "mud_base": declared_url(policy_py, "MUD_BASE"),
            "broker_flaws": list(broker_flaws or []), "features_path": features_path,
            "overrides_path": overrides_path, "product": product.describe(),
            "doc_coverage": coverage_map, "doc_limitations": limitation_map}
