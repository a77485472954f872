"""The ICS and the IXIT draft written beside every report: the inputs of an EN 303 645 assessment
(ETSI TS 103 701).

ICS: Table B.1 of EN 303 645, a row per provision: its status (M, R, C, F), whether the product
supports it (Y, N or N/A) and the detail, with the justification EN 303 645 5.0-1 asks for where a
recommendation is not met or a provision does not apply. The harness fills it from the run's
verdicts and the firmware's feature declaration; the support it proposes is a draft.

IXIT: the implementation facts an assessor's conceptual test cases read (TS 103 701 tables such as
1-AuthMech, 7-UpdMech, 10-SecParam, 11-ComMech, 15-Intf, 20-SecBoot ...), filled from what the
firmware declares (firmware/features.json), the MUD file, the device's own status and the checks'
evidence, each entry naming its source.

What only the manufacturer can state (a 5.0-1 justification, how a recommendation is met off the
device, the support period's rationale) comes from a manufacturer overrides file, JSON:
`{"ics": {"5.3-5": {"support": "N", "detail": "..."}}, "ixit": {"2-UserInfo": [{"name": ..., "detail": ...}]}}`.
An override replaces the proposed support and detail and is marked as the manufacturer's; it never
changes the harness's own verdict, which stays beside it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sbd_harness.errors import SbdError

SUPPORT = ("Y", "N", "N/A")
# The verdicts that propose "Y": a check passed (fully or in part), or could not run here, or a page says how
# it is met; never where the project's own documentation says the provision is not met.
PROPOSE_Y = ("verified", "partly_verified", "supporting_only", "inconclusive", "not_verified_on_this_board",
             "documentation_only")
IXIT_TABLES = {
    "1-AuthMech": "Authentication mechanisms",
    "2-UserInfo": "User information",
    "7-UpdMech": "Update mechanisms",
    "8-UpdProc": "Update procedures",
    "10-SecParam": "Security parameters",
    "11-ComMech": "Communication mechanisms",
    "13-SoftServ": "Software services",
    "15-Intf": "Interfaces",
    "20-SecBoot": "Secure boot mechanisms",
    "23-ResMech": "Resilience mechanisms",
    "25-DelFunc": "Deletion functionalities",
    "29-InpVal": "Input validation",
}


class OverridesError(SbdError, ValueError):
    """A manufacturer overrides file the ICS cannot use."""


def load_overrides(path: str | Path | None) -> dict[str, Any]:
    if not path:
        return {"ics": {}, "ixit": {}}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise OverridesError(f"manufacturer overrides {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise OverridesError(f"manufacturer overrides {path}: expected a JSON object")
    ics, ixit = data.get("ics", {}), data.get("ixit", {})
    if not isinstance(ics, dict) or not isinstance(ixit, dict):
        raise OverridesError(f"manufacturer overrides {path}: \"ics\" and \"ixit\" are JSON objects")
    from sbd_harness.reports.provisions import CATALOGUE
    unknown_ids = sorted(set(ics) - set(CATALOGUE["etsi_en_303_645"]))
    if unknown_ids:
        raise OverridesError(f"manufacturer overrides {path}: ics: no such EN 303 645 provision {unknown_ids}")
    for pid, entry in ics.items():
        if not isinstance(entry, dict) or entry.get("support") not in SUPPORT or not str(entry.get("detail", "")).strip():
            raise OverridesError(f"manufacturer overrides {path}: ics {pid}: needs support Y, N or N/A and a detail")
    unknown = sorted(set(ixit) - set(IXIT_TABLES))
    if unknown:
        raise OverridesError(f"manufacturer overrides {path}: unknown IXIT tables {unknown}")
    return {"ics": ics, "ixit": ixit}


def _evidence_text(row: dict[str, Any]) -> str:
    parts = [row["verdict_text"]]
    for c in row["checks"]:
        parts.append(f"{c['id']} {c['status']} ({c['strength']}{': ' + c['reason'] if c.get('reason') else ''})")
    for c in row["associated_service"]:
        parts.append(f"associated service: {c['id']} {c['status']}")
    parts += [f"{d['page']}: {d['what']}" for d in row["docs"]]
    parts += [f"limitation, {d['page']}: {d['what']}" for d in row["documented_limitations"]]
    return "; ".join(parts)


def ics(report: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Table B.1 of EN 303 645 for this run."""
    overrides = overrides or {"ics": {}}
    cov = report["coverage"]["etsi_en_303_645"]
    rows = []
    for r in cov["provisions"]:
        status = r.get("status")
        if not r["applicable"] and r["verdict"] == "not_applicable":
            support = "N/A"
            detail = f"5.0-1: not applicable, the feature ({r['not_applicable']['feature']}) is absent: " \
                     f"{r['not_applicable']['justification']}"
        elif r["verdict"] in PROPOSE_Y and not (r["documented_limitations"] and r["verdict"] != "verified"):
            support, detail = "Y", _evidence_text(r)
            if r["verdict"] in ("inconclusive", "not_verified_on_this_board"):
                detail = "unconfirmed by this run: " + detail
        else:
            support = "N"
            if status and status.startswith("R"):
                detail = ("5.0-1 justification needed: this recommendation is not met and the manufacturer has not "
                          "recorded why (manufacturer overrides file). Harness: " + _evidence_text(r))
            else:
                detail = "not met. Harness: " + _evidence_text(r)
        row = {"id": r["id"], "title": r["title"], "status": status or "unconfirmed", "support": support,
               "detail": detail, "source": "harness", "harness_verdict": r["verdict"]}
        if r["id"] in overrides["ics"]:
            o = overrides["ics"][r["id"]]
            row.update({"support": o["support"], "detail": o["detail"], "source": "manufacturer",
                        "proposed_by_harness": {"support": support, "detail": detail}})
        rows.append(row)
    _record_of_justifications(rows, overrides)
    return {"standard": "ETSI EN 303 645 V3.1.3, Table B.1 (implementation conformance statement)",
            "draft": True, "provenance": _brief_provenance(report), "provisions": rows,
            "counts": {s: sum(1 for r in rows if r["support"] == s) for s in SUPPORT}}


