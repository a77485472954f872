"""Baseline provision identifiers, as listed in shared/reference/baselines.md.

Every check cites provisions from these tables only; a test rejects any ID
that is not here, so none can be invented. Titles are short paraphrases.
ETSI TS 103 701 has one test group per EN 303 645 provision, with the same ID.
EN 18031-1's requirement IDs live in `en_18031.py`, with how far each was confirmed.
"""
from __future__ import annotations

from sbd_harness.reports import en_18031

BASELINES = {
    "etsi_en_303_645": "ETSI EN 303 645 V3.1.3",
    "nist_ir_8259a": "NIST IR 8259A",
    "eu_cra": "EU Cyber Resilience Act (Regulation (EU) 2024/2847), Annex I",
    "uk_psti": "UK PSTI (SI 2023/1007), Schedule 1",
    "owasp_isvs": "OWASP ISVS 1.0",
    "en_18031_1": en_18031.TITLE,
}

# The edition of each baseline the IDs are taken from, for the report's provenance.
EDITIONS = {
    "etsi_en_303_645": "V3.1.3 (2024-09)",
    "nist_ir_8259a": "NIST IR 8259A (2020)",
    "eu_cra": "Regulation (EU) 2024/2847; reporting obligations from 2026-09-11, full application 2027-12-11",
    "uk_psti": "SI 2023/1007, in force 2024-04-29 (refers to EN 303 645 V2.1.1)",
    "owasp_isvs": "1.0 (the published release, not 1.0 RC: IDs moved between them)",
    "en_18031_1": en_18031.EDITION,
}

ETSI_EN_303_645 = {
    "5.0-1": "Record why a provision is not applicable or not met",
    "5.1-1": "Passwords unique per device or user-set",
    "5.1-2": "Pre-installed unique passwords resist class-wide attacks",
    "5.1-2A": "Passwords for machine-to-machine authentication",
    "5.1-3": "Best-practice cryptography for authentication",
    "5.1-4": "Simple way to change the authentication value",
    "5.1-5": "Brute force over the network impracticable",
    "5.2-1": "Public vulnerability disclosure policy",
    "5.2-2": "Act on reports promptly",
    "5.2-3": "Monitor and fix for the support period",
    "5.3-1": "Software securely updatable",
    "5.3-2": "Mechanism for secure installation of updates",
    "5.3-3": "Updates simple to apply",
    "5.3-4A": "Automatic updates possible",
    "5.3-4B": "Automatic updates on by default",
    "5.3-5": "Check for security updates periodically",
    "5.3-6A": "User can enable, disable or postpone updates",
    "5.3-6B": "Update notifications",
    "5.3-7": "Best-practice cryptography in the update mechanism",
    "5.3-8": "Timely security updates",
    "5.3-9": "Device verifies authenticity and integrity of updates",
    "5.3-10": "Network updates verified through a trust relationship",
    "5.3-11": "Inform the user an update is needed",
    "5.3-12": "Warn when an update disrupts basic function",
    "5.3-13": "Defined support period published",
    "5.3-14": "Non-updatable products: rationale",
    "5.3-15A": "Non-updatable products: isolation",
    "5.3-15B": "Non-updatable products: replaceable hardware",
    "5.3-16": "Model designation clearly recognisable",
    "5.4-1": "Sensitive security parameters stored securely",
    "5.4-2": "Hard-coded per-device identity resists tampering",
    "5.4-3": "No hard-coded critical security parameters",
    "5.4-4": "Per-device secrets for updates and services",
    "5.5-1": "Best-practice cryptography for communications",
    "5.5-2": "Reviewed implementations",
    "5.5-3": "Cryptography updatable",
    "5.5-4": "Network access to functions only after authentication",
    "5.5-5": "Security configuration over the network needs authentication",
    "5.5-6": "Critical secrets encrypted in transit",
    "5.5-7": "Critical secrets protected on remote interfaces",
    "5.5-8": "Critical secrets managed over their lifecycle",
    "5.6-1": "Unused interfaces disabled",
    "5.6-2": "Minimal unauthenticated disclosure",
    "5.6-3": "Physical interfaces not needlessly exposed",
    "5.6-4A": "Debug interfaces disabled or access-controlled",
    "5.6-4B": "Physical debug ports physically protected",
    "5.6-5": "Only needed services",
    "5.6-6": "Minimal code",
    "5.6-7": "Least privilege",
    "5.6-8": "Hardware memory protection",
    "5.6-9": "Secure development",
    "5.7-1": "Software verified with secure boot",
    "5.7-2": "Unauthorised change: alert and limit networking",
    "5.8-1": "Personal data protected in transit",
    "5.8-2": "Sensitive data to services protected",
    "5.8-3": "Sensing capabilities documented",
    "5.9-1": "Resilient to network and power outages",
    "5.9-2": "Stay locally functional",
    "5.9-3": "Orderly reconnect",
    "5.10-1": "Examine telemetry for security anomalies",
    "5.11-1": "Simple erasure of user data",
    "5.11-2": "Delete data from services",
    "5.11-3": "Clear deletion instructions",
    "5.11-4": "Deletion confirmation",
    "5.12-1": "Minimal setup decisions",
    "5.12-2": "Secure-setup guidance",
    "5.12-3": "How to check setup",
    "5.13-1A": "Validate input from user interfaces",
    "5.13-1B": "Validate input from network interfaces and APIs",
    "6-1": "Data protection: information to the consumer",
    "6-2": "Data protection: consent",
    "6-3A": "Data protection: withdrawal of consent",
    "6-3B": "Data protection: withdrawal of consent",
    "6-4": "Data protection: telemetry minimisation",
    "6-5": "Data protection",
    "6-6": "Data protection",
    "6-7": "Data protection",
    "6-8": "Data protection",
}

