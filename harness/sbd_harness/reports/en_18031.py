"""EN 18031-1:2024, the harmonised standard for Article 3(3)(d) of the Radio Equipment Directive.

Wi-Fi radio equipment placed on the EU market since 1 August 2025 must meet the RED
delegated act (Delegated Regulation (EU) 2022/30); EN 18031-1 gives a presumption of
conformity with its network-protection requirement, within the restrictions of its
Official Journal listing (Commission Implementing Decision (EU) 2025/138). For an ESP32
product it is the rule that applies today, before the CRA.

What this module holds, and how sure it is:

- `REQUIREMENTS`: the EN 18031-1 requirement IDs, grouped by mechanism as the shared
  baselines reference lists the families. The published standard is not open; each ID was
  confirmed against the identifiers a public technical-documentation template reproduces
  from the standard (Zealience, "Template_EN18031_TechnicalDoc v1.3", CC BY-SA 4.0, which
  names them [E.Info.<ID>...]), not against the standard's own text. The titles are this
  project's paraphrases and are not checked against the standard's wording.
- `CLAIMS`: what each check of the catalogue shows for EN 18031-1, with the strengths of
  `claims.py` (full, partial with a reason, supporting). No check tests an EN 18031-1
  requirement fully: each requirement is assessed along a decision tree over the product's
  assets and documentation (the conceptual part), which no device check can walk.
- `SCOPE_NOT_APPLICABLE`: NMM-1 and TCM-1 concern network equipment (routers, gateways);
  the reference is an end device that forwards no traffic.
- `OJ_RESTRICTIONS`: where the restrictions of the OJ listing matter, as far as they could
  be confirmed (sources named; clause numbers the sources give, unconfirmed against the
  Decision's text, are said to be so).
"""
from __future__ import annotations

from typing import Any

BASELINE = "en_18031_1"
TITLE = "EN 18031-1:2024 (RED Article 3(3)(d))"
EDITION = ("EN 18031-1:2024 (August 2024), cited with restrictions by Commission Implementing Decision "
           "(EU) 2025/138 (OJ L, 2025/138, 30.1.2025); requirement IDs confirmed against a public "
           "template's copy of the standard's identifiers, titles paraphrased")
ID_SOURCE = ("IDs confirmed against the identifiers in Zealience's EN 18031 technical-documentation template "
             "(github.com/zealience/IoT-Cybersecurity-Compliance, Template_EN18031_TechnicalDoc.v1.3.xlsx, "
             "CC BY-SA 4.0), not against the published standard; titles are paraphrases")

# Mechanism families (shared baselines reference) -> requirement IDs of EN 18031-1 and paraphrased titles.
# The template's other IDs (ACM-3..6, AUM-1-3, AUM-2-2, GEC-7, GEC-8, LGM, DLM, UNM) belong to EN 18031-2
# and -3 and are left out.
REQUIREMENTS: dict[str, str] = {
    # ACM access control
    "ACM-1": "Access control mechanisms where assets are exposed (applicability)",
    "ACM-2": "Appropriate access control mechanisms",
    # AUM authentication
    "AUM-1-1": "Authentication for the access control mechanisms (applicability)",
    "AUM-1-2": "Authentication on network interfaces (applicability)",
    "AUM-2": "Appropriate authentication mechanisms",
    "AUM-3": "Authenticator validation",
    "AUM-4": "Changing authenticators",
    "AUM-5-1": "Passwords: unique or user-set, best-practice strength",
    "AUM-5-2": "Passwords: further requirements on password authentication",
    "AUM-6": "Brute-force protection",
    # SUM secure update
    "SUM-1": "Update mechanism for the software (applicability)",
    "SUM-2": "Secure updates",
    "SUM-3": "Automated updates",
    # SSM secure storage
    "SSM-1": "Secure storage of persistently stored assets (applicability)",
    "SSM-2": "Integrity protection of secure storage",
    "SSM-3": "Confidentiality protection of secure storage",
    # SCM secure communication
    "SCM-1": "Secure communication mechanisms for communicated assets (applicability)",
    "SCM-2": "Integrity and authenticity protection of communication",
    "SCM-3": "Confidentiality protection of communication",
    "SCM-4": "Replay protection of communication",
    # RLM resilience
    "RLM-1": "Resilience of network interfaces against denial of service",
    # NMM network monitoring, TCM traffic control (network equipment)
    "NMM-1": "Network monitoring (network equipment)",
    "TCM-1": "Traffic control (network equipment)",
    # CCK confidential cryptographic keys
    "CCK-1": "Appropriate confidential cryptographic keys",
    "CCK-2": "Generation of confidential cryptographic keys",
    "CCK-3": "No static default values for pre-installed keys",
    # GEC general equipment capabilities
    "GEC-1": "Up-to-date software without publicly known exploitable vulnerabilities",
    "GEC-2": "Limited exposure of services on network interfaces",
    "GEC-3": "Configuration of optional services and their interfaces",
    "GEC-4": "Documentation of exposed interfaces and services",
    "GEC-5": "No unnecessary external interfaces",
    "GEC-6": "Input validation",
    # CRY cryptography
    "CRY-1": "Best-practice cryptography",
}