def _record_of_justifications(rows: list[dict[str, Any]], overrides: dict[str, Any]) -> None:
    """5.0-1 is this table's own record: met when every provision that does not apply or is not met carries
    its justification (the feature declaration, or the manufacturer's word in the overrides file)."""
    row = next((r for r in rows if r["id"] == "5.0-1"), None)
    if row is None or row["source"] == "manufacturer":
        return
    lacking = [r["id"] for r in rows if r["id"] != "5.0-1" and r["source"] == "harness"
               and (r["support"] == "N" or (r["support"] == "N/A" and not r["detail"].startswith("5.0-1:")))]
    if lacking:
        row.update(support="N", detail="the record is incomplete: no justification yet for " + ", ".join(lacking)
                   + " (the manufacturer records them in the overrides file)")
    else:
        row.update(support="Y", detail="every provision not applicable or not met carries its justification in "
                                       "this table")


def _brief_provenance(report: dict[str, Any]) -> dict[str, Any]:
    p = report.get("provenance") or {}
    obj = p.get("test_object") or {}
    product = report.get("product") or {}
    return {"product": {k: product.get(k) for k in ("name", "model", "version", "supplier", "docs_url")}
            if product else None,
            "date": p.get("date"), "harness_commit": p.get("harness_commit"),
            "catalogue_sha256": p.get("catalogue_sha256"), "device_id": obj.get("device_id"),
            "firmware_version": obj.get("firmware_version")}


def _check(report: dict[str, Any], check_id: str) -> dict[str, Any] | None:
    return next((c for c in report["checks"] if c["id"] == check_id), None)


