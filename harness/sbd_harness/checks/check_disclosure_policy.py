"""The device points to its vulnerability disclosure policy and its support
period, and the documents say what they must.

The device says where they are in its birth message (`security_policy`,
`support_until`), which it sends once provisioned, locked and connected to
its broker: the checks run the lab broker (the `sbd_broker` fixture) and
skip, saying why, on a board that does not go online. The published address
is mapped to the lab's copy of the documents: the firmware's DOCS_URL prefix
becomes the docs folder (`--docs DIR`). Only the reference build (its MODEL
is the reference's, release/product.py) falls back to the project's docs/; a
product's checks skip without its own documents, and fail when its DOCS_URL
(or its SUPPORT_UNTIL, where the documents disagree) is still the reference's.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from sbd_harness.checks.online import kept_birth
from sbd_harness.release.docs_policy import (DocsError, PLACEHOLDER_RE, docs_url, read_policy, read_support,
                                             read_support_length, resolve, support_document)
from sbd_harness.release.product import docs_folder, from_bundle, leftover, no_docs_reason, support_leftover


def _birth(sbd_board, sbd_boot, sbd_broker) -> dict[str, Any]:
    """The device's birth message in this run (online.kept_birth: the retained one, else a fresh one)."""
    return kept_birth(sbd_board, sbd_boot, sbd_broker)


def _policy(pytestconfig, sbd_bundle, birth: dict[str, Any], evidence: dict[str, Any]):
    url = birth.get("security_policy")
    evidence["security_policy"] = url
    assert url, f"the birth message does not point to a vulnerability disclosure policy (no security_policy): {birth}"
    if PLACEHOLDER_RE.search(str(url).split("/")[2] if str(url).count("/") >= 2 else ""):
        evidence["note"] = ("the address is on a reserved placeholder domain: the lab's copy was checked; a product "
                            "sets DOCS_URL to where it publishes its documents")
    product = from_bundle(sbd_bundle)
    stale = leftover(product, "DOCS_URL")  # reported with what the documents lack, not instead of it
    folder = docs_folder(product, pytestconfig.getoption("--sbd-docs"))
    if folder is None:
        assert stale is None, stale
        pytest.skip(no_docs_reason(product))
    evidence["docs_folder"] = str(folder)
    prefix = docs_url(sbd_bundle.sources.get("/lib/sbd/version.py", b"").decode(errors="replace"))
    try:
        path = resolve(url, prefix, folder)
    except DocsError as exc:
        raise AssertionError(f"security_policy: {exc}") from None
    evidence["policy_file"] = str(path)
    assert path.is_file(), "; ".join([f"the device points to {url}, but there is no {path}"] + ([stale] if stale else []))
    return path, [stale] if stale else []


@pytest.mark.sbd_check(
    id="vulnerability-disclosure-policy-published",
    title="The device points to a vulnerability disclosure policy with a contact, an acknowledgement "
          "and a status-update timeline")
def check_disclosure_policy(pytestconfig, sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_evidence):
    birth = _birth(sbd_board, sbd_boot, sbd_broker)
    path, stale = _policy(pytestconfig, sbd_bundle, birth, sbd_evidence)
    found, problems = read_policy(path.read_text(errors="replace"))
    sbd_evidence.update(found)
    problems = [f"{path.name}: {p}" for p in problems] + stale
    assert not problems, "; ".join(problems)


def _support_declaration(pytestconfig, sbd_bundle, birth: dict[str, Any],
                         evidence: dict[str, Any]) -> tuple[Path, list[str]]:
    """The support declaration the device's policy links to (it must exist), and the policy's
    staleness problems; both support-period checks read the same one."""
    policy, stale = _policy(pytestconfig, sbd_bundle, birth, evidence)
    found, _ = read_policy(policy.read_text(errors="replace"))
    try:
        declaration = support_document(policy, found)
    except DocsError as exc:
        raise AssertionError(str(exc)) from None
    evidence["support_file"] = str(declaration)
    assert declaration.is_file(), f"{policy.name} links its support period to {declaration}, which does not exist"
    return declaration, stale


@pytest.mark.sbd_check(
    id="support-period-declared",
    title="The device states the end of its support period, and the published declaration agrees and "
          "has not passed")
def check_support_period(pytestconfig, sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_evidence):
    birth = _birth(sbd_board, sbd_boot, sbd_broker)
    device_date = birth.get("support_until")
    sbd_evidence["support_until"] = device_date
    assert device_date, f"the birth message does not state the end of the support period (no support_until): {birth}"
    declaration, stale = _support_declaration(pytestconfig, sbd_bundle, birth, sbd_evidence)
    found, problems = read_support(declaration.read_text(errors="replace"), device_date, dt.date.today())
    sbd_evidence.update(found)
    problems = [f"{declaration.name}: {p}" for p in problems] + stale
    date_left = support_leftover(from_bundle(sbd_bundle), device_date, found.get("declared_support_until"))
    if date_left:
        problems.append(date_left)
    assert not problems, "; ".join(problems)


@pytest.mark.sbd_check(
    id="support-period-at-least-five-years",
    title="The support period the device states ends at least five years after the product was placed on the "
          "market, as its published declaration dates that, and is a full date")
def check_support_period_length(pytestconfig, sbd_board, sbd_boot, sbd_broker, sbd_bundle, sbd_evidence):
    birth = _birth(sbd_board, sbd_boot, sbd_broker)
    device_date = birth.get("support_until")
    assert device_date, f"the birth message does not state the end of the support period (no support_until): {birth}"
    declaration, _stale = _support_declaration(pytestconfig, sbd_bundle, birth, sbd_evidence)
    found, problems = read_support_length(declaration.read_text(errors="replace"), device_date)
    sbd_evidence.update(found)
    assert not problems, "; ".join(problems)
