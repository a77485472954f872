"""The conformance report: JSON for machines, Markdown and a self-contained HTML page for people.

`build_report` takes the checks' results; `coverage` says, for every
provision of every baseline, whether an automated check covers it (and how
those checks ended in this run), whether only documentation does
(`doc_coverage.py`), or nothing. A skipped check never counts as a pass: a
provision whose checks all skipped is "automated, not verified on this board".
EN 18031-1's coverage also says where the restrictions of its Official Journal
listing matter (`en_18031.py`); when the known-vulnerability check ran, the
report lists its findings with their VEX status (`release/vulnerabilities.py`).
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any, Mapping

from sbd_harness.release import vulnerabilities
from sbd_harness.reports import en_18031
from sbd_harness.reports.claims import normalise
from sbd_harness.reports.doc_coverage import DOC_COVERAGE, DOC_LIMITATIONS, DocRefs
from sbd_harness.reports.features import not_applicable
from sbd_harness.reports.provenance import inconclusive_ids, limitations, provenance
from sbd_harness.reports.provisions import BASELINES, CATALOGUE, EN_STATUS, en_category

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
         "uk_psti": "PSTI", "owasp_isvs": "ISVS", "en_18031_1": "EN 18031-1"}


def summarise(checks: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES}


# What each tier of `sbd verify` runs, for the reports.
TIERS = {
    "default": "default: each check's shortest form that can still fail (sbd verify --soak: the long forms)",
    "soak": "soak: each check's long form (many rounds, every fuzz case and many random ones, the long series)",
}


def build_report(board: dict[str, Any], firmware: dict[str, Any], checks: list[dict[str, Any]],
                 notes: list[str] | None = None, docs: DocRefs | None = None,
                 sbom: dict[str, Any] | None = None, tier: str = "default",
                 features: dict[str, Any] | None = None, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """docs: the documentation map (default `doc_coverage.DOC_COVERAGE`); sbom: the SBOM written beside
    the report (`sbom.write_sbom`'s summary, with `path` relative to the report), if any; tier: which
    tier of the checks ran ("default" or "soak", `TIERS`); features: the firmware's feature declaration
    (`features.load`), which decides what does not apply; context: `provenance.run_context`'s facts about
    the run (declared addresses, broker flaws, the files the report rests on)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}: {', '.join(TIERS)}")
    context = dict(context or {})
    if docs is None:  # the product's own pages (run_context), else the project's
        docs = context.get("doc_coverage", DOC_COVERAGE)
    limits = context.get("doc_limitations", DOC_LIMITATIONS)
    docs = _merge_docs(docs, _sbom_docs(sbom))
    prov = provenance(board, firmware, checks, sbom, context)
    report = {
        "tier": tier,
        "board": board,
        "product": context.get("product"),
        "firmware": firmware,
        "provenance": prov,
        "checks": checks,
        "summary": summarise(checks),
        "coverage": coverage(checks, docs, features, inconclusive_ids(checks, context), limits),
        "limitations": limitations(checks, context, features, prov["environment"]),
        "notes": notes or [],
    }
    known = vulnerabilities.for_report(checks)
    if known is not None:
        report["known_vulnerabilities"] = known
        extra = vulnerabilities.limitation(known)
        if extra:
            report["limitations"].append(extra)
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


# What a provision's row says, from its device checks' statuses and strengths, its applicability and the
# documentation. Only "verified" says the provision is shown met, and only full claims give it.
VERDICTS = {
    "verified": "verified",
    "partly_verified": "partly verified",
    "supporting_only": "supporting evidence only",
    "failed": "FAILED",
    "error": "ERROR",
    "inconclusive": "inconclusive (a limitation of this run)",
    "not_verified_on_this_board": "not verified on this board",
    "not_applicable": "not applicable (feature absent)",
    "documentation_only": "documentation only",
    "documented_limitation": "documented limitation: not met",
    "not_covered": "not covered",
}


def provision_verdict(claims: list[dict[str, Any]], applicable: bool, inconclusive: bool, has_docs: bool,
                      has_limitation_docs: bool) -> str:
    """claims: the device checks citing the provision, each with `status` and `strength`."""
    statuses = [c["status"] for c in claims]
    if "fail" in statuses:
        return "failed"
    if "error" in statuses:
        return "error"
    if not applicable:
        return "not_applicable"
    if claims:
        passed = [c for c in claims if c["status"] == "pass"]
        if not passed:
            return "not_verified_on_this_board"
        if inconclusive:
            return "inconclusive"
        if len(passed) == len(claims) and any(c["strength"] == "full" for c in passed):
            return "verified"
        if any(c["strength"] in ("full", "partial") for c in passed):
            return "partly_verified"
        return "supporting_only"
    if has_limitation_docs:
        return "documented_limitation"
    return "documentation_only" if has_docs else "not_covered"