def ixit(report: dict[str, Any], features: dict[str, Any] | None, overrides: dict[str, Any] | None = None,
         mud: dict[str, Any] | None = None, nvs_keys: list[str] | None = None) -> dict[str, Any]:
    """The IXIT draft: per table, entries {name, detail, source}. nvs_keys: the names of the keys in the
    device's NVS namespace, read back from its flash after the run (boards that allow it), to hold the
    declared layout against."""
    overrides = overrides or {"ixit": {}}
    declared = (features or {}).get("ixit", {})
    src = f"firmware declaration ({(features or {}).get('path', 'features.json')})"
    tables: dict[str, list[dict[str, Any]]] = {t: [] for t in IXIT_TABLES}
    for table, entries in declared.items():
        if table in tables:
            tables[table] += [{**e, "source": src} for e in entries]
    for name, f in ((features or {}).get("features") or {}).items():
        if name == "debug_interfaces" or name == "keys_leave_device":
            table = "15-Intf" if name == "debug_interfaces" else "10-SecParam"
            tables[table].append({"name": name.replace("_", " "), "present": f["present"], "detail": f["detail"],
                                  "source": src})
    surface = _check(report, "no-listening-ports")
    if surface and surface["status"] == "pass":
        tables["15-Intf"].append({"name": "network listeners", "detail": "no TCP or UDP port answers on the device's "
                                  "address (a scan of all ports)", "source": "check no-listening-ports (passed)"})
    flows = _check(report, "connections-match-mud")
    mud_url = (flows or {}).get("evidence", {}).get("mud_url")
    mud = mud or (flows or {}).get("evidence", {}).get("mud_file")
    if mud:
        tables["11-ComMech"].append({"name": "declared flows (MUD, RFC 8520)", "detail": _mud_flows(mud),
                                     "source": "the MUD file written from the firmware's network declaration"})
    if mud_url:
        tables["11-ComMech"].append({"name": "MUD URL", "detail": mud_url,
                                     "source": f"check connections-match-mud ({flows['status']})"})
    for cid, table, what in (("telemetry-over-mutual-tls", "11-ComMech", "MQTT over mutual TLS to the broker"),
                             ("rogue-brokers-refused", "11-ComMech", "broker authenticated against the CA installed "
                                                                     "at provisioning; TLS 1.1 refused"),
                             ("factory-reset-erases-identity", "25-DelFunc", "factory reset erases the key, "
                                                                             "certificate and data"),
                             ("outages-lose-nothing", "23-ResMech", "broker outages, network and power cuts lose "
                                                                    "no telemetry; reconnection backs off")):
        c = _check(report, cid)
        if c:
            tables[table].append({"name": cid, "detail": what, "source": f"check {cid} ({c['status']})"})
    # What the device-evidence checks saw, each as its evidence says it
    for cid, table, name, key in (("only-declared-interfaces-on", "15-Intf", "radio interfaces on", "reported"),
                                  ("tls-client-offers-strong-crypto", "11-ComMech", "TLS ClientHello offer",
                                   "client_hello"),
                                  ("keys-at-rest-protected", "10-SecParam", "private key in the flash at rest",
                                   "key_found_at"),
                                  ("changed-file-caught-at-boot", "20-SecBoot", "changed update file at boot",
                                   "incident")):
        c = _check(report, cid)
        if c and c["status"] in ("pass", "fail") and key in c.get("evidence", {}):
            tables[table].append({"name": name, "detail": json.dumps(c["evidence"][key], sort_keys=True),
                                  "source": f"check {cid} ({c['status']})"})
    fuses = _check(report, "chip-security-fuses")
    if fuses and fuses.get("evidence"):
        tables["20-SecBoot"].append({"name": "eFuse summary", "detail": json.dumps(fuses["evidence"], sort_keys=True),
                                     "source": f"check chip-security-fuses ({fuses['status']})"})
    state = (report.get("provenance") or {}).get("test_object", {}).get("security_state")
    if state:
        tables["20-SecBoot"].append({"name": "device security state", "detail": json.dumps(state, sort_keys=True),
                                     "source": "the device's boot line"})
    if nvs_keys is not None:
        declared_keys = {e["nvs"].split("/", 1)[-1] for e in tables["10-SecParam"] if e.get("nvs")}
        found = set(nvs_keys)
        tables["10-SecParam"].append({
            "name": "NVS layout on the device", "detail": "keys present after the run: " + (", ".join(sorted(found))
                                                                                          or "none"),
            "undeclared": sorted(found - declared_keys), "declared_not_present": sorted(declared_keys - found),
            "source": "the board's flash, read back after the run (names only, no values)"})
    for table, entries in overrides["ixit"].items():
        tables[table] += [{**e, "source": "manufacturer"} for e in entries]
    missing = [t for t, entries in tables.items() if not entries]
    return {"standard": "ETSI TS 103 701 IXIT (draft)", "draft": True, "provenance": _brief_provenance(report),
            "tables": {t: {"title": IXIT_TABLES[t], "entries": e} for t, e in tables.items()},
            "missing": [{"table": t, "detail": "nothing declared: the manufacturer states it (overrides file)"}
                        for t in missing]}


