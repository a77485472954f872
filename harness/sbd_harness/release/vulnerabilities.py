"""Known vulnerabilities of what runs on the device, with the manufacturer's VEX statements.

Provisions: EU CRA Annex I Part I (2)(a) (no known exploitable vulnerabilities);
EN 18031-1 GEC-1 (up-to-date software without publicly known exploitable
vulnerabilities).

Three inputs beside the firmware's boot.py, read as data (never copied to the device):

- `platform.json`: the components under the application files, with exact
  versions (MicroPython, ESP-IDF, mbedTLS, lwIP), as the SBOM lists them;
- `advisories.osv.json`: an advisory feed in OSV format (records under `vulns`,
  affected ranges as SEMVER or ECOSYSTEM events, packages named by purl or
  name), a snapshot the manufacturer refreshes; `--advisories FILE` gives another;
- `vex.json`: the manufacturer's statements, OpenVEX statuses (`affected`,
  `not_affected` with a justification and a detail, `fixed`); `--vex FILE` adds
  statements that override them.

Each advisory whose range holds a component's version is a known vulnerability of
the product: `affected` unless a statement says otherwise. An advisory about a
component whose version is at or past its fix is listed as `fixed` by the version
in use. A known vulnerability left `affected` is open: the check
`no-known-exploitable-vulnerabilities` fails while one is. Versions compare with
`packaging`'s PEP 440 rules, which order plain release numbers (3.6.4 < 3.6.10)
as semantic versioning does.

`query_osv` asks the OSV service (api.osv.dev) for a component instead: the
optional online path, for a machine with internet; the tests never use it.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Iterable

from packaging.version import InvalidVersion, Version

from sbd_harness.errors import SbdError

PLATFORM_FILE = "platform.json"
FEED_FILE = "advisories.osv.json"
VEX_FILE = "vex.json"

STATUSES = ("affected", "not_affected", "fixed")
# OpenVEX's justifications for not_affected
JUSTIFICATIONS = ("component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
                  "vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist")


class VulnerabilityDataError(SbdError, ValueError):
    """A platform declaration, advisory feed or VEX file the check cannot rely on."""


def _read(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise VulnerabilityDataError(f"{path}: not readable JSON: {exc}") from exc


def _version(text: str, where: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion as exc:
        raise VulnerabilityDataError(f"{where}: {text!r} is not a version this check can compare") from exc


# Inputs ----------------------------------------------------------------------------------------
def load_platform(path: Path) -> list[dict[str, Any]]:
    """The components of platform.json, each with `name`, an exact `version` and optionally a `purl`."""
    data = _read(path)
    comps = data.get("components") if isinstance(data, dict) else None
    if not isinstance(comps, list) or not comps:
        raise VulnerabilityDataError(f"{path}: no 'components' list")
    for c in comps:
        if not isinstance(c, dict) or not c.get("name") or not c.get("version"):
            raise VulnerabilityDataError(f"{path}: a component needs a name and an exact version: {c!r}")
        _version(str(c["version"]), f"{path}: {c['name']}")
    return comps


def load_feed(path: Path) -> dict[str, Any]:
    """An OSV feed: {"snapshot": {...}, "vulns": [records]}, or a bare list of records."""
    data = _read(path)
    records = data if isinstance(data, list) else data.get("vulns") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise VulnerabilityDataError(f"{path}: no OSV records ('vulns': [...])")
    for r in records:
        if not isinstance(r, dict) or not r.get("id") or not isinstance(r.get("affected"), list):
            raise VulnerabilityDataError(f"{path}: not an OSV record (id, affected): {str(r)[:80]}")
    snapshot = data.get("snapshot", {}) if isinstance(data, dict) else {}
    return {"path": str(path), "snapshot": snapshot, "vulns": records}


def load_vex(paths: Iterable[Path]) -> dict[tuple[str, str], dict[str, Any]]:
    """(vulnerability, component) -> statement; a later file's statement overrides an earlier one's.
    A statement with component "*" applies to every component."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        data = _read(path)
        items = data.get("statements") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise VulnerabilityDataError(f"{path}: no 'statements' list")
        for s in items:
            bad = statement_problems(s)
            if bad:
                raise VulnerabilityDataError(f"{path}: {s.get('vulnerability') if isinstance(s, dict) else s!r}: "
                                             + "; ".join(bad))
            out[(s["vulnerability"], s.get("component", "*"))] = {**s, "source": _shown(path)}
    return out


