"""Provisions the project's documentation addresses, for the report's coverage tables.

A provision no automated check covers may still be met by something written
down: a disclosure policy, a support period, how updates are signed. Each
entry names the page (and section) that addresses the provision and says in
a few words what it says there. A page is listed only where it really
addresses the provision; where it covers part of it, the note says which
part. "Covered by documentation" means a person has to read the page and
judge; nothing here is checked on a board.

`tests/test_report.py` checks that every page and section named here exists
and that every provision ID is in `provisions.py`.
"""
from __future__ import annotations

import re
from pathlib import Path

from sbd_harness.reports.provisions import CATALOGUE

# baseline -> provision ID -> [(page path from the repository root, optionally "#section", what it says)]
DocRefs = dict[str, dict[str, list[tuple[str, str]]]]

SECURITY = "docs/SECURITY.md"
SUPPORT = "docs/support.md"
OTA = "docs/ota.md"
IDENTITY = "docs/identity.md"
VULNS = "docs/known-vulnerabilities.md"
SURFACE = "docs/attack-surface.md"

DOC_COVERAGE: DocRefs = {
    "etsi_en_303_645": {
        "5.2-1": [(SECURITY, "the vulnerability disclosure policy: where to report, and the acknowledgement and "
                             "status-update timelines")],
        "5.2-2": [(SECURITY + "#what-happens-after-you-report", "acknowledgement, assessment, status-update and "
                                                                "fix timelines for every report")],
        "5.2-3": [(SUPPORT + "#what-support-covers", "vulnerabilities acted on and components watched until the "
                                                     "end of the support period")],
        "5.3-2": [(OTA + "#what-the-device-does-step-by-step",
                   "installation into the inactive slot, checked before and after writing, one atomic switch, "
                   "a trial that commits or reverts")],
        "5.3-7": [(OTA + "#the-update-stream", "ECDSA P-256 signatures over SHA-256 of the manifest, SHA-256 of "
                                               "every file")],
        "5.3-9": [(OTA + "#threat-model", "the device checks the signature, every file's size and SHA-256, the "
                                          "model and the security counter, with the test that shows each")],
        "5.3-10": [(OTA + "#how-to-ship-an-update", "updates verify only against the release public keys installed "
                                                    "at provisioning (the trust relationship)")],
        "5.3-13": [(SUPPORT, "the defined support period and its end date")],
        "5.5-8": [(OTA + "#key-handling-for-a-manufacturer",
                   "the release keys' lifecycle: kept offline, a cold spare, rotation and retirement"),
                  (IDENTITY + "#revocation-and-the-crl", "device certificates revoked through the lab CA's CRL")],
        "5.11-3": [(IDENTITY + "#factory-reset", "step-by-step factory reset (BOOT button or signed command) on "
                                                 "emulated and real boards")],
    },
    "nist_ir_8259a": {
        "5": [(OTA, "signed updates: verified and authenticated before install, anti-rollback counter, revert "
                    "on failure, only release-key holders can update")],
    },
    "eu_cra": {
        "I(2)(c)": [(OTA, "security updates delivered as signed updates over the device's connection")],
        "I(2)(a)": [(VULNS, "known vulnerabilities of the platform under the application, against an advisory "
                            "feed the manufacturer refreshes, with a VEX status and reason for each")],
        "II(2)": [(SECURITY + "#what-happens-after-you-report", "a fix aimed within 90 days of the report, sooner "
                                                                "the more severe")],
        "II(4)": [(SECURITY + "#coordinated-disclosure", "every fixed vulnerability disclosed in an advisory")],
        "II(5)": [(SECURITY + "#coordinated-disclosure", "the coordinated vulnerability disclosure policy")],
        "II(6)": [(SECURITY + "#how-to-report", "the contact for reporting vulnerabilities")],
        "II(7)": [(OTA + "#delivery-over-mqtt", "updates signed by an offline release key and delivered over "
                                                "the device's mutual-TLS connection")],
        "II(8)": [(SUPPORT + "#what-support-covers", "security fixes free of charge as signed updates, each with "
                                                     "a published advisory")],
        "Art13(8)": [(SUPPORT + "#why-this-date", "the support period, its end date and why it is at least five "
                                                  "years")],
        "II(1)": [("docs/harness.md#the-sbom", "a CycloneDX SBOM of the firmware bundle, written by sbd ota "
                                               "build and sbd verify")],
    },
    "uk_psti": {
        "Sch1(2)": [(SECURITY, "how to report security issues, with acknowledgement and status-update timelines")],
        "Sch1(3)": [(SUPPORT, "the minimum security-update period, with its end date")],
    },
    "owasp_isvs": {
        "1.2.1": [("docs/harness.md#the-sbom", "a CycloneDX SBOM of the firmware bundle")],
        "3.4.3": [(OTA + "#the-update-stream", "updates are signed (ECDSA P-256) and the device checks the "
                                               "signature first")],
        "3.4.4": [(OTA + "#what-the-device-does-step-by-step", "the slot is verified again as read back from "
                                                               "flash before the switch, and at every boot")],
        "3.4.6": [(OTA + "#the-manifest", "the security counter must be higher than the committed one; it is "
                                          "kept in NVS, not eFuse (see Limits)")],
        "3.4.7": [(OTA + "#what-the-device-does-step-by-step", "a trial that does not commit is reverted; a slot "
                                                               "that fails its check falls back")],
    },
    "en_18031_1": {
        "SUM-2": [(OTA + "#threat-model", "the device checks the signature, every file's size and SHA-256, the "
                                          "model and the security counter before it installs an update")],
        "CCK-2": [(IDENTITY + "#keys-born-on-the-device", "the device makes its own P-256 key pair at first boot "
                                                          "from the chip's random number generator")],
        "GEC-1": [(VULNS, "the platform under the application with exact versions, the advisory feed and the "
                          "manufacturer's VEX statements, with what the shipped snapshot leaves out")],
        "GEC-4": [(SURFACE + "#what-the-firmware-exposes", "the network interfaces and services the firmware "
                                                           "exposes, and the official build's mDNS and DHCP"),
                  (SURFACE + "#the-reviewed-policy-boardsnetwork-policyjson", "the reviewed declaration of what "
                                                                               "listens and every outbound flow")],
    },
}


