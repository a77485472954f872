"""A manufacturer's product, built from the reference (tests/product_fixture.py: its model, version,
documents' address, support date, MUD base, a sensor module, its declaration, documents and reviewed
network policy), verified end to end on emulated boards: its report, MUD file, SBOM and coverage name
the product and its documents; without its documents or its policy the checks say so; and a product
that left DOCS_URL, SUPPORT_UNTIL and MUD_BASE at the reference's fails the checks that read them,
each naming the value. Only the three checks that read those values run (`sbd verify --check`); the
rest of the product's identity is tested without a board in tests/unit/test_product.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from helpers import DOCS_CHECKS, only, unexpected
from product_fixture import DESCRIPTION, DOCS_URL, MODEL, MUD_BASE, NAME, SUPPLIER, VERSION, build_product
from sbd_harness.boards import lifecycle
from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.product import REFERENCE

CHECKS = ("boot-line-identifies-firmware", *DOCS_CHECKS, "connections-match-mud")
LEFT = (*DOCS_CHECKS, "connections-match-mud")  # the checks that read the values a product must change
ROOT = Path(__file__).resolve().parents[2]


def _board(ca, firmware: Path):
    port = free_port(lab_address())
    board = EmulatedBoard(f"prod-{uuid.uuid4().hex[:8]}")
    board.start()
    lifecycle.locked(board, ca, FirmwareBundle.from_dir(firmware), broker_port=port)
    return board, port


def _verify(board, port, ca, report: Path, firmware: Path, *extra: str, policy: Path | None,
            checks: tuple[str, ...] = CHECKS) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("SBD_NETWORK_POLICY", "SBD_DOCS_DIR")}
    if policy is not None:
        env["SBD_NETWORK_POLICY"] = str(policy)
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "verify", "--board", board.name, "--pki", str(ca.dir),
                           "--broker", f"{lab_address()}:{port}", "--firmware", str(firmware), "--report", str(report),
                           *only(*checks), *extra], capture_output=True, text=True, timeout=600, env=env)
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, json.loads(report.read_text())


@pytest.fixture(scope="module")
def product(ca, tmp_path_factory):
    files = build_product(tmp_path_factory.mktemp("acme"))
    board, port = _board(ca, files.firmware)
    yield files, board, port
    board.remove()


def test_the_products_report_mud_file_sbom_and_coverage_name_the_product(product, ca, tmp_path):
    files, board, port = product
    code, report = _verify(board, port, ca, tmp_path / "report.json", files.firmware, "--docs", str(files.docs),
                           policy=files.policy)
    assert code == 0, unexpected(report)
    checks = {c["id"]: c for c in report["checks"]}
    assert {c: checks[c]["status"] for c in CHECKS} == {c: "pass" for c in CHECKS}
    # the report: the product, as the build and its declaration say, and the device as it booted
    assert {k: report["product"][k] for k in ("model", "version", "name", "supplier", "docs_url", "reference")} == \
        {"model": MODEL, "version": VERSION, "name": NAME, "supplier": SUPPLIER, "docs_url": DOCS_URL,
         "reference": False}
    assert report["provenance"]["test_object"]["model"] == MODEL
    assert checks["vulnerability-disclosure-policy-published"]["evidence"]["policy_file"] == str(files.docs / "SECURITY.md")
    assert checks["vulnerability-disclosure-policy-published"]["evidence"]["contact"] == "psirt@acme-sensors.com"
    # coverage: the product's documents by their published address, none of the reference's pages
    rows = {r["id"]: r for r in report["coverage"]["etsi_en_303_645"]["provisions"]}
    assert [d["page"] for d in rows["5.2-1"]["docs"]] == [DOCS_URL + "SECURITY.md"]
    assert [d["page"] for d in rows["5.3-13"]["docs"]] == [DOCS_URL + "support.md"]
    assert rows["5.2-1"]["verdict"] == "verified"  # a real address: not the reference's placeholder
    assert "docs/SECURITY.md" not in json.dumps(report["coverage"])
    md = (tmp_path / "report.md").read_text()
    assert f"- Product: {NAME} (model {MODEL}, version {VERSION}), supplier {SUPPLIER}" in md
    # the SBOM beside the report
    sbom = json.loads((tmp_path / "report.sbom.cdx.json").read_text())["metadata"]
    assert (sbom["component"]["name"], sbom["component"]["version"], sbom["supplier"]["name"]) == (MODEL, VERSION,
                                                                                                  SUPPLIER)
    # the MUD file the check held the device to, and the one sbd mud writes
    held = checks["connections-match-mud"]["evidence"]
    assert held["birth_mud_url"] == held["certificate_mud_url"] == f"{MUD_BASE}{MODEL}.json"
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "mud", "--board", board.name, "--firmware",
                           str(files.firmware), "--out", str(tmp_path / "mud.json")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SBD_NETWORK_POLICY": str(files.policy)})
    assert proc.returncode == 0, proc.stderr
    mud = json.loads((tmp_path / "mud.json").read_text())["ietf-mud:mud"]
    assert (mud["mud-url"], mud["model-name"], mud["mfg-name"]) == (f"{MUD_BASE}{MODEL}.json", MODEL, SUPPLIER)
    assert mud["systeminfo"] == f"{MODEL} {VERSION}: {DESCRIPTION}"


def test_without_its_documents_and_its_policy_the_checks_say_what_is_missing(product, ca, tmp_path):
    files, board, port = product
    code, report = _verify(board, port, ca, tmp_path / "report.json", files.firmware, policy=None)
    checks = {c["id"]: c for c in report["checks"]}
    for c in DOCS_CHECKS:  # inconclusive, never compared with the reference's docs/
        assert checks[c]["status"] == "skip" and "--docs DIR" in checks[c]["message"], checks[c]
        assert "policy_file" not in checks[c]["evidence"]
    mud = checks["connections-match-mud"]
    assert mud["status"] == "fail" and "is for model 'sbd-reference-esp32' (the reference's policy)" in mud["message"]
    assert "SBD_NETWORK_POLICY" in mud["message"]
    assert code == 1


def test_values_left_at_the_references_fail_the_checks_that_read_them_naming_each(ca, tmp_path):
    files = build_product(tmp_path / "lazy", leave=("DOCS_URL", "SUPPORT_UNTIL", "MUD_BASE"))
    board, port = _board(ca, files.firmware)
    try:
        code, report = _verify(board, port, ca, tmp_path / "report.json", files.firmware, "--docs", str(files.docs),
                               policy=files.policy)
    finally:
        board.remove()
    checks = {c["id"]: c for c in report["checks"]}
    assert {c: checks[c]["status"] for c in LEFT} == {c: "fail" for c in LEFT}, unexpected(report)
    assert checks["boot-line-identifies-firmware"]["status"] == "pass"  # its model is the product's
    docs_url = f"DOCS_URL in lib/sbd/version.py is still the reference's value {REFERENCE['DOCS_URL']!r}"
    assert docs_url in checks["vulnerability-disclosure-policy-published"]["message"]
    support = checks["support-period-declared"]["message"]
    assert docs_url in support and "SUPPORT_UNTIL in lib/sbd/version.py is still the reference's" in support
    assert "MUD_BASE in lib/sbd/network_policy.py is still the reference's" in \
        checks["connections-match-mud"]["message"]
    assert code == 1


def test_the_boot_line_check_fails_on_a_device_that_is_not_the_builds_model(product, ca, tmp_path):
    files, board, port = product  # the product's board, held to the reference build
    code, report = _verify(board, port, ca, tmp_path / "report.json", ROOT / "firmware", policy=None,
                           checks=("boot-line-identifies-firmware",))
    failed = report["checks"][0]
    assert failed["status"] == "fail", failed
    assert f"board says model {MODEL}, the build is sbd-reference-esp32" in failed["message"], failed
    assert code == 1