def statement_problems(s: Any) -> list[str]:
    """What makes a VEX statement unusable: an unknown status, a not_affected without a justification from
    OpenVEX's list or without a detail a reviewer can check."""
    if not isinstance(s, dict) or not s.get("vulnerability"):
        return ["a statement needs 'vulnerability'"]
    out = []
    if s.get("status") not in STATUSES:
        out.append(f"status {s.get('status')!r} is not one of {', '.join(STATUSES)}")
    if s.get("status") == "not_affected":
        if s.get("justification") not in JUSTIFICATIONS:
            out.append(f"not_affected needs a justification, one of {', '.join(JUSTIFICATIONS)}")
        if not str(s.get("detail", "")).strip():
            out.append("not_affected needs a detail saying why")
    return out


def _shown(path: Path) -> str:
    """A path as reports show it: relative to the repository when inside it."""
    from sbd_harness.paths import REPO_ROOT
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# Matching --------------------------------------------------------------------------------------
def _purl_base(purl: str | None) -> str | None:
    """pkg:type/namespace/name, lower-cased, without version, qualifiers or subpath."""
    if not purl:
        return None
    return purl.split("?")[0].split("#")[0].split("@")[0].lower()


def _names(component: dict[str, Any]) -> tuple[str | None, str]:
    return _purl_base(component.get("purl")), str(component["name"]).lower()


def _about(affected: dict[str, Any], component: dict[str, Any]) -> bool:
    pkg = affected.get("package") or {}
    purl, name = _names(component)
    theirs = _purl_base(pkg.get("purl"))
    if theirs and purl:
        return theirs == purl
    return str(pkg.get("name", "")).lower() == name


def _in_range(version: Version, ranges: list[dict[str, Any]], where: str) -> tuple[bool, list[str]]:
    """Whether `version` falls in one of the OSV ranges, and the fixed versions the ranges name."""
    hit, fixes = False, []
    for rng in ranges:
        if rng.get("type") not in ("SEMVER", "ECOSYSTEM"):
            continue  # GIT ranges name commits, not versions: not decidable from a version
        introduced: Version | None = None
        for ev in rng.get("events", []):
            if "introduced" in ev:
                introduced = Version("0") if ev["introduced"] == "0" else _version(ev["introduced"], where)
            elif "fixed" in ev or "last_affected" in ev:
                end = _version(ev.get("fixed") or ev["last_affected"], where)
                if "fixed" in ev:
                    fixes.append(ev["fixed"])
                if introduced is not None and introduced <= version and (
                        version < end if "fixed" in ev else version <= end):
                    hit = True
                introduced = None
        if introduced is not None and introduced <= version:  # open-ended: no fix yet
            hit = True
    return hit, fixes