def _mud_flows(mud: dict[str, Any]) -> str:
    """The device-initiated flows a MUD file allows, in words."""
    out = []
    for acl in mud.get("ietf-access-control-list:acls", {}).get("acl", []):
        if not acl.get("name", "").endswith("fr"):
            continue
        for ace in acl.get("aces", {}).get("ace", []):
            m = ace.get("matches", {})
            proto = next((p for p in ("tcp", "udp") if p in m), "?")
            port = m.get(proto, {}).get("destination-port", {}).get("port", "?")
            ipv4 = {k: v for k, v in m.get("ipv4", {}).items() if k != "protocol"}
            peer = next(iter(ipv4.values()), "the local network" if "ietf-mud:mud" in m else "?")
            out.append(f"{ace.get('name')}: {proto}/{port} to {peer}")
    return "; ".join(out) + ("; nothing may connect to the device" if out else "none")


# Markdown ---------------------------------------------------------------------------------------
def _md(text: Any) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).replace("|", "\\|")


def _for_product(p: dict[str, Any]) -> str:
    """Names the product the draft is for, where the report names one (release/product.py)."""
    product = p.get("product")
    if not product:
        return ""
    from sbd_harness.reports.report import product_text
    return f" for {_md(product_text(product))}"


def ics_markdown(doc: dict[str, Any]) -> str:
    p = doc["provenance"]
    lines = [f"# ICS: {doc['standard']}", "",
             f"Draft{_for_product(p)} from `sbd verify` on {_md(p.get('date'))}, device `{_md(p.get('device_id'))}`, firmware "
             f"{_md(p.get('firmware_version'))}, harness commit `{_md(p.get('harness_commit'))}`, catalogue "
             f"`{_md(p.get('catalogue_sha256'))}`. Support: " + ", ".join(f"{k} {v}" for k, v in doc["counts"].items())
             + ". Rows marked manufacturer come from the overrides file.", "",
             "| Provision | Title | Status | Support | Detail | Source |", "|---|---|---|---|---|---|"]
    for r in doc["provisions"]:
        lines.append(f"| {_md(r['id'])} | {_md(r['title'])} | {_md(r['status'])} | {r['support']} | "
                     f"{_md(r['detail'])} | {r['source']} |")
    return "\n".join(lines) + "\n"


def ixit_markdown(doc: dict[str, Any]) -> str:
    p = doc["provenance"]
    lines = [f"# IXIT: {doc['standard']}", "",
             f"Draft{_for_product(p)} from `sbd verify` on {_md(p.get('date'))}, device `{_md(p.get('device_id'))}`, firmware "
             f"{_md(p.get('firmware_version'))}. Each entry names its source.", ""]
    for table, t in doc["tables"].items():
        lines += [f"## {table} {t['title']}", ""]
        if not t["entries"]:
            lines += ["Nothing declared: the manufacturer states it (overrides file).", ""]
            continue
        lines += ["| Name | Detail | Source |", "|---|---|---|"]
        for e in t["entries"]:
            extra = {k: v for k, v in e.items() if k not in ("name", "detail", "source")}
            detail = e.get("detail", "") + (" (" + ", ".join(f"{k}: {v}" for k, v in extra.items()) + ")" if extra else "")
            lines.append(f"| {_md(e.get('name', ''))} | {_md(detail)} | {_md(e['source'])} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_all(report: dict[str, Any], report_path: Path, features: dict[str, Any] | None,
              overrides: dict[str, Any] | None = None, mud: dict[str, Any] | None = None,
              nvs_keys: list[str] | None = None) -> dict[str, Path]:
    """Writes report.ics.json/.md and report.ixit.json/.md beside `report_path`; returns their paths."""
    stem = Path(report_path).with_suffix("")
    paths = {k: Path(f"{stem}.{k.replace('_', '.')}") for k in ("ics_json", "ics_md", "ixit_json", "ixit_md")}
    ics_doc, ixit_doc = ics(report, overrides), ixit(report, features, overrides, mud, nvs_keys)
    paths["ics_json"].write_text(json.dumps(ics_doc, indent=2) + "\n")
    paths["ics_md"].write_text(ics_markdown(ics_doc))
    paths["ixit_json"].write_text(json.dumps(ixit_doc, indent=2) + "\n")
    paths["ixit_md"].write_text(ixit_markdown(ixit_doc))
    return paths
