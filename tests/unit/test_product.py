"""The product under test, not the reference: its identity from the build and its declaration
(release/product.py), the documents its checks read, and what happens when a value a product must
change is left at the reference's. The same product on a board: tests/checks/test_product_verify.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from product_fixture import (DESCRIPTION, DOCS_URL, MODEL, MUD_BASE, NAME, SUPPLIER, SUPPORT_UNTIL, VERSION,
                             build_product)
from sbd_harness.release import mud
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.product import (REFERENCE, REFERENCE_DOCS, REQUIRED, ProductError, docs_folder, from_folder,
                                         leftover, no_docs_reason, policy_problem, support_leftover)
from sbd_harness.release.sbom import SBOMError, write_sbom
from sbd_harness.reports import features as feature_decl
from sbd_harness.reports.provenance import run_context
from sbd_harness.reports.report import build_report, to_html, to_markdown

ROOT = Path(__file__).resolve().parents[2]
PASS = [{"id": c, "title": c, "subject": "device", "status": "pass", "evidence": {}, "duration_s": 0.1,
         "message": "", "provisions": {"etsi_en_303_645": [], "nist_ir_8259a": [], "eu_cra": [], "uk_psti": [],
                                       "owasp_isvs": []}}
        for c in ("vulnerability-disclosure-policy-published", "support-period-declared")]


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    return build_product(tmp_path_factory.mktemp("acme"))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbd_harness", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_the_harness_knows_the_reference_values_the_firmware_declares():
    ref = from_folder(ROOT / "firmware")
    assert ref.reference and {k: ref.value(k) for k in REFERENCE} == REFERENCE
    assert ref.mud_url == json.loads((ROOT / "boards/network-policy.json").read_text())["mud_url"]


def test_a_product_is_named_by_its_build_and_its_declaration(product):
    p = from_folder(product.firmware)
    assert not p.reference
    assert (p.model, p.version, p.docs_url, p.support_until, p.mud_base) == (MODEL, VERSION, DOCS_URL,
                                                                            SUPPORT_UNTIL, MUD_BASE)
    assert (p.name, p.supplier, p.description) == (NAME, SUPPLIER, DESCRIPTION)
    assert all(leftover(p, key) is None for key in REFERENCE)


def test_a_products_documents_are_a_required_input_never_the_references(product, monkeypatch):
    monkeypatch.delenv("SBD_DOCS_DIR", raising=False)
    p, ref = from_folder(product.firmware), from_folder(ROOT / "firmware")
    assert docs_folder(p) is None  # inconclusive: the checks skip
    assert "--docs" in no_docs_reason(p) and MODEL in no_docs_reason(p)
    assert docs_folder(p, product.docs) == product.docs
    assert docs_folder(ref) == REFERENCE_DOCS  # the reference build alone falls back to docs/
    monkeypatch.setenv("SBD_DOCS_DIR", str(product.docs))
    assert docs_folder(p) == product.docs


@pytest.mark.parametrize("key", ["DOCS_URL", "MUD_BASE"])
def test_a_value_left_at_the_references_is_named(tmp_path, key):
    p = from_folder(build_product(tmp_path, leave=(key,)).firmware)
    message = leftover(p, key)
    assert message and key in message and REFERENCE[key] in message and "still the reference's" in message
    assert leftover(from_folder(ROOT / "firmware"), key) is None  # the reference's own values are its own


def test_a_support_date_left_at_the_references_is_named_when_the_documents_disagree(tmp_path):
    p = from_folder(build_product(tmp_path, leave=("SUPPORT_UNTIL",)).firmware)
    message = support_leftover(p, REFERENCE["SUPPORT_UNTIL"], SUPPORT_UNTIL)
    assert message and "SUPPORT_UNTIL" in message and "lib/sbd/version.py" in message
    assert support_leftover(p, REFERENCE["SUPPORT_UNTIL"], REFERENCE["SUPPORT_UNTIL"]) is None  # documents agree
    assert support_leftover(from_folder(ROOT / "firmware"), REFERENCE["SUPPORT_UNTIL"], "2030-01-01") is None


def test_a_declaration_left_at_the_references_is_bad_input(tmp_path):
    fw = build_product(tmp_path, leave=("features.json",)).firmware
    with pytest.raises(ProductError, match=f"declares model 'sbd-reference-esp32' \\(the reference's.*{MODEL}"):
        from_folder(fw)
    proc = _cli("verify", "--board", "no-such-board", "--firmware", str(fw))
    assert proc.returncode == 2 and "features.json declares model" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(SBOMError, match="declares model"):
        write_sbom(FirmwareBundle.from_dir(fw, compile_lib=False), tmp_path / "x.cdx.json")


def test_a_bad_product_declaration_is_refused():
    assert feature_decl.problems({"features": {}, "product": {"nmae": "x", "docs": {"SECURITY.md": "../x.md"}}})[-2:] \
        == ["product: unknown key 'nmae' (known: name, supplier, description, docs)",
            "product.docs['SECURITY.md']: '../x.md' is not a page under the product's DOCS_URL"]


def test_the_reference_policy_or_mud_base_left_in_place_fails_naming_it(tmp_path, product):
    p = from_folder(product.firmware)
    ref_policy = json.loads((ROOT / "boards/network-policy.json").read_text())
    message = policy_problem(ref_policy, p, "boards/network-policy.json")
    assert "is for model 'sbd-reference-esp32' (the reference's policy)" in message and "SBD_NETWORK_POLICY" in message
    assert policy_problem(json.loads(product.policy.read_text()), p, "x") is None
    lazy = from_folder(build_product(tmp_path / "lazy", leave=("MUD_BASE",)).firmware)
    assert "MUD_BASE in lib/sbd/network_policy.py is still the reference's" in policy_problem(
        json.loads(product.policy.read_text()), lazy, "x")
    proc = _cli("mud", "--broker", "10.0.0.1:8883", "--firmware", str(product.firmware),
                env={"SBD_NETWORK_POLICY": str(ROOT / "boards/network-policy.json")})
    assert proc.returncode == 2 and "the reference's policy" in proc.stderr and "Traceback" not in proc.stderr


def test_the_mud_file_names_the_product(product, monkeypatch):
    monkeypatch.setenv("SBD_NETWORK_POLICY", str(product.policy))
    head = mud.build(mud.declaration({"broker_addr": "10.0.0.1", "broker_port": 8883}, product.firmware))["ietf-mud:mud"]
    assert head["mud-url"] == f"{MUD_BASE}{MODEL}.json" and head["model-name"] == MODEL
    assert head["systeminfo"] == f"{MODEL} {VERSION}: {DESCRIPTION}"
    assert head["mfg-name"] == SUPPLIER and head["documentation"] == DOCS_URL and head["firmware-rev"] == VERSION
    assert "reference" not in json.dumps(head)


def test_the_sbom_names_the_product(product, tmp_path):
    write_sbom(FirmwareBundle.from_dir(product.firmware), tmp_path / "p.cdx.json")
    doc = json.loads((tmp_path / "p.cdx.json").read_text())
    fw = doc["metadata"]["component"]
    assert (fw["name"], fw["version"], fw["supplier"]["name"]) == (MODEL, VERSION, SUPPLIER)
    assert doc["metadata"]["supplier"]["name"] == SUPPLIER
    assert DESCRIPTION in fw["description"] and "reference" not in fw["description"]
    props = {p["name"]: p["value"] for p in fw["properties"]}
    assert props["sbd:product-name"] == NAME and props["sbd:docs-url"] == DOCS_URL
    assert "/lib/sbd/sensor.mpy" in {c["name"] for c in doc["components"]}


def _report(product, docs: Path | None, features: dict | None = None) -> dict:
    bundle = FirmwareBundle.from_dir(product.firmware, compile_lib=False)
    decl = features if features is not None else feature_decl.load(product.firmware)
    context = run_context(bundle, features=decl, docs=str(docs) if docs else None)
    return build_report({"name": "b", "kind": "emulated"}, {"version": VERSION}, PASS, features=decl,
                        context=context)


def test_the_coverage_tables_cite_the_products_documents(product):
    report = _report(product, product.docs)
    assert report["product"]["model"] == MODEL and report["product"]["name"] == NAME
    rows = {r["id"]: r for r in report["coverage"]["etsi_en_303_645"]["provisions"]}
    assert [d["page"] for d in rows["5.2-1"]["docs"]] == [DOCS_URL + "SECURITY.md"]
    # a section the product's page has is kept; one it lacks is not claimed
    assert [d["page"] for d in rows["5.2-2"]["docs"]] == [DOCS_URL + "SECURITY.md#what-happens-after-you-report"]
    eu = {r["id"]: r for r in report["coverage"]["eu_cra"]["provisions"]}
    assert [d["page"] for d in eu["II(5)"]["docs"]] == [DOCS_URL + "SECURITY.md"]
    pages = json.dumps(report["coverage"])
    assert "docs/SECURITY.md" not in pages and "docs/ota.md" not in pages and "harness.md" not in pages
    assert rows["5.3-9"]["docs"] == []  # the product maps no page for its updates
    assert f"{NAME} (model {MODEL}, version {VERSION}), supplier {SUPPLIER}, documents {DOCS_URL}" in to_markdown(report)
    assert f"{NAME} (model {MODEL}" in to_html(report)


def test_a_product_without_a_documentation_map_cites_none_and_says_so(product):
    decl = feature_decl.load(product.firmware)
    decl["product"] = {k: v for k, v in decl["product"].items() if k != "docs"}
    report = _report(product, product.docs, decl)
    assert not any(r["docs"] for b in report["coverage"].values() for r in b["provisions"])
    assert any(x["kind"] == "no documentation map" for x in report["limitations"])


def test_the_reference_keeps_citing_the_projects_pages():
    bundle = FirmwareBundle.from_dir(ROOT / "firmware", compile_lib=False)
    decl = feature_decl.load(ROOT / "firmware")
    report = build_report({"name": "b"}, {"version": "0.1.0"}, PASS, features=decl,
                          context=run_context(bundle, features=decl))
    assert report["product"]["reference"] is True
    rows = {r["id"]: r for r in report["coverage"]["etsi_en_303_645"]["provisions"]}
    assert [d["page"] for d in rows["5.2-1"]["docs"]] == ["docs/SECURITY.md"]


def test_an_update_built_from_the_product_names_the_products_model(product):
    from sbd_harness.release.ota import build_manifest
    assert build_manifest(FirmwareBundle.from_dir(product.firmware), VERSION, 2)["model"] == MODEL
    assert build_manifest(FirmwareBundle.from_dir(ROOT / "firmware"), "0.2.0", 2)["model"] == REFERENCE["MODEL"]


def test_the_ics_and_ixit_drafts_name_the_product(product):
    from sbd_harness.reports.ics import ics, ics_markdown, ixit, ixit_markdown
    report = _report(product, product.docs)
    decl = feature_decl.load(product.firmware)
    for doc, markdown in ((ics(report), ics_markdown), (ixit(report, decl), ixit_markdown)):
        assert doc["provenance"]["product"]["model"] == MODEL
        assert f"Draft for {NAME} (model {MODEL}, version {VERSION}), supplier {SUPPLIER}" in markdown(doc)


def test_product_md_quotes_what_the_checks_say_for_each_value(tmp_path, product):
    page = (ROOT / "docs/product.md").read_text()
    for key, where in REQUIRED.items():
        assert f"`{key}`" in page, key
        if key != "MODEL":  # the reference's model makes the build the reference: nothing to name
            assert f"{key} in {where} is still the reference's value" in page, key
            assert f"{key} in {where} is still the reference's value" in leftover(
                from_folder(build_product(tmp_path / key, leave=(key,)).firmware), key)
    p = from_folder(product.firmware)
    ref_policy = json.loads((ROOT / "boards/network-policy.json").read_text())
    assert "is for model 'sbd-reference-esp32' (the reference's policy), the firmware is" in page
    assert "is for model 'sbd-reference-esp32' (the reference's policy), the firmware is" in policy_problem(
        ref_policy, p, "x")
    assert "its own documents were not given: run with --docs DIR" in page and \
        "its own documents were not given: run with --docs DIR" in no_docs_reason(p)
    for name in ("Release keys", "Broker", "CA", "Network policy", "Declaration", "Version"):
        assert f"| {name} |" in page, name