NIST_IR_8259A = {
    "1": "Device identification",
    "2": "Device configuration",
    "3": "Data protection",
    "4": "Logical access to interfaces",
    "5": "Software update",
    "6": "Cybersecurity state awareness",
}

EU_CRA = {
    "I(1)": "Cybersecurity appropriate to the risks",
    **{f"I(2)({c})": t for c, t in zip("abcdefghijklm", [
        "No known exploitable vulnerabilities", "Secure by default, reset to original state",
        "Security updates", "Protection from unauthorised access", "Confidentiality",
        "Integrity of data, commands, programs, configuration", "Data minimisation",
        "Availability of essential functions", "Minimise impact on other devices",
        "Limited attack surface", "Exploitation mitigation", "Record and monitor security activity",
        "Secure removal of all data and settings"])},
    **{f"II({i})": t for i, t in enumerate([
        "Identify components, SBOM", "Fix without delay", "Regular testing", "Disclose fixed vulnerabilities",
        "Coordinated disclosure policy", "Contact address for reports", "Secure update distribution",
        "Free security updates with advisories"], start=1)},
    "Art13(8)": "Support period",
}

UK_PSTI = {
    "Sch1(1)": "Passwords unique or user-set, not guessable",
    "Sch1(2)": "Published way to report security issues",
    "Sch1(3)": "Published minimum security-update period",
}

OWASP_ISVS = {
    "1.2.1": "SBOM",
    "2.1.8": "Credentials changeable", "2.1.9": "Credentials not hard-coded", "2.1.10": "Credentials unique",
    "2.1.12": "Brute-force protection",
    "3.1.3": "Debug interfaces", "3.1.4": "Boot integrity", "3.1.5": "Boot integrity",
    "3.4.3": "Signed updates", "3.4.4": "No check-then-use race", "3.4.6": "Anti-rollback",
    "3.4.7": "Fallback on failure",
    "2.1.11": "Revocation",
    "4.1.1": "TLS", "4.1.2": "TLS configuration", "4.1.3": "Certificate validation", "4.1.5": "Pinning",
    "4.2.2": "MQTT authorisation per identity",
    "5.1.1": "Debug ports",
}

CATALOGUE: dict[str, dict[str, str]] = {
    "etsi_en_303_645": ETSI_EN_303_645,
    "nist_ir_8259a": NIST_IR_8259A,
    "eu_cra": EU_CRA,
    "uk_psti": UK_PSTI,
    "owasp_isvs": OWASP_ISVS,
    "en_18031_1": en_18031.REQUIREMENTS,
}