def _claims_of(check: dict[str, Any], baseline: str) -> list[dict[str, Any]]:
    return normalise({baseline: check.get("provisions", {}).get(baseline, [])})[baseline]


def coverage(checks: list[dict[str, Any]], docs: DocRefs | None = None, features: dict[str, Any] | None = None,
             inconclusive: dict[str, list[str]] | None = None,
             limits: DocRefs | None = None) -> dict[str, dict[str, Any]]:
    """Per baseline, every provision in the catalogue: its device checks with their strengths and statuses,
    the lab broker's checks apart (an associated service: they never raise the device's coverage), the
    documentation, whether it applies (the feature declaration) and the verdict."""
    docs = DOC_COVERAGE if docs is None else docs
    limits = DOC_LIMITATIONS if limits is None else limits
    absent = not_applicable(features)
    for pid, why in en_18031.SCOPE_NOT_APPLICABLE.items():  # not a feature of the product: the standard's scope
        absent.setdefault(en_18031.BASELINE, {}).setdefault(pid, {"feature": "network equipment (scope)",
                                                                   "detail": why})
    inconclusive = inconclusive or {}
    out: dict[str, dict[str, Any]] = {}
    for baseline, known in CATALOGUE.items():
        rows = []
        for pid in known:  # in the catalogue's order: EN 303 645 by clause, CRA Part I, Part II, Art 13
            cited, service = [], []
            for c in checks:
                for claim in _claims_of(c, baseline):
                    if claim["id"] != pid:
                        continue
                    entry = {"id": c["id"], "status": c["status"], "strength": claim["strength"]}
                    if claim.get("reason"):
                        entry["reason"] = claim["reason"]
                    (service if c.get("subject") == "associated_service" else cited).append(entry)
            pages = [{"page": page, "what": what} for page, what in docs.get(baseline, {}).get(pid, [])]
            limited = [{"page": page, "what": what} for page, what in limits.get(baseline, {}).get(pid, [])]
            na = absent.get(baseline, {}).get(pid)
            kind = "automated" if cited else "documentation" if pages else "none"
            verdict = provision_verdict(cited, na is None, pid in inconclusive.get(baseline, []), bool(pages),
                                        bool(limited))
            row: dict[str, Any] = {"id": pid, "title": known[pid], "coverage": kind,
                                   "result": provision_result([c["status"] for c in cited]),
                                   "verdict": verdict, "verdict_text": VERDICTS[verdict],
                                   "applicable": na is None, "checks": cited, "associated_service": service,
                                   "docs": pages, "documented_limitations": limited}
            if na is not None:
                row["not_applicable"] = {"feature": na["feature"], "justification": na["detail"]}
            if baseline == "etsi_en_303_645":
                row["status"] = EN_STATUS.get(pid)
                row["category"] = en_category(pid)
                # ETSI TS 103 701: one test group per provision, same ID; <ID>-1 the conceptual test case
                # (the declared design), <ID>-2 the functional test case (the device itself).
                row["ts_103_701"] = {"test_group": pid, "conceptual": f"{pid}-1", "functional": f"{pid}-2"}
            rows.append(row)
        by = {k: [r["id"] for r in rows if r["coverage"] == k] for k in COVERAGE_KINDS}
        n = {v: sum(1 for r in rows if r["verdict"] == v) for v in VERDICTS}
        counts = {"provisions": len(rows), "automated": len(by["automated"]),
                  "verified": n["verified"], "partly_verified": n["partly_verified"],
                  "supporting_only": n["supporting_only"], "inconclusive": n["inconclusive"],
                  "not_verified_on_this_board": n["not_verified_on_this_board"],
                  "failed": n["failed"] + n["error"], "not_applicable": n["not_applicable"],
                  "documentation_only": len(by["documentation"]),
                  "documented_limitation": n["documented_limitation"], "not_covered": len(by["none"]),
                  "associated_service": sum(1 for r in rows if r["associated_service"])}
        if baseline == "etsi_en_303_645":
            counts["by_category"] = {cat: {v: sum(1 for r in rows if r["category"] == cat and r["verdict"] == v)
                                           for v in VERDICTS} | {"provisions": sum(1 for r in rows if r["category"] == cat)}
                                     for cat in ("mandatory", "recommended", "unconfirmed")}
        out[baseline] = {
            "title": BASELINES[baseline],
            "automated": by["automated"],
            "documentation_only": by["documentation"],
            "not_covered": by["none"],
            "counts": counts,
            "provisions": rows,
        }
        if baseline == en_18031.BASELINE:
            out[baseline]["ids"] = en_18031.ID_SOURCE
            out[baseline]["oj_listing"] = en_18031.OJ_LISTING
            out[baseline]["oj_restrictions"] = en_18031.restrictions(features)
    return out