FAMILIES = ("ACM", "AUM", "SUM", "SSM", "SCM", "RLM", "NMM", "TCM", "CCK", "GEC", "CRY")

# Requirements outside the scope of an end device: feature-like, but fixed by what the product is.
SCOPE_NOT_APPLICABLE: dict[str, str] = {
    "NMM-1": "network monitoring is required of network equipment (equipment that forwards traffic between "
             "networks); the product is an end device that forwards nothing",
    "TCM-1": "traffic control is required of network equipment (equipment that forwards traffic between "
             "networks); the product is an end device that forwards nothing",
}

# Requirements that apply only where the product has a feature of its declaration (features.json).
FEATURE_REQUIREMENTS: dict[str, list[str]] = {"passwords": ["AUM-5-1", "AUM-5-2"]}

_BROKER = "the lab broker stands in for the deployment's broker, an associated service"


def _full(pid: str) -> dict[str, str]:
    return {"id": pid, "strength": "full"}


def _partial(pid: str, reason: str) -> dict[str, str]:
    return {"id": pid, "strength": "partial", "reason": reason}


def _supporting(pid: str, reason: str) -> dict[str, str]:
    return {"id": pid, "strength": "supporting", "reason": reason}


# check ID -> EN 18031-1 claims. Merged into claims.CLAIMS under the baseline key, so that the EN 18031-1
# mapping reads in one place and the other baselines' entries stay as they are.
CLAIMS: dict[str, list[dict[str, str]]] = {
    "no-private-key-on-serial": [
        _partial("ACM-2", "the serial debug interface never gives the device key; its access control is "
                          "console-locked's evidence")],
    "console-locked": [
        _partial("ACM-2", "access to the serial REPL, the one local interface to the device's assets, is closed "
                          "once locked; JTAG is chip-security-fuses' evidence"),
        _supporting("GEC-5", "the UART stays, locked; whether each physical interface is needed is a design fact")],
    "serial-discloses-nothing-after-lock": [
        _supporting("ACM-2", "a locked serial interface prints its boot line and network events only")],
    "chip-security-fuses": [
        _partial("GEC-5", "the JTAG port is disabled in eFuse; the UART is console-locked's evidence"),
        _supporting("SSM-2", "secure boot verifies the booted image; the integrity of stored data is not read"),
        _supporting("SSM-3", "flash encryption on; NVS, where the keys are, is protected only with NVS "
                             "encryption, which is not read")],
    "commands-need-a-valid-signature": [
        _partial("ACM-2", "configuration over the serial console needs a command signed by the CA"),
        _partial("GEC-6", "forged, replayed, misdirected and malformed console commands are refused")],
    "invalid-commands-refused-over-mqtt": [
        _partial("ACM-2", "configuration over the network needs a command signed by the CA"),
        _partial("GEC-6", "forged, replayed, misdirected and malformed MQTT commands are refused"),
        _supporting("SCM-4", "replayed commands are refused by the application, above TLS")],
    "broker-requires-client-certificate": [_partial("AUM-2", _BROKER + ": clients authenticate with certificates")],
    "broker-tls-configuration": [_partial("SCM-2", _BROKER + ": its TLS configuration"),
                                 _partial("SCM-3", _BROKER + ": its TLS configuration")],
    "outages-lose-nothing": [
        _supporting("RLM-1", "network and power outages lose nothing; denial of service is not tested")],
    "hostile-broker-fuzzing-survived": [
        _partial("GEC-6", "malformed MQTT from an authenticated broker is refused"),
        _partial("RLM-1", "the device keeps working under malformed input from its broker; floods on its "
                          "network interface are not tested")],
    "telemetry-over-mutual-tls": [
        _partial("SCM-1", "telemetry and commands, the communicated assets, travel over mutual TLS"),
        _partial("SCM-2", "integrity and authenticity by mutual TLS; the versions and suites the device offers "
                          "are not inspected"),
        _partial("SCM-3", "confidentiality by TLS; the suites the device offers are not inspected"),
        _supporting("SCM-4", "TLS's record sequence protects against replay; not tested")],
    "rogue-brokers-refused": [
        _partial("SCM-2", "the broker's certificate is validated: an impostor and TLS 1.1 are refused"),
        _supporting("CRY-1", "TLS 1.1 is refused; the algorithms offered are not inspected")],
    "unsigned-or-foreign-updates-refused": [
        _partial("SUM-2", "unsigned, forged and foreign updates are refused; a good one installing is not shown "
                          "by this check"),
        _supporting("CRY-1", "the update signature's algorithm strength is a design fact, not tested")],
    "update-rollback-refused": [_partial("SUM-2", "an older release is refused (anti-rollback counter)")],
    "identity-certified-by-lab-ca": [
        _supporting("CCK-2", "the device authenticates with a key pair of its own, certified at provisioning; "
                             "where and how it was generated is a design fact")],
    "device-keys-unique": [
        _partial("CCK-3", "no key is shared among the boards and certificates the lab knows")],
    "no-default-or-shared-secrets": [
        _partial("CCK-3", "no key or credential literal in the firmware sources")],
    "no-listening-ports": [
        _partial("GEC-2", "no TCP or UDP port is open: no service is exposed on the network interface"),
        _supporting("AUM-1-2", "nothing listens, so no network interface needs authentication")],
    "connections-match-mud": [
        _supporting("GEC-4", "every flow the device starts is the one its MUD file documents")],
    "no-known-exploitable-vulnerabilities": [
        _partial("GEC-1", "the software components the SBOM names, against the advisory feed given; hardware "
                          "and the feed's completeness are not checked")],
}