# Pages that document a limitation: they say how far the product falls short of the provision (keys in
# plaintext NVS, software that updates cannot reach, a boot chain not verified from the ROM). That is what
# an assessor needs to read, and it is the opposite of coverage: the report shows such a provision as
# "documented limitation: not met" unless a check covers it.
DOC_LIMITATIONS: DocRefs = {
    "etsi_en_303_645": {
        "5.3-1": [(OTA, "the application's /lib is updated by signed updates over the device's MQTT connection; "
                        "boot.py, main.py and MicroPython itself are not (they need sbd flash)")],
        "5.4-1": [(IDENTITY + "#storage-in-nvs-and-at-rest-on-a-real-esp32",
                   "keys and certificates in NVS, never in files; NVS is plaintext on the official MicroPython "
                   "builds, and how to enable flash and NVS encryption")],
        "5.7-1": [(OTA + "#slots-and-the-switch", "every boot verifies the update slot it runs; the factory image "
                                                  "is not verified at boot"),
                  (IDENTITY + "#storage-in-nvs-and-at-rest-on-a-real-esp32",
                   "secure boot on a real ESP32 needs a custom MicroPython build; not done by the firmware")],
    },
    "owasp_isvs": {
        "3.1.4": [(OTA + "#slots-and-the-switch", "every boot verifies the update slot it runs before importing "
                                                  "it; the factory image is not verified")],
    },
    "en_18031_1": {
        "SUM-1": [(OTA, "the application's /lib is updated by signed updates over the device's MQTT connection; "
                        "boot.py, main.py and MicroPython itself are not (they need sbd flash)")],
        "SSM-3": [(IDENTITY + "#storage-in-nvs-and-at-rest-on-a-real-esp32",
                   "keys and certificates in NVS, never in files; NVS is plaintext on the official MicroPython "
                   "builds, and how to enable flash and NVS encryption")],
    },
}


def doc_refs(baseline: str, provision: str) -> list[tuple[str, str]]:
    return list(DOC_COVERAGE.get(baseline, {}).get(provision, []))


def heading_slug(heading: str) -> str:
    """The anchor GitHub makes of a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def map_problems(root: Path, refs: DocRefs | None = None) -> list[str]:
    """What is wrong with the map: unknown provision IDs, missing pages or sections."""
    problems = []
    maps = [DOC_COVERAGE, DOC_LIMITATIONS] if refs is None else [refs]
    for baseline, entries in ((b, e) for m in maps for b, e in m.items()):
        known = CATALOGUE.get(baseline)
        if known is None:
            problems.append(f"unknown baseline {baseline}")
            continue
        for provision, pages in entries.items():
            if provision not in known:
                problems.append(f"{baseline}: unknown provision {provision}")
            if not pages:
                problems.append(f"{baseline} {provision}: no page")
            for page, what in pages:
                path, _, anchor = page.partition("#")
                file = root / path
                if not file.is_file():
                    problems.append(f"{baseline} {provision}: no page {path}")
                    continue
                if not what.strip():
                    problems.append(f"{baseline} {provision}: {page} says nothing about what it covers")
                if anchor:
                    slugs = {heading_slug(line.lstrip("#")) for line in file.read_text().splitlines()
                             if line.startswith("#")}
                    if anchor not in slugs:
                        problems.append(f"{baseline} {provision}: {path} has no section #{anchor}")
    return problems