# EN 303 645 V3.1.3 status of each provision, from the shared baselines reference (copies of Table B.1):
# M mandatory, R recommended, C conditional, F only if a feature exists. Data protection (clause 6) is
# listed there as "M/R F" for the clause as a whole; the status of each of its provisions is not confirmed.
EN_STATUS: dict[str, str | None] = {
    "5.0-1": "M", "5.1-1": "M F", "5.1-2": "M F", "5.1-2A": "R", "5.1-3": "M F", "5.1-4": "M F", "5.1-5": "M C F",
    "5.2-1": "M", "5.2-2": "R", "5.2-3": "R",
    "5.3-1": "R F", "5.3-2": "M C", "5.3-3": "M F", "5.3-4A": "R F", "5.3-4B": "R F", "5.3-5": "R F",
    "5.3-6A": "R F", "5.3-6B": "R F", "5.3-7": "M F", "5.3-8": "M C", "5.3-9": "R F", "5.3-10": "M F",
    "5.3-11": "R C", "5.3-12": "R C", "5.3-13": "M", "5.3-14": "R C", "5.3-15A": "R C", "5.3-15B": "R C",
    "5.3-16": "M",
    "5.4-1": "M F", "5.4-2": "M F", "5.4-3": "M", "5.4-4": "M F",
    "5.5-1": "M", "5.5-2": "R", "5.5-3": "R", "5.5-4": "R", "5.5-5": "M F", "5.5-6": "R F", "5.5-7": "M F",
    "5.5-8": "M C",
    "5.6-1": "M F", "5.6-2": "M", "5.6-3": "R", "5.6-4A": "M F", "5.6-4B": "R F",
    **{f"5.6-{i}": "R" for i in range(5, 10)},
    "5.7-1": "R", "5.7-2": "R F",
    "5.8-1": "R F", "5.8-2": "M F", "5.8-3": "M F",
    "5.9-1": "R", "5.9-2": "R", "5.9-3": "R", "5.10-1": "R F",
    "5.11-1": "M", "5.11-2": "R", "5.11-3": "R", "5.11-4": "R",
    "5.12-1": "R", "5.12-2": "R", "5.12-3": "R",
    "5.13-1A": "M", "5.13-1B": "M",
    **{pid: None for pid in ("6-1", "6-2", "6-3A", "6-3B", "6-4", "6-5", "6-6", "6-7", "6-8")},
}


def en_category(pid: str) -> str:
    """"mandatory", "recommended" or "unconfirmed" (no status in the baselines reference)."""
    status = EN_STATUS.get(pid)
    if not status:
        return "unconfirmed"
    return "mandatory" if status.startswith("M") else "recommended"


# Provisions that apply only where the product has a feature (the F of Table B.1 and the conditions of the
# other baselines), as this harness reads them: feature name (a key of the firmware's feature declaration,
# firmware/features.json) -> baseline -> IDs. A provision whose feature the firmware declares absent is
# "not applicable (feature absent)", with the declaration as its justification (EN 303 645 5.0-1).
FEATURE_PROVISIONS: dict[str, dict[str, list[str]]] = {
    "passwords": {"etsi_en_303_645": ["5.1-1", "5.1-2"], "uk_psti": ["Sch1(1)"],
                  "en_18031_1": en_18031.FEATURE_REQUIREMENTS["passwords"]},
    "personal_data": {"etsi_en_303_645": ["5.8-1", "6-1", "6-2", "6-3A", "6-3B", "6-4", "6-5", "6-6", "6-7",
                                          "6-8"]},
    "sensitive_data": {"etsi_en_303_645": ["5.8-2"]},
    "keys_leave_device": {"etsi_en_303_645": ["5.5-6", "5.5-7"]},
    "automatic_updates": {"etsi_en_303_645": ["5.3-4B", "5.3-6A"]},
    "debug_interfaces": {"etsi_en_303_645": ["5.6-4A", "5.6-4B"], "owasp_isvs": ["3.1.3", "5.1.1"]},
    "sensors": {"etsi_en_303_645": ["5.8-3"]},
}


def unknown_ids(provisions: dict[str, list]) -> list[str]:
    """IDs a check cites that the catalogue does not know (bare IDs or claim objects with an `id`)."""
    bad = []
    for baseline, ids in provisions.items():
        known = CATALOGUE.get(baseline)
        if known is None:
            bad.append(f"{baseline}: unknown baseline")
            continue
        for i in ids:
            pid = i.get("id") if isinstance(i, dict) else i
            if pid not in known:
                bad.append(f"{baseline}: {pid}")
    return bad


def ts_103_701_groups(etsi_ids: list[str]) -> list[str]:
    """ETSI TS 103 701 test groups for EN 303 645 provisions (same IDs)."""
    return sorted(set(etsi_ids))