# The restrictions of the OJ listing that matter for this product, and whether they bite here.
OJ_LISTING = {
    "act": "Commission Implementing Decision (EU) 2025/138 of 28 January 2025 amending Implementing Decision "
           "(EU) 2022/2191",
    "oj": "OJ L, 2025/138, 30.1.2025",
    "eli": "http://data.europa.eu/eli/dec_impl/2025/138/oj",
    "confirmed": "the Decision's reference and date against EUR-Lex (CELEX 32025D0138); the restrictions' "
                 "wording and clause numbers only through secondary sources (below), not against the Decision's "
                 "annex itself",
}

OJ_RESTRICTIONS: list[dict[str, Any]] = [
    {"topic": "passwords the user may choose not to set or use",
     "requirements": ["AUM-5-1", "AUM-5-2"],
     "clauses": "6.2.5.1 and 6.2.5.2 (as the sources below give them; unconfirmed against the Decision), read "
                "as AUM-5-1 and AUM-5-2 because clause 6.2 holds the authentication requirements (an inference)",
     "restriction": "no presumption of conformity for equipment that lets the user choose not to set or not to "
                    "use a password",
     "feature": "passwords",
     "sources": ["https://iotapproval.com/en-18031-standards-newly-harmonised-for-the-radio-equipment-directive-"
                 "but-theres-a-catch",
                 "https://www.graniteriverlabs.com/en-us/technical-blog/red-compliance-passwordless-harmonized-"
                 "standards",
                 "https://vde.com/tic-it/news/2025/01-cyber-security-red"]},
    {"topic": "secure update",
     "requirements": ["SUM-2", "SUM-3"],
     "clauses": "not confirmed",
     "restriction": "the sources place the restriction on secure updates in the listing of EN 18031-3 (Article "
                    "3(3)(f), equipment that handles money); no restriction on EN 18031-1's update requirements "
                    "could be confirmed",
     "feature": None,
     "sources": ["https://vde.com/tic-it/news/2025/01-cyber-security-red"]},
    {"topic": "informative parts",
     "requirements": [],
     "clauses": "the Rationale and Guidance parts of the requirements",
     "restriction": "they support the reading of a requirement and give no presumption of conformity "
                    "themselves: the assessment rests on the requirements and their decision trees",
     "feature": None,
     "sources": ["https://vde.com/tic-it/news/2025/01-cyber-security-red"]},
]


def restrictions(features: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The OJ listing's restrictions with what they mean for this product: `applies` is True where the product
    has the feature a restriction is about, False where its declaration says it has not, None where the
    harness cannot tell (no declaration, or a restriction no feature decides)."""
    out = []
    for r in OJ_RESTRICTIONS:
        entry = dict(r)
        decl = ((features or {}).get("features") or {}).get(r["feature"]) if r["feature"] else None
        if decl is None:
            entry["applies"] = None
            entry["for_this_product"] = ("for the manufacturer to judge" if r["feature"] is None or features
                                         else "no feature declaration: assume it applies")
        else:
            entry["applies"] = bool(decl["present"])
            entry["for_this_product"] = (
                "it applies: the product has the feature, so the presumption of conformity does not cover it "
                "where the user may skip it" if decl["present"] else
                f"it does not bite: the declaration says the feature is absent ({decl['detail']})")
        out.append(entry)
    return out
