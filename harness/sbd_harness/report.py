"""The conformance report: JSON for machines, Markdown for people."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .provisions import BASELINES, CATALOGUE

STATUSES = ("pass", "fail", "skip", "error")


def summarise(checks: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES}


def build_report(board: dict[str, Any], firmware: dict[str, Any], checks: list[dict[str, Any]],
                 notes: list[str] | None = None) -> dict[str, Any]:
    return {
        "board": board,
        "firmware": firmware,
        "checks": checks,
        "summary": summarise(checks),
        "coverage": coverage(checks),
        "notes": notes or [],
    }


def coverage(checks: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Per baseline: provisions an automated check covers, and those it does not."""
    out: dict[str, dict[str, list[str]]] = {}
    for baseline, known in CATALOGUE.items():
        covered = sorted({p for c in checks for p in c["provisions"].get(baseline, [])}, key=_natural)
        out[baseline] = {
            "automated": covered,
            "not_covered": sorted((p for p in known if p not in covered), key=_natural),
        }
    return out


def _natural(text: str) -> list[Any]:
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def write_json(report: dict[str, Any], path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _provisions_text(provisions: dict[str, list[str]]) -> str:
    short = {"etsi_en_303_645": "EN 303 645", "nist_ir_8259a": "NISTIR 8259A", "eu_cra": "CRA",
             "uk_psti": "PSTI", "owasp_isvs": "ISVS"}
    return "; ".join(f"{short[k]} {', '.join(v)}" for k, v in provisions.items() if v)


def to_markdown(report: dict[str, Any]) -> str:
    board, fw, s = report["board"], report["firmware"], report["summary"]
    icon = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}
    lines = [
        f"# Conformance report: {board.get('name')}",
        "",
        f"- Board: {board.get('kind')} `{board.get('name')}`, serial `{board.get('serial')}`, "
        f"address `{board.get('address')}`",
        f"- Firmware: version `{fw.get('version')}`, bundle SHA-256 `{fw.get('sha256')}`",
        f"- Result: {s['pass']} pass, {s['fail']} fail, {s['skip']} skip, {s['error']} error",
        "",
        "| Check | Status | What it shows | Provisions |",
        "|---|---|---|---|",
    ]
    for c in report["checks"]:
        lines.append(f"| `{c['id']}` | {icon[c['status']]} | {c['title']} | {_provisions_text(c['provisions'])} |")
    problems = [c for c in report["checks"] if c["status"] != "pass"]
    if problems:
        lines += ["", "## Why not passed", ""]
        for c in problems:
            lines.append(f"- `{c['id']}` ({c['status']}): {c.get('message') or ''}".rstrip())
    lines += ["", "## Coverage by baseline", ""]
    for baseline, cov in report["coverage"].items():
        lines.append(f"- **{BASELINES[baseline]}**: automated {', '.join(cov['automated']) or 'none'}; "
                     f"{len(cov['not_covered'])} provisions not covered by an automated check")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