def restriction_lines(cov: dict[str, Any]) -> list[str]:
    """EN 18031-1's OJ listing and its restrictions, one line each, for the Markdown and HTML pages."""
    if "oj_restrictions" not in cov:
        return []
    oj = cov["oj_listing"]

    def bare(url: str) -> str:  # the page links nothing (self-contained): an address shown as text
        return re.sub(r"^https?://", "", url)
    lines = [f"Listed in the Official Journal by {oj['act']} ({oj['oj']}, ELI {bare(oj['eli'])}); confirmed: "
             f"{oj['confirmed']}. {cov['ids']}."]
    for r in cov["oj_restrictions"]:
        reqs = ", ".join(r["requirements"]) or "all requirements"
        lines.append(f"Restriction on {r['topic']} ({reqs}; clauses {r['clauses']}): {r['restriction']}. "
                     f"For this product: {r['for_this_product']}. Sources: {', '.join(bare(u) for u in r['sources'])}")
    return lines


def write_json(report: dict[str, Any], path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _claim_text(claim: Any) -> str:
    if not isinstance(claim, dict):
        return str(claim)
    return claim["id"] if claim.get("strength") == "full" else f"{claim['id']} ({claim.get('strength')})"


def _provisions_text(provisions: Mapping[str, list[Any]]) -> str:
    return "; ".join(f"{SHORT[k]} {', '.join(_claim_text(c) for c in v)}" for k, v in provisions.items() if v)


def _counts_text(n: dict[str, Any]) -> str:
    return (f"{n['provisions']} provisions: {n['verified']} verified, {n['partly_verified']} partly verified, "
            f"{n['supporting_only']} with supporting evidence only, {n['inconclusive']} inconclusive, "
            f"{n['failed']} failed, {n['not_verified_on_this_board']} not verified on this board, "
            f"{n['not_applicable']} not applicable (feature absent), {n['documentation_only']} documentation only, "
            f"{n['documented_limitation']} documented limitations (not met), "
            f"{n['not_covered'] - n['documented_limitation']} not covered at all")


def _category_text(n: dict[str, Any]) -> list[str]:
    out = []
    for cat, c in n.get("by_category", {}).items():
        if c["provisions"]:
            out.append(f"{cat.capitalize()}: {c['provisions']} provisions, {c['verified']} verified, "
                       f"{c['partly_verified']} partly verified, {c['failed'] + c['error']} failed, "
                       f"{c['not_applicable']} not applicable, {c['inconclusive']} inconclusive.")
    return out


def _check_cell(c: dict[str, Any]) -> str:
    return f"`{c['id']}` {c['status']}" + ("" if c["strength"] == "full" else f" ({c['strength']})")


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
    return row["verdict_text"]


def product_text(product: dict[str, Any]) -> str:
    """The product under test in one line: name, model, version, supplier, documents."""
    parts = [f"{product.get('name') or product.get('model')} (model {product.get('model')}, "
             f"version {product.get('version')})"]
    if product.get("supplier"):
        parts.append(f"supplier {product['supplier']}")
    if product.get("docs_url"):
        parts.append(f"documents {product['docs_url']}")
    if product.get("reference"):
        parts.append("this project's reference build")
    return ", ".join(parts)


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
    if report.get("product"):
        lines.insert(4, f"- Product: {_md(product_text(report['product']))}")
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
        about = "associated service (the lab broker): " if c.get("subject") == "associated_service" else ""
        lines.append(f"| `{_md(c['id'])}` | {icon[c['status']]} | {_md(about + c['title'])} | "
                     f"{_md(_provisions_text(c['provisions']))} | {_md(c.get('message') or '')} |")
    problems = [c for c in report["checks"] if c["status"] != "pass"]
    if problems:
        lines += ["", "## Why not passed", ""]
        for c in problems:
            lines.append(f"- `{c['id']}` ({c['status']}): {_md(c.get('message') or '')}".rstrip())
    lines += _md_provenance(report)
    lines += ["", "## Coverage by baseline", "",
              "Verified: every device check citing the provision passed and at least one tests it fully. Partly "
              "verified: the checks that passed test part of it (each says what is left out). A skipped check "
              "verifies nothing. Not applicable: the firmware declares the feature the provision depends on absent "
              "(firmware/features.json). Documentation only: a page addresses it, for a person to judge; a "
              "documented limitation is a page saying it is not met. The lab broker's checks are evidence about "
              "an associated service: listed apart, never counted.", ""]
    for baseline, cov in report["coverage"].items():
        n = cov["counts"]
        lines += [f"### {_md(cov['title'])}", "", _counts_text(n) + ".", ""] + _category_text(n)
        etsi = baseline == "etsi_en_303_645"
        head = "| Provision | Title |" + (" Status |" if etsi else "") + " Result | Device checks | Associated service | Documentation |"
        lines += ["", head + (" TS 103 701 |" if etsi else ""), "|---" * (8 if etsi else 6) + "|"]
        for r in cov["provisions"]:
            checks = ", ".join(_md(_check_cell(c)) for c in r["checks"])
            service = ", ".join(_md(_check_cell(c)) for c in r["associated_service"])
            docs = "; ".join(f"{_md(d['page'])}: {_md(d['what'])}" for d in r["docs"] + r["documented_limitations"])
            if r.get("not_applicable"):
                docs = f"not applicable: {_md(r['not_applicable']['justification'])}" + (f"; {docs}" if docs else "")
            row = (f"| {_md(r['id'])} | {_md(r['title'])} |" + (f" {_md(r.get('status') or 'unconfirmed')} |" if etsi else "")
                   + f" {_md_result(r)} | {checks} | {service} | {docs} |")
            if etsi:
                row += f" {_md(_ts_text(r))} |"
            lines.append(row)
        lines.append("")
        lines += [f"- {_md(t)}" for t in restriction_lines(cov)] + ([""] if restriction_lines(cov) else [])
    lines += _md_vulnerabilities(report)
    lines += _md_limitations(report)
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {_md(n)}" for n in report["notes"]]
    return "\n".join(lines).rstrip("\n") + "\n"


def _md_provenance(report: dict[str, Any]) -> list[str]:
    p = report.get("provenance")
    if not p:
        return []
    env, obj = p["environment"], p["test_object"]
    lines = ["", "## Provenance", "",
             f"- Date: {_md(p['date'])}; harness {_md(p['harness_version'])}, commit `{_md(p['harness_commit'])}`",
             f"- Catalogue SHA-256: `{_md(p['catalogue_sha256'])}`",
             "- Baselines: " + "; ".join(f"{_md(b['title'])} ({_md(b['edition'])})" for b in p["baselines"].values()),
             f"- Environment: {_md(env['board'])} board, {_md(env['network'] or 'network unknown')}, broker flaws: "
             f"{_md(', '.join(env['broker_flaws']) or 'none')}",
             f"- Test object: device `{_md(obj.get('device_id'))}` (from {_md(obj.get('device_id_source'))}), model "
             f"`{_md(obj.get('model'))}`, firmware {_md(obj.get('firmware_version'))}; firmware hashes: "
             f"{_md(obj['firmware_hashes']['source'])}",
             "- Versions: " + ", ".join(f"{k} {_md(v)}" for k, v in obj["versions"].items())]
    return lines


VEX_TEXT = {"affected": "AFFECTED (open)", "not_affected": "not affected", "fixed": "fixed"}


def _vuln_reason(v: dict[str, Any]) -> str:
    why = v.get("justification", "")
    if v.get("detail"):
        why = f"{why}: {v['detail']}" if why else v["detail"]
    return why or v.get("source", "")


def _md_vulnerabilities(report: dict[str, Any]) -> list[str]:
    known = report.get("known_vulnerabilities")
    if not known:
        return []
    comps = ", ".join(f"{c['name']} {c['version']}" for c in known["components"])
    lines = ["## Known vulnerabilities", "",
             f"Components: {_md(comps)}. Feed: {_md(known['feed']['path'])} ({known['feed']['records']} records). "
             f"VEX: {_md(', '.join(known['vex_files']) or 'none')}. Open: {_md(', '.join(known['open']) or 'none')}.",
             "", "| Vulnerability | Component | Status | Why | Fixed in |", "|---|---|---|---|---|"]
    for v in known["vulnerabilities"]:
        lines.append(f"| {_md(v['id'])} | {_md(v['component'])} {_md(v['version'])} | {_md(VEX_TEXT[v['status']])} | "
                     f"{_md(_vuln_reason(v))} | {_md(', '.join(v['fixed_in']))} |")
    return lines + [""]


def _md_limitations(report: dict[str, Any]) -> list[str]:
    lim = report.get("limitations")
    if not lim:
        return []
    lines = ["## Limitations of this run", ""]
    for item in lim:
        prov = _provisions_text(item.get("provisions") or {})
        lines.append(f"- {_md(item['kind'])}{' `' + _md(item['check']) + '`' if item.get('check') else ''}: "
                     f"{_md(item['detail'])}" + (f" (provisions: {_md(prov)})" if prov else ""))
    return lines + [""]


def _ts_text(row: dict[str, Any]) -> str:
    ts = row["ts_103_701"]
    if row["coverage"] == "automated":
        return f"group {ts['test_group']}: functional test case {ts['functional']}"
    if row["coverage"] == "documentation":
        return f"group {ts['test_group']}: input to conceptual test case {ts['conceptual']}"
    return f"group {ts['test_group']}"


# HTML --------------------------------------------------------------------------------------
_CSS = """
body{font:16px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1240px;
 padding:1em;color:#111;background:#fff;box-sizing:border-box;overflow-wrap:anywhere}
td,th{overflow-wrap:anywhere}.badge{white-space:normal}
h1{font-size:2em;margin:.2em 0}h2{font-size:1.5em;margin-top:1.6em;border-bottom:3px solid #ddd}
h3{font-size:1.25em;margin-top:1.4em}
.verdict{font-size:2.2em;font-weight:800;padding:.3em .6em;border-radius:.3em;color:#fff;display:inline-block}
.tiles{display:flex;gap:1em;flex-wrap:wrap;margin:1em 0}
.tile{min-width:7em;padding:.5em 1em;border-radius:.4em;color:#fff;font-weight:700;text-align:center}
.tile b{display:block;font-size:2.4em;line-height:1.1}
.pass{background:#1a7f37}.fail{background:#cf222e}.skip{background:#b35900}.error{background:#8250df}
.partial{background:#4d7f1a}.documentation{background:#0969da}.none{background:#6e7781}
.badge{display:inline-block;padding:.1em .5em;border-radius:.3em;color:#fff;font-weight:700}
table{border-collapse:collapse;width:100%;margin:.6em 0;table-layout:fixed}
th,td{border:1px solid #d0d7de;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f4f6}tr.row-fail td,tr.row-error td{background:#fff0f0}tr.row-skip td{background:#fff8e6}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.8em;background:#f6f8fa;padding:.5em;margin:.3em 0}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2em 1em}dt{font-weight:700}
dd{margin:0;overflow-wrap:anywhere}
.muted{color:#57606a}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _badge(kind: str, label: str | None = None) -> str:
    return f'<span class="badge {_h(kind)}">{_h(label or kind.upper())}</span>'


_VERDICT_CLASS = {"verified": "pass", "partly_verified": "partial", "supporting_only": "partial", "failed": "fail",
                  "error": "error", "inconclusive": "skip", "not_verified_on_this_board": "skip",
                  "not_applicable": "none", "documentation_only": "documentation",
                  "documented_limitation": "fail", "not_covered": "none"}


def _coverage_badge(row: dict[str, Any]) -> str:
    return _badge(_VERDICT_CLASS[row["verdict"]], row["verdict_text"].upper())


def _html_check(c: dict[str, Any]) -> str:
    strength = "" if c["strength"] == "full" else f' <span class="muted">{_h(c["strength"])}</span>'
    reason = f'<div class="muted">{_h(c["reason"])}</div>' if c.get("reason") else ""
    return f"<code>{_h(c['id'])}</code> {_badge(c['status'])}{strength}{reason}"


def _html_provenance(report: dict[str, Any]) -> list[str]:
    p = report.get("provenance")
    if not p:
        return []
    env, obj = p["environment"], p["test_object"]
    rows = [("Date", p["date"]), ("Harness", f"{p['harness_version']}, commit {p['harness_commit']}"),
            ("Catalogue SHA-256", p["catalogue_sha256"]),
            ("Baselines", "; ".join(f"{b['title']} ({b['edition']})" for b in p["baselines"].values())),
            ("Environment", f"{env['board']} board, {env['network'] or 'network unknown'}, broker flaws: "
                            f"{', '.join(env['broker_flaws']) or 'none'}"),
            ("Test object", f"device {obj.get('device_id')} (from {obj.get('device_id_source')}), model "
                            f"{obj.get('model')}, firmware {obj.get('firmware_version')}; firmware hashes: "
                            f"{obj['firmware_hashes']['source']}"),
            ("Versions", ", ".join(f"{k} {v}" for k, v in obj["versions"].items()))]
    return ["<h2>Provenance</h2><dl>"] + [f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in rows] + ["</dl>"]


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
    if report.get("product"):
        out.append(f"<dt>Product</dt><dd>{_h(product_text(report['product']))}</dd>")
    out.append(f"<dt>Firmware</dt><dd>version <code>{_h(fw.get('version'))}</code>, bundle SHA-256 "
               f"<code>{_h(fw.get('sha256'))}</code></dd>")
    out.append(f"<dt>Tier</dt><dd>{_h(tier_text(report))}</dd>")
    if report.get("sbom"):
        sb = report["sbom"]
        link = (f'<a href="{_h(sb["path"])}">{_h(sb["path"])}</a>' if ":" not in str(sb["path"])
                else f"<code>{_h(sb['path'])}</code>")  # a relative file name, never a URL scheme
        runtime = (", ".join(f"{k} {v}" for k, v in sorted(sb["platform"].items())) if sb.get("platform")
                   else f"MicroPython {sb.get('micropython')} or newer")
        out.append(f'<dt>SBOM</dt><dd>{link} ({_h(sb.get("format"))}, '
                   f'{_h(sb.get("files"))} files, {_h(runtime)})</dd>')
    out.append("</dl>")
    cols = (("verified", "pass", "verified"), ("partly_verified", "partial", "partly verified"),
            ("failed", "fail", "failed"), ("inconclusive", "skip", "inconclusive"),
            ("not_verified_on_this_board", "skip", "not verified here"),
            ("not_applicable", "none", "not applicable"),
            ("documentation_only", "documentation", "documentation only"), ("not_covered", "none", "not covered"))
    out.append('<table><colgroup><col style="width:22%"></colgroup><thead><tr><th>Coverage</th>'
               + "".join(f"<th>{_badge(k, label)}</th>" for _, k, label in cols)
               + "<th>provisions</th></tr></thead><tbody>")
    for b, c in report["coverage"].items():
        out.append(f"<tr><td>{_h(c['title'])}</td>" + "".join(f"<td><b>{c['counts'][n]}</b></td>" for n, _, _ in cols)
                   + f"<td>{c['counts']['provisions']}</td></tr>")
    out.append("</tbody></table>")
    if report.get("notes"):
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_h(n)}</li>" for n in report["notes"]) + "</ul>")

    out += _html_provenance(report)
    out.append('<h2>Checks</h2><table><colgroup><col style="width:9em"><col style="width:28%"><col style="width:24%">'
               "<col></colgroup><thead><tr><th>Status</th><th>Check</th><th>Provisions</th>"
               "<th>Reason and evidence</th></tr></thead><tbody>")
    for c in report["checks"]:
        prov = "<br>".join(f"{_h(SHORT[k])} {_h(', '.join(_claim_text(i) for i in ids))}"
                           for k, ids in c["provisions"].items() if ids)
        if c.get("subject") == "associated_service":
            prov = "<i>associated service (the lab broker), not counted for the device</i><br>" + prov
        detail = f"<div>{_h(c.get('message'))}</div>" if c.get("message") else ""
        if c.get("evidence"):
            detail += (f"<details><summary>evidence</summary><pre>"
                       f"{_h(json.dumps(c['evidence'], indent=2, default=str))}</pre></details>")
        out.append(f'<tr class="row-{_h(c["status"])}"><td>{_badge(c["status"])}</td>'
                   f"<td><code>{_h(c['id'])}</code><br>{_h(c['title'])}"
                   f"<div class=\"muted\">{_h(c.get('duration_s', ''))} s</div></td>"
                   f"<td>{prov}</td><td>{detail}</td></tr>")
    out.append("</tbody></table>")

    out.append("<h2>Coverage by baseline</h2><p>Verified only where every device check citing the provision "
               "passed and one tests it fully; the strength of each claim (partial, supporting) is shown beside it. "
               "Not applicable: the firmware declares the feature absent. The lab broker's checks are evidence "
               "about an associated service, listed apart and never counted.</p>")
    for baseline, cov in report["coverage"].items():
        n = cov["counts"]
        etsi = baseline == "etsi_en_303_645"
        out.append(f"<h3>{_h(cov['title'])}</h3><p>{_h(_counts_text(n))}.</p>"
                   + "".join(f"<p>{_h(t)}</p>" for t in _category_text(n)))
        out.append('<table><colgroup><col style="width:22%">' + ('<col style="width:7%">' if etsi else "")
                   + '<col style="width:14%"><col><col><col style="width:26%">' + "</colgroup><thead><tr><th>Provision</th>"
                   + ("<th>Status</th>" if etsi else "") + "<th>Result</th><th>Device checks</th>"
                   "<th>Associated service</th><th>Documentation</th></tr></thead><tbody>")
        for r in cov["provisions"]:
            checks = "<br>".join(_html_check(c) for c in r["checks"])
            service = "<br>".join(_html_check(c) for c in r["associated_service"])
            docs = "<br>".join(f"<code>{_h(d['page'])}</code>: {_h(d['what'])}" for d in r["docs"])
            docs += "".join(f"<br>limitation: <code>{_h(d['page'])}</code>: {_h(d['what'])}"
                            for d in r["documented_limitations"])
            if r.get("not_applicable"):
                docs = f"<i>feature absent:</i> {_h(r['not_applicable']['justification'])}<br>" + docs
            ts = f'<div class="muted">{_h(_ts_text(r))}</div>' if etsi else ""
            out.append(f"<tr><td><b>{_h(r['id'])}</b> {_h(r['title'])}{ts}</td>"
                       + (f"<td>{_h(r.get('status') or 'unconfirmed')}</td>" if etsi else "")
                       + f"<td>{_coverage_badge(r)}</td><td>{checks}</td><td>{service}</td><td>{docs}</td></tr>")
        out.append("</tbody></table>")
        if restriction_lines(cov):
            out.append("<ul>" + "".join(f"<li>{_h(t)}</li>" for t in restriction_lines(cov)) + "</ul>")
    known = report.get("known_vulnerabilities")
    if known:
        comps = ", ".join(f"{c['name']} {c['version']}" for c in known["components"])
        out.append(f"<h2>Known vulnerabilities</h2><p>Components: {_h(comps)}. Feed: <code>{_h(known['feed']['path'])}"
                   f"</code> ({_h(known['feed']['records'])} records). VEX: {_h(', '.join(known['vex_files']) or 'none')}. "
                   f"Open: {_h(', '.join(known['open']) or 'none')}.</p>")
        out.append('<table><colgroup><col style="width:16%"><col style="width:14%"><col style="width:12%"><col>'
                   '<col style="width:10%"></colgroup><thead><tr><th>Vulnerability</th><th>Component</th>'
                   "<th>Status</th><th>Why</th><th>Fixed in</th></tr></thead><tbody>")
        for v in known["vulnerabilities"]:
            cls = {"affected": "fail", "not_affected": "pass", "fixed": "pass"}[v["status"]]
            out.append(f"<tr><td><code>{_h(v['id'])}</code><div class=\"muted\">{_h(v['summary'])}</div></td>"
                       f"<td>{_h(v['component'])} {_h(v['version'])}</td><td>{_badge(cls, VEX_TEXT[v['status']])}</td>"
                       f"<td>{_h(_vuln_reason(v))}</td><td>{_h(', '.join(v['fixed_in']))}</td></tr>")
        out.append("</tbody></table>")
    if report.get("limitations"):
        out.append("<h2>Limitations of this run</h2><ul>")
        for item in report["limitations"]:
            prov = _provisions_text(item.get("provisions") or {})
            out.append(f"<li><b>{_h(item['kind'])}</b>{' <code>' + _h(item['check']) + '</code>' if item.get('check') else ''}: "
                       f"{_h(item['detail'])}" + (f" <span class=\"muted\">({_h(prov)})</span>" if prov else "") + "</li>")
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
