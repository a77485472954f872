"""The conformance report: JSON for machines, Markdown and a self-contained HTML page for people.

`build_report` takes the checks' results; `coverage` says, for every
provision of every baseline, whether an automated check covers it (and how
those checks ended in this run), whether only documentation does
(`doc_coverage.py`), or nothing. A skipped check never counts as a pass: a
provision whose checks all skipped is "automated, not verified on this board".
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any, Mapping

from sbd_harness.reports.doc_coverage import DOC_COVERAGE, DocRefs
from sbd_harness.reports.provisions import BASELINES, CATALOGUE

STATUSES = ("pass", "fail", "skip", "error")

# The result of a provision with automated checks, from the statuses of its checks in this run.
RESULTS = {
    "pass": "verified: every check passed",
    "partial": "partly verified: some checks passed, the others skipped",
    "fail": "failed: a check failed",
    "error": "error: a check could not run to its end",
    "skip": "automated, not verified on this board: every check skipped",
}
COVERAGE_KINDS = ("automated", "documentation", "none")
SHORT = {"etsi_en_303_645": "EN 303 645", "nist_ir_8259a": "NISTIR 8259A", "eu_cra": "CRA",
         "uk_psti": "PSTI", "owasp_isvs": "ISVS"}


def summarise(checks: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES}


# What each tier of `sbd verify` runs, for the reports.
TIERS = {
    "default": "default: each check's shortest form that can still fail (sbd verify --soak: the long forms)",
    "soak": "soak: each check's long form (many rounds, every fuzz case and many random ones, the long series)",
}


def build_report(board: dict[str, Any], firmware: dict[str, Any], checks: list[dict[str, Any]],
                 notes: list[str] | None = None, docs: DocRefs | None = None,
                 sbom: dict[str, Any] | None = None, tier: str = "default") -> dict[str, Any]:
    """docs: the documentation map (default `doc_coverage.DOC_COVERAGE`); sbom: the SBOM written beside
    the report (`sbom.write_sbom`'s summary, with `path` relative to the report), if any; tier: which
    tier of the checks ran ("default" or "soak", `TIERS`)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: {', '.join(TIERS)}")
    docs = _merge_docs(DOC_COVERAGE if docs is None else docs, _sbom_docs(sbom))
    report = {
        "tier": tier,
        "board": board,
        "firmware": firmware,
        "checks": checks,
        "summary": summarise(checks),
        "coverage": coverage(checks, docs),
        "notes": notes or [],
    }
    if sbom is not None:
        report["sbom"] = sbom
    return report


def _sbom_docs(sbom: dict[str, Any] | None) -> DocRefs:
    if not sbom:
        return {}
    ref = [(sbom["path"], f"the {sbom.get('format', 'CycloneDX')} SBOM of the firmware bundle, written by this run")]
    return {"eu_cra": {"II(1)": ref}, "owasp_isvs": {"1.2.1": ref}}


def _merge_docs(*maps: DocRefs) -> DocRefs:
    out: DocRefs = {}
    for m in maps:
        for baseline, entries in m.items():
            for pid, refs in entries.items():
                out.setdefault(baseline, {}).setdefault(pid, []).extend(refs)
    return out


def provision_result(statuses: list[str]) -> str | None:
    """One result for a provision from its checks' statuses; None when no check covers it."""
    if not statuses:
        return None
    if "fail" in statuses:
        return "fail"
    if "error" in statuses:
        return "error"
    if all(s == "skip" for s in statuses):
        return "skip"
    if "skip" in statuses:
        return "partial"
    return "pass"


def coverage(checks: list[dict[str, Any]], docs: DocRefs | None = None) -> dict[str, dict[str, Any]]:
    """Per baseline, every provision in the catalogue: automated (which checks, their status), documentation
    only (which pages), or not covered."""
    docs = DOC_COVERAGE if docs is None else docs
    out: dict[str, dict[str, Any]] = {}
    for baseline, known in CATALOGUE.items():
        rows = []
        for pid in known:  # in the catalogue's order: EN 303 645 by clause, CRA Part I, Part II, Art 13
            cited = [{"id": c["id"], "status": c["status"]} for c in checks
                     if pid in c["provisions"].get(baseline, [])]
            pages = [{"page": page, "what": what} for page, what in docs.get(baseline, {}).get(pid, [])]
            kind = "automated" if cited else "documentation" if pages else "none"
            row: dict[str, Any] = {"id": pid, "title": known[pid], "coverage": kind,
                                   "result": provision_result([c["status"] for c in cited]),
                                   "checks": cited, "docs": pages}
            if baseline == "etsi_en_303_645":
                # ETSI TS 103 701: one test group per provision, same ID; <ID>-1 the conceptual test case
                # (the declared design), <ID>-2 the functional test case (the device itself).
                row["ts_103_701"] = {"test_group": pid, "conceptual": f"{pid}-1", "functional": f"{pid}-2"}
            rows.append(row)
        by = {k: [r["id"] for r in rows if r["coverage"] == k] for k in COVERAGE_KINDS}
        out[baseline] = {
            "title": BASELINES[baseline],
            "automated": by["automated"],
            "documentation_only": by["documentation"],
            "not_covered": by["none"],
            "counts": {"provisions": len(rows), "automated": len(by["automated"]),
                       "verified": sum(1 for r in rows if r["result"] == "pass"),
                       "partly_verified": sum(1 for r in rows if r["result"] == "partial"),
                       "not_verified_on_this_board": sum(1 for r in rows if r["result"] == "skip"),
                       "failed": sum(1 for r in rows if r["result"] in ("fail", "error")),
                       "documentation_only": len(by["documentation"]), "not_covered": len(by["none"])},
            "provisions": rows,
        }
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _provisions_text(provisions: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{SHORT[k]} {', '.join(v)}" for k, v in provisions.items() if v)


def tier_text(report: dict[str, Any]) -> str:
    tier = report.get("tier", "default")
    return TIERS.get(tier, tier)


def verdict(report: dict[str, Any]) -> str:
    s = report["summary"]
    if s["fail"] or s["error"]:
        return "FAIL"
    if not report["checks"]:
        return "NO CHECKS RAN"
    return "PASS" if not s["skip"] else "PASS, with checks not run on this board"


# Markdown ----------------------------------------------------------------------------------
def _md(text: Any) -> str:
    """Text safe in a Markdown table cell."""
    return re.sub(r"\s*\n\s*", " ", str(text)).replace("|", "\\|")


def _md_result(row: dict[str, Any]) -> str:
    if row["coverage"] == "automated":
        return {"pass": "verified", "partial": "partly verified", "fail": "FAILED", "error": "ERROR",
                "skip": "not verified on this board"}[row["result"]]
    return "documentation only" if row["coverage"] == "documentation" else "not covered"


def to_markdown(report: dict[str, Any]) -> str:
    board, fw, s = report["board"], report["firmware"], report["summary"]
    icon = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}
    lines = [
        f"# Conformance report: {_md(board.get('name'))}",
        "",
        f"**{verdict(report)}**: {s['pass']} pass, {s['fail']} fail, {s['skip']} skip, {s['error']} error",
        "",
        f"- Board: {_md(board.get('kind'))} `{_md(board.get('name'))}`, serial `{_md(board.get('serial'))}`, "
        f"address `{_md(board.get('address'))}`",
        f"- Firmware: version `{_md(fw.get('version'))}`, bundle SHA-256 `{_md(fw.get('sha256'))}`",
        f"- Tier: {_md(tier_text(report))}",
    ]
    if report.get("sbom"):
        sb = report["sbom"]
        lines.append(f"- SBOM: [{_md(sb['path'])}]({sb['path']}) ({_md(sb.get('format'))}, {sb.get('files')} files, "
                     f"MicroPython {_md(sb.get('micropython'))} or newer)")
    lines += [
        "",
        "| Check | Status | What it shows | Provisions | Reason |",
        "|---|---|---|---|---|",
    ]
    for c in report["checks"]:
        lines.append(f"| `{_md(c['id'])}` | {icon[c['status']]} | {_md(c['title'])} | "
                     f"{_md(_provisions_text(c['provisions']))} | {_md(c.get('message') or '')} |")
    problems = [c for c in report["checks"] if c["status"] != "pass"]
    if problems:
        lines += ["", "## Why not passed", ""]
        for c in problems:
            lines.append(f"- `{c['id']}` ({c['status']}): {_md(c.get('message') or '')}".rstrip())
    lines += ["", "## Coverage by baseline", "",
              "Automated: a check in this run cites the provision (verified only when its checks passed; a "
              "skipped check verifies nothing). Documentation only: a page addresses it, for a person to judge. "
              "Not covered: neither.", ""]
    for baseline, cov in report["coverage"].items():
        n = cov["counts"]
        lines += [f"### {_md(cov['title'])}", "",
                  f"{n['provisions']} provisions: {n['automated']} automated ({n['verified']} verified, "
                  f"{n['partly_verified']} partly, {n['failed']} failed, {n['not_verified_on_this_board']} not verified on this board), "
                  f"{n['documentation_only']} documentation only, {n['not_covered']} not covered.", ""]
        etsi = baseline == "etsi_en_303_645"
        head = "| Provision | Title | Coverage | Checks | Documentation |"
        lines += [head + (" TS 103 701 |" if etsi else ""), "|---" * (6 if etsi else 5) + "|"]
        for r in cov["provisions"]:
            checks = ", ".join(f"`{_md(c['id'])}` {c['status']}" for c in r["checks"])
            docs = "; ".join(f"{_md(d['page'])}: {_md(d['what'])}" for d in r["docs"])
            row = f"| {_md(r['id'])} | {_md(r['title'])} | {_md_result(r)} | {checks} | {docs} |"
            if etsi:
                row += f" {_md(_ts_text(r))} |"
            lines.append(row)
        lines.append("")
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {_md(n)}" for n in report["notes"]]
    return "\n".join(lines).rstrip("\n") + "\n"


def _ts_text(row: dict[str, Any]) -> str:
    ts = row["ts_103_701"]
    if row["coverage"] == "automated":
        return f"group {ts['test_group']}: functional test case {ts['functional']}"
    if row["coverage"] == "documentation":
        return f"group {ts['test_group']}: input to conceptual test case {ts['conceptual']}"
    return f"group {ts['test_group']}"


# HTML --------------------------------------------------------------------------------------
_CSS = """
body{font:18px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
 padding:1.5em;color:#111;background:#fff}
h1{font-size:2em;margin:.2em 0}h2{font-size:1.5em;margin-top:1.6em;border-bottom:3px solid #ddd}
h3{font-size:1.25em;margin-top:1.4em}
.verdict{font-size:2.2em;font-weight:800;padding:.3em .6em;border-radius:.3em;color:#fff;display:inline-block}
.tiles{display:flex;gap:1em;flex-wrap:wrap;margin:1em 0}
.tile{min-width:7em;padding:.5em 1em;border-radius:.4em;color:#fff;font-weight:700;text-align:center}
.tile b{display:block;font-size:2.4em;line-height:1.1}
.pass{background:#1a7f37}.fail{background:#cf222e}.skip{background:#b35900}.error{background:#8250df}
.partial{background:#4d7f1a}.documentation{background:#0969da}.none{background:#6e7781}
.badge{display:inline-block;padding:.1em .5em;border-radius:.3em;color:#fff;font-weight:700;white-space:nowrap}
table{border-collapse:collapse;width:100%;margin:.6em 0}
th,td{border:1px solid #d0d7de;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f4f6}tr.row-fail td,tr.row-error td{background:#fff0f0}tr.row-skip td{background:#fff8e6}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.8em;background:#f6f8fa;padding:.5em;margin:.3em 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dt{font-weight:700}dd{margin:0}
.muted{color:#57606a}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _badge(kind: str, label: str | None = None) -> str:
    return f'<span class="badge {_h(kind)}">{_h(label or kind.upper())}</span>'


def _coverage_badge(row: dict[str, Any]) -> str:
    if row["coverage"] == "automated":
        label = {"pass": "VERIFIED", "partial": "PARTLY VERIFIED", "fail": "FAILED", "error": "ERROR",
                 "skip": "NOT VERIFIED ON THIS BOARD"}[row["result"]]
        return _badge(row["result"], label)
    if row["coverage"] == "documentation":
        return _badge("documentation", "DOCUMENTATION ONLY")
    return _badge("none", "NOT COVERED")


def to_html(report: dict[str, Any]) -> str:
    """One self-contained page: inline CSS, no scripts, no external assets; every value escaped."""
    board, fw, s = report["board"], report["firmware"], report["summary"]
    v = verdict(report)
    vclass = "fail" if v == "FAIL" else "skip" if v != "PASS" else "pass"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>Conformance report: {_h(board.get('name'))}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>Conformance report: {_h(board.get('name'))}</h1>",
           f'<div class="verdict {vclass}">{_h(v)}</div>', '<div class="tiles">']
    for st in STATUSES:
        out.append(f'<div class="tile {st}"><b>{s[st]}</b>{_h(st)}</div>')
    out.append("</div><dl>")
    out.append(f"<dt>Board</dt><dd>{_h(board.get('kind'))} <code>{_h(board.get('name'))}</code>, serial "
               f"<code>{_h(board.get('serial'))}</code>, address <code>{_h(board.get('address'))}</code></dd>")
    out.append(f"<dt>Firmware</dt><dd>version <code>{_h(fw.get('version'))}</code>, bundle SHA-256 "
               f"<code>{_h(fw.get('sha256'))}</code></dd>")
    out.append(f"<dt>Tier</dt><dd>{_h(tier_text(report))}</dd>")
    if report.get("sbom"):
        sb = report["sbom"]
        link = (f'<a href="{_h(sb["path"])}">{_h(sb["path"])}</a>' if ":" not in str(sb["path"])
                else f"<code>{_h(sb['path'])}</code>")  # a relative file name, never a URL scheme
        out.append(f'<dt>SBOM</dt><dd>{link} ({_h(sb.get("format"))}, '
                   f'{_h(sb.get("files"))} files, MicroPython {_h(sb.get("micropython"))} or newer)</dd>')
    out.append("</dl>")
    cols = (("verified", "pass", "verified"), ("partly_verified", "partial", "partly verified"),
            ("failed", "fail", "failed"), ("not_verified_on_this_board", "skip", "automated, not verified here"),
            ("documentation_only", "documentation", "documentation only"), ("not_covered", "none", "not covered"))
    out.append("<table><thead><tr><th>Coverage</th>" + "".join(f"<th>{_badge(k, label)}</th>" for _, k, label in cols)
               + "<th>provisions</th></tr></thead><tbody>")
    for b, c in report["coverage"].items():
        out.append(f"<tr><td>{_h(c['title'])}</td>" + "".join(f"<td><b>{c['counts'][n]}</b></td>" for n, _, _ in cols)
                   + f"<td>{c['counts']['provisions']}</td></tr>")
    out.append("</tbody></table>")
    if report.get("notes"):
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_h(n)}</li>" for n in report["notes"]) + "</ul>")

    out.append("<h2>Checks</h2><table><thead><tr><th>Status</th><th>Check</th><th>Provisions</th>"
               "<th>Reason and evidence</th></tr></thead><tbody>")
    for c in report["checks"]:
        prov = "<br>".join(f"{_h(SHORT[k])} {_h(', '.join(ids))}" for k, ids in c["provisions"].items() if ids)
        detail = f"<div>{_h(c.get('message'))}</div>" if c.get("message") else ""
        if c.get("evidence"):
            detail += (f"<details><summary>evidence</summary><pre>"
                       f"{_h(json.dumps(c['evidence'], indent=2, default=str))}</pre></details>")
        out.append(f'<tr class="row-{_h(c["status"])}"><td>{_badge(c["status"])}</td>'
                   f"<td><code>{_h(c['id'])}</code><br>{_h(c['title'])}"
                   f"<div class=\"muted\">{_h(c.get('duration_s', ''))} s</div></td>"
                   f"<td>{prov}</td><td>{detail}</td></tr>")
    out.append("</tbody></table>")

    out.append("<h2>Coverage by baseline</h2><p>Automated: a check in this run cites the provision; it is verified "
               "only when those checks passed, and a skipped check verifies nothing. Documentation only: a page "
               "addresses it, for a person to judge. Not covered: neither.</p>")
    for baseline, cov in report["coverage"].items():
        n = cov["counts"]
        etsi = baseline == "etsi_en_303_645"
        out.append(f"<h3>{_h(cov['title'])}</h3><p>{n['provisions']} provisions: {n['automated']} automated "
                   f"({n['verified']} verified, {n['partly_verified']} partly, {n['failed']} failed, "
                   f"{n['not_verified_on_this_board']} not "
                   f"verified on this board), {n['documentation_only']} documentation only, "
                   f"{n['not_covered']} not covered.</p>")
        out.append("<table><thead><tr><th>Provision</th><th>Coverage</th><th>Checks</th><th>Documentation</th>"
                   + ("<th>TS 103 701</th>" if etsi else "") + "</tr></thead><tbody>")
        for r in cov["provisions"]:
            checks = "<br>".join(f"<code>{_h(c['id'])}</code> {_badge(c['status'])}" for c in r["checks"])
            docs = "<br>".join(f"<code>{_h(d['page'])}</code>: {_h(d['what'])}" for d in r["docs"])
            out.append(f"<tr><td><b>{_h(r['id'])}</b> {_h(r['title'])}</td><td>{_coverage_badge(r)}</td>"
                       f"<td>{checks}</td><td>{docs}</td>"
                       + (f"<td>{_h(_ts_text(r))}</td>" if etsi else "") + "</tr>")
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