def assess(components: list[dict[str, Any]], feed: dict[str, Any],
           vex: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Every advisory of the feed that is about a component: a known vulnerability with its VEX status, or
    `fixed` by the version in use."""
    found = []
    for record in feed["vulns"]:
        for comp in components:
            version = _version(str(comp["version"]), comp["name"])
            for affected in record["affected"]:
                if not _about(affected, comp):
                    continue
                hit, fixes = _in_range(version, affected.get("ranges", []), record["id"])
                explicit = str(comp["version"]) in [str(v) for v in affected.get("versions", [])]
                entry = {"id": record["id"], "aliases": record.get("aliases", []),
                         "summary": record.get("summary") or record.get("details", "")[:160],
                         "component": comp["name"], "version": str(comp["version"]), "fixed_in": fixes,
                         "references": [r.get("url") for r in record.get("references", []) if r.get("url")]}
                if hit or explicit:
                    stmt = vex.get((record["id"], comp["name"])) or vex.get((record["id"], "*"))
                    if stmt is None:
                        entry.update(status="affected", source="no VEX statement: affected until the "
                                                               "manufacturer says otherwise")
                    else:
                        entry.update(status=stmt["status"], source=stmt["source"])
                        for key in ("justification", "detail", "action"):
                            if stmt.get(key):
                                entry[key] = stmt[key]
                elif fixes and any(version >= _version(f, record["id"]) for f in fixes):
                    entry.update(status="fixed", source=f"the version in use ({comp['version']}) contains the fix")
                else:
                    continue  # about the component, but another line of it
                found.append(entry)
                break
    return found


def snapshot_age_days(feed: dict[str, Any], today: dt.date | None = None) -> int | None:
    """How old the feed's snapshot is, from its `snapshot.date`; None when it gives none."""
    date = (feed.get("snapshot") or {}).get("date")
    try:
        return ((today or dt.date.today()) - dt.date.fromisoformat(str(date))).days if date else None
    except ValueError:
        return None


def evaluate(firmware_dir: Path, feed_path: Path | None = None,
             vex_paths: Iterable[Path] = ()) -> dict[str, Any]:
    """The whole assessment for a firmware folder: its platform, the feed (its own advisories.osv.json
    unless `feed_path`), its vex.json and then `vex_paths`; `open` lists the vulnerabilities left affected."""
    firmware_dir = Path(firmware_dir)
    platform_path = firmware_dir / PLATFORM_FILE
    if not platform_path.is_file():
        raise VulnerabilityDataError(f"{platform_path}: no platform declaration: the components under the "
                                     "application, with exact versions, are needed to look up advisories")
    feed_path = Path(feed_path) if feed_path else firmware_dir / FEED_FILE
    if not feed_path.is_file():
        raise VulnerabilityDataError(f"{feed_path}: no advisory feed (OSV records): give one with --advisories")
    own_vex = firmware_dir / VEX_FILE
    vex_files = ([own_vex] if own_vex.is_file() else []) + [Path(p) for p in vex_paths]
    components = load_platform(platform_path)
    feed = load_feed(feed_path)
    found = assess(components, feed, load_vex(vex_files))
    return {"components": components, "feed": {"path": _shown(feed_path), "snapshot": feed["snapshot"],
                                               "records": len(feed["vulns"]),
                                               "age_days": snapshot_age_days(feed)},
            "vex_files": [_shown(p) for p in vex_files], "vulnerabilities": found,
            "open": [v for v in found if v["status"] == "affected"]}


# For the report ---------------------------------------------------------------------------------
CHECK_ID = "no-known-exploitable-vulnerabilities"


def for_report(checks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The known-vulnerability check's findings as the report shows them (None when it did not run)."""
    check = next((c for c in checks if c["id"] == CHECK_ID), None)
    ev = (check or {}).get("evidence") or {}
    if not check or "vulnerabilities" not in ev:
        return None
    return {"check_status": check["status"], "feed": ev.get("feed"), "vex_files": ev.get("vex_files", []),
            "components": [{"name": c["name"], "version": c["version"], "purl": c.get("purl")}
                           for c in ev.get("components", [])],
            "vulnerabilities": ev["vulnerabilities"], "open": [v["id"] for v in ev.get("open", [])]}


def limitation(known: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's limitation that comes with a snapshot feed: what it holds and how old it is."""
    if not known or not known.get("feed"):
        return None
    feed = known["feed"]
    snap = feed.get("snapshot") or {}
    age = feed.get("age_days")
    return {"kind": "advisory feed", "check": CHECK_ID,
            "detail": f"advisories from {feed.get('path')}, a snapshot dated {snap.get('date') or 'nowhere'}"
                      + (f" ({age} days old)" if age is not None else "")
                      + f": advisories published since are not seen. Its scope: {snap.get('scope') or 'not stated'}",
            "provisions": {"eu_cra": ["I(2)(a)"], "en_18031_1": ["GEC-1"]}}


# The optional online path ------------------------------------------------------------------------
OSV_QUERY_URL = "https://api.osv.dev/v1/query"


def query_osv(component: dict[str, Any], timeout: float = 20) -> list[dict[str, Any]]:
    """OSV records for one component and version from api.osv.dev (needs internet; never used by the tests).
    OSV indexes C libraries such as mbedTLS mostly by git commit, so a query by purl and version can miss
    records a refreshed snapshot holds: use it to find candidates, and keep the snapshot as the evidence."""
    import urllib.request
    purl = _purl_base(component.get("purl"))
    body = {"version": str(component["version"]),
            "package": {"purl": purl} if purl else {"name": component["name"]}}
    req = urllib.request.Request(OSV_QUERY_URL, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (a fixed https URL)
        return json.loads(resp.read().decode()).get("vulns", [])
