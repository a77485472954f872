"""What each check of the catalogue shows, provision by provision, and how strongly.

One place for the whole mapping, so that an assessor reads it in one file and a
change to a check's claims is one reviewed line. A claim is an object:

- `full`: the check tests everything the provision asks of this product; only
  full claims whose checks all passed make a provision "verified";
- `partial`: the check tests part of it; `reason` says in one line what is
  left out (required);
- `supporting`: the check gives evidence that bears on the provision without
  testing it; it never makes a provision verified.

`subject` says what the check is evidence about: `device` (the product under
test), or `associated_service` (the lab broker, standing in for the reference
deployment's MQTT broker: evidence about a service the device relies on,
reported apart, never counted in the device's coverage).

Every ID comes from `provisions.py`, which holds only the IDs listed in the
shared baselines reference; `tests/unit/test_claims.py` checks that, that every
partial claim has a reason, and that every check of the catalogue has an entry
here. A check's `sbd_check` marker names only its ID and title.
"""
from __future__ import annotations

from typing import Any

from sbd_harness.reports.en_18031 import BASELINE as EN_18031_1, CLAIMS as EN_18031_CLAIMS
from sbd_harness.reports.provisions import CATALOGUE

STRENGTHS = ("full", "partial", "supporting")
SUBJECTS = ("device", "associated_service")

Claim = dict[str, str]


def full(pid: str) -> Claim:
    return {"id": pid, "strength": "full"}


def partial(pid: str, reason: str) -> Claim:
    return {"id": pid, "strength": "partial", "reason": reason}


def supporting(pid: str, reason: str = "") -> Claim:
    claim = {"id": pid, "strength": "supporting"}
    if reason:
        claim["reason"] = reason
    return claim


EN, NIST, CRA, PSTI, ISVS = "etsi_en_303_645", "nist_ir_8259a", "eu_cra", "uk_psti", "owasp_isvs"
BROKER = "the lab broker stands in for the deployment's broker, an associated service"

CLAIMS: dict[str, dict[str, Any]] = {
    # The boot line and the firmware on the board ------------------------------------------------
    "boot-line-identifies-firmware": {"subject": "device", EN: [
        partial("5.3-16", "model and version machine-readable on the serial boot line; their recognisability on "
                          "the product and its packaging is not checked")],
        NIST: [partial("1", "the logical identifier; a physical identifier is not checked"),
               partial("6", "the security state reported at boot; telling normal from degraded is not checked")]},
    "firmware-matches-build": {"subject": "device", CRA: [
        partial("I(2)(f)", "the integrity of the programs on the device against the build; of data, commands and "
                           "configuration, and the reporting of corruption, not checked here")]},
    # Known vulnerabilities of the components the SBOM names --------------------------------------
    "no-known-exploitable-vulnerabilities": {"subject": "device", CRA: [
        partial("I(2)(a)", "the software components the SBOM names (firmware, MicroPython, ESP-IDF, mbedTLS, "
                           "lwIP) against the advisory feed given, with the manufacturer's VEX statements; the "
                           "feed's completeness and the statements' truth are the manufacturer's")],
        EN: [supporting("5.2-3", "known vulnerabilities are checked at each run; fixing them is the "
                                 "manufacturer's")]},
    # The debug interface (the UART console) ------------------------------------------------------
    "no-private-key-on-serial": {"subject": "device", EN: [
        partial("5.6-4A", "the serial debug interface never carries the private key; whether it is disabled or "
                          "access-controlled is console-locked's evidence")],
        NIST: [supporting("3", "the device key does not leave through the serial port")],
        CRA: [partial("I(2)(e)", "confidentiality of the device key on the serial interface only")],
        ISVS: [partial("3.1.3", "what the serial debug interface discloses, not whether it is enabled")]},
    "console-locked": {"subject": "device", EN: [
        partial("5.6-4A", "the serial REPL is closed once locked; JTAG is chip-security-fuses' evidence")],
        ISVS: [partial("3.1.3", "the serial REPL only; JTAG is read from eFuses on a real chip")],
        NIST: [partial("4", "logical access through the serial interface only")],
        CRA: [partial("I(2)(d)", "unauthorised access through the serial console only"),
              partial("I(2)(j)", "the serial console's attack surface only")]},
    "serial-discloses-nothing-after-lock": {"subject": "device", EN: [
        partial("5.6-4A", "what a locked debug interface still prints discloses no secret; that it is locked "
                          "is console-locked's evidence")],
        CRA: [partial("I(2)(e)", "confidentiality of what the serial port prints only"),
              supporting("I(2)(j)", "the locked console prints its boot line and network events only")],
        ISVS: [supporting("3.1.3", "what a locked serial debug interface discloses")]},
    # Published documents the device points to ---------------------------------------------------
    "vulnerability-disclosure-policy-published": {"subject": "device", EN: [full("5.2-1")],
        PSTI: [full("Sch1(2)")],
        CRA: [partial("II(5)", "a policy with a contact and timelines is published and the device points to it; "
                               "its coordinated-disclosure content is for a person to judge"),
              full("II(6)")]},
    "support-period-declared": {"subject": "device", EN: [full("5.3-13")], PSTI: [full("Sch1(3)")],
        CRA: [partial("Art13(8)", "the end date is stated, agrees with the published one and has not passed; "
                                  "five years from placing on the market is support-period-at-least-five-years'")]},
    # The chip -----------------------------------------------------------------------------------
    "chip-security-fuses": {"subject": "device", EN: [
        partial("5.6-4A", "JTAG disabled in eFuse; the serial console is console-locked's evidence"),
        partial("5.7-1", "secure boot is enabled in eFuse; which images it verifies is not checked"),
        supporting("5.4-1", "flash encryption on; NVS, where the keys are, is protected only with NVS "
                            "encryption, which is not read")],
        NIST: [supporting("3", "flash encryption on"), partial("4", "JTAG disabled")],
        CRA: [supporting("I(2)(e)", "flash encryption on"),
              partial("I(2)(f)", "secure boot enabled: the integrity of the booted program")],
        ISVS: [partial("3.1.3", "JTAG disabled in eFuse"), partial("3.1.4", "secure boot enabled in eFuse"),
               partial("5.1.1", "the JTAG port disabled; the UART is console-locked's evidence")]},
    # Commands ----------------------------------------------------------------------------------
    "commands-need-a-valid-signature": {"subject": "device", EN: [
        partial("5.13-1A", "commands on the serial console, the one user interface: forged, replayed, misdirected "
                           "and malformed ones refused")],
        NIST: [partial("2", "configuration changed only by signed console commands")],
        CRA: [partial("I(2)(d)", "unauthorised commands on the serial console")]},
    "invalid-commands-refused-over-mqtt": {"subject": "device", EN: [
        partial("5.13-1B", "the MQTT command topic; other network input is hostile-broker-fuzzing-survived's"),
        full("5.5-5")],
        NIST: [partial("2", "configuration changed over the network only by signed commands")],
        CRA: [partial("I(2)(d)", "unauthorised commands over MQTT"),
              partial("I(2)(f)", "the integrity of commands")]},
    # The lab broker: evidence about an associated service ------------------------------------------
    "broker-requires-client-certificate": {"subject": "associated_service", EN: [
        partial("5.5-4", BROKER + ": clients must authenticate to reach it")],
        NIST: [supporting("4", BROKER)], CRA: [partial("I(2)(d)", BROKER)]},
    "broker-refuses-revoked-certificates": {"subject": "associated_service", EN: [
        partial("5.5-4", BROKER + ": a revoked identity is refused"),
        partial("5.5-8", BROKER + ": device certificates can be revoked; other secrets' lifecycle not checked")],
        NIST: [supporting("4", BROKER)], CRA: [partial("I(2)(d)", BROKER)],
        ISVS: [partial("2.1.11", BROKER + ": revocation through the lab CA's CRL")]},
    "broker-confines-each-identity": {"subject": "associated_service", EN: [
        partial("5.5-4", BROKER + ": each identity reaches its own topics only")],
        NIST: [partial("4", BROKER)], CRA: [partial("I(2)(d)", BROKER)],
        ISVS: [partial("4.2.2", BROKER + ": MQTT authorisation per identity")]},
    "broker-tls-configuration": {"subject": "associated_service", EN: [
        partial("5.5-1", BROKER + ": its TLS configuration, not the device's client")],
        NIST: [supporting("3", BROKER)], CRA: [partial("I(2)(e)", BROKER)],
        ISVS: [partial("4.1.1", BROKER), partial("4.1.2", BROKER)]},
    # Resilience --------------------------------------------------------------------------------
    "outages-lose-nothing": {"subject": "device", EN: [
        full("5.9-1"),
        partial("5.9-2", "telemetry is kept and queued through outages; the device declares no other local function"),
        full("5.9-3")],
        CRA: [partial("I(2)(h)", "availability through outages; resilience to denial of service not checked")]},
    "hostile-broker-fuzzing-survived": {"subject": "device", EN: [
        partial("5.13-1B", "malformed MQTT from an authenticated broker"),
        supporting("5.9-1", "the device keeps publishing after hostile input")],
        CRA: [partial("I(2)(h)", "availability under malformed input from the broker")]},
    # Communication -----------------------------------------------------------------------------
    "telemetry-over-mutual-tls": {"subject": "device", EN: [
        partial("5.5-1", "the device connects over mutual TLS; the versions and suites it offers are "
                         "tls-client-offers-strong-crypto's evidence"),
        supporting("5.8-1", "all telemetry travels inside the mutual-TLS connection")],
        NIST: [partial("3", "data in transit only")], CRA: [partial("I(2)(e)", "confidentiality in transit only")],
        ISVS: [partial("4.1.1", "TLS is used; the versions the device offers are tls-client-offers-strong-crypto's "
                                "evidence")]},
    "rogue-brokers-refused": {"subject": "device", EN: [
        partial("5.5-1", "certificate validation and the refusal of TLS 1.1"),
        partial("5.6-2", "the device sends nothing to a broker that fails authentication"),
        supporting("5.8-1", "nothing reaches an unauthenticated broker")],
        NIST: [partial("3", "data in transit only")],
        CRA: [partial("I(2)(d)", "impersonation of the service refused"),
              partial("I(2)(e)", "nothing sent to an impostor")],
        ISVS: [full("4.1.3"), partial("4.1.1", "TLS 1.1 refused; other versions and suites not inspected"),
               partial("4.1.5", "trust pinned to the lab CA, not to one certificate")]},
    # Updates -----------------------------------------------------------------------------------
    "unsigned-or-foreign-updates-refused": {"subject": "device", EN: [
        partial("5.3-2", "bad updates are refused; a good one installing is not shown by this check"),
        partial("5.3-7", "the signature check refuses forged and foreign signatures; the algorithms' strength is "
                         "a design fact, not tested"),
        full("5.3-9"), full("5.3-10")],
        NIST: [partial("5", "verify and authenticate before install; updating itself not shown")],
        CRA: [partial("I(2)(c)", "refusal of unauthorised updates"), partial("I(2)(f)", "integrity of programs")],
        ISVS: [full("3.4.3")]},
    "update-rollback-refused": {"subject": "device", EN: [
        partial("5.3-2", "the anti-rollback counter of the installation mechanism")],
        NIST: [supporting("5", "an older release is refused")],
        CRA: [partial("I(2)(c)", "downgrades refused")], ISVS: [full("3.4.6")]},
    "bad-app-images-refused": {"subject": "device", EN: [
        partial("5.3-2", "bad whole-firmware updates are refused; a good one installing is the next check's"),
        partial("5.3-9", "an app image that is not the signed one, another project's, a truncated one and a "
                         "lower secure version are refused")],
        NIST: [partial("5", "verify before install, for the whole firmware")],
        CRA: [partial("I(2)(c)", "refusal of unauthorised and downgraded firmware"),
              partial("I(2)(f)", "integrity of the firmware image")],
        ISVS: [partial("3.4.3", "the image's digest is signed"), partial("3.4.6", "secure version of the image")]},
    "app-image-updates-commit-or-roll-back": {"subject": "device", EN: [
        partial("5.3-2", "trial boot, commit after the health check, rollback otherwise; on the emulated board "
                         "the image is checked and booted, not run")],
        NIST: [partial("5", "the whole firmware is updatable, with rollback")],
        CRA: [partial("I(2)(c)", "security updates for every component")],
        ISVS: [partial("3.4.7", "the bootloader falls back to the committed image"),
               partial("3.4.6", "a lower secure version refused after a commit")]},
    # Identity ----------------------------------------------------------------------------------
    "identity-certified-by-lab-ca": {"subject": "device", EN: [
        partial("5.1-3", "the device authenticates with a certified key of its own; the algorithms' strength is "
                         "a design fact, not tested"),
        partial("5.4-4", "the service-communication key is the device's own; update verification uses public "
                         "keys, common by design")],
        NIST: [partial("1", "a logical identity bound to a certificate")],
        CRA: [supporting("I(2)(d)", "the device's identity to its service")]},
    "device-keys-unique": {"subject": "device", EN: [
        partial("5.4-4", "unique among the boards and certificates the lab knows")],
        NIST: [partial("1", "unique among the boards the lab knows")],
        ISVS: [partial("2.1.10", "unique among the boards and certificates the lab knows")]},
    "no-default-or-shared-secrets": {"subject": "device", EN: [
        supporting("5.1-1", "no password literal in the firmware image"),
        partial("5.4-3", "a scan of the firmware sources for credential-named literals and shared keys")],
        PSTI: [supporting("Sch1(1)", "no password literal in the firmware image")],
        ISVS: [partial("2.1.9", "a scan of the firmware sources"),
               partial("2.1.10", "keys compared among the emulated boards the lab runs")],
        CRA: [supporting("I(2)(b)", "no default secret shipped")]},
    "device-id-from-hardware": {"subject": "device", NIST: [
        partial("1", "the logical identifier comes from the chip's unique ID")]},
    # Erasure -----------------------------------------------------------------------------------
    "factory-reset-erases-identity": {"subject": "device", EN: [full("5.11-1")],
        NIST: [partial("2", "restore to a secure default"), partial("3", "data made inaccessible on the device")],
        CRA: [full("I(2)(m)"), partial("I(2)(b)", "the reset to the original state; the secure defaults are other "
                                                  "checks' evidence")]},
    # Attack surface ----------------------------------------------------------------------------
    "no-listening-ports": {"subject": "device", EN: [
        partial("5.6-1", "network services: no TCP or UDP port open; Wi-Fi access point and Bluetooth not inspected"),
        partial("5.6-5", "no network service offered"),
        supporting("5.6-2", "no unauthenticated service to disclose anything"),
        partial("5.5-4", "nothing listens; functions reached over MQTT are invalid-commands-refused-over-mqtt's "
                         "evidence")],
        NIST: [partial("4", "network interfaces: nothing listens")],
        CRA: [partial("I(2)(j)", "network services only")]},
    "connections-match-mud": {"subject": "device", EN: [
        partial("5.6-5", "every flow the device starts is declared and needed")],
        CRA: [partial("I(2)(i)", "the device talks only to what its MUD file declares"),
              partial("I(2)(j)", "outbound flows only")]},
    # Device evidence added for what the review found missing -----------------------------------
    "tls-client-offers-strong-crypto": {"subject": "device", EN: [
        partial("5.5-1", "the versions, suites and signature algorithms the device offers and its refusal of weak "
                         "suites; certificate validation is rogue-brokers-refused's evidence")],
        NIST: [partial("3", "data in transit: the device's TLS offer")],
        CRA: [partial("I(2)(e)", "the strength of the device's TLS in transit")],
        ISVS: [partial("4.1.1", "the versions the device offers; TLS 1.1 refused is rogue-brokers-refused's"),
               partial("4.1.2", "the suites and signature algorithms the device offers, and weak suites refused")]},
    "mqtt-connect-has-no-password": {"subject": "device", EN: [
        partial("5.1-3", "the device authenticates to its broker with its certificate alone: no password is sent"),
        supporting("5.4-3", "no shared password crosses the network")],
        PSTI: [supporting("Sch1(1)", "no password in the device's MQTT CONNECT")],
        ISVS: [supporting("2.1.9", "no credential in the device's MQTT CONNECT")]},
    "only-declared-interfaces-on": {"subject": "device", EN: [
        partial("5.6-1", "the radio interfaces as the device's port reports them (Wi-Fi station, access point, "
                         "Bluetooth) against the declared ones; not observed over the air")],
        NIST: [partial("4", "radio interfaces not declared are off")],
        CRA: [partial("I(2)(j)", "radio interfaces only")]},
    "support-period-at-least-five-years": {"subject": "device", CRA: [
        partial("Art13(8)", "at least five years from the declared placing on the market; whether it reflects the "
                            "time the product is expected to be in use is for a person to judge")],
        EN: [supporting("5.3-13", "the end date the device states is a full date")],
        PSTI: [supporting("Sch1(3)", "the end date the device states is a full date")]},
    "telemetry-matches-data-inventory": {"subject": "device", CRA: [
        partial("I(2)(g)", "the fields the device sends match its declared data inventory; whether each is needed "
                           "is for a person to judge")],
        EN: [partial("6-4", "telemetry fields against the declared inventory")]},
    "keys-at-rest-protected": {"subject": "device", EN: [
        partial("5.4-1", "the device's private key in NVS, read back from the flash as an attacker with the board "
                         "would; protection of the eFuse keys themselves is not assessed")],
        NIST: [partial("3", "data at rest: the device key")],
        CRA: [partial("I(2)(e)", "confidentiality of the device key at rest")]},
    "signed-update-installs-and-commits": {"subject": "device", EN: [
        partial("5.3-2", "a valid signed update installs, its trial commits and the device reports the new version; "
                         "power cuts during it are the test suite's evidence"),
        partial("5.3-1", "the application's files are updated; MicroPython itself needs a new build by cable")],
        NIST: [partial("5", "the device updates itself with a verified update")],
        CRA: [partial("I(2)(c)", "a security update installs; automatic delivery and opt-out are not checked")],
        ISVS: [supporting("3.4.3", "the update installed is the signed one")]},
    "changed-file-caught-at-boot": {"subject": "device", EN: [
        partial("5.7-1", "the update slot that runs is verified against its signed manifest at every boot; the "
                         "factory image and MicroPython are not (no hardware secure boot on the official build)"),
        partial("5.7-2", "the change is reported to the broker and the verified factory image runs instead; "
                         "networking is not limited to alerting")],
        NIST: [partial("6", "a changed program file is reported as an incident")],
        CRA: [partial("I(2)(f)", "the integrity of the programs in the update slot, with corruption reported")],
        ISVS: [partial("3.1.4", "the update slot verified at boot, not the boot chain")]},
}

# EN 18031-1's claims are kept in en_18031.py, with the requirement IDs and how far they were confirmed;
# merged here so that every check's claims are read from this one table.
for _check, _items in EN_18031_CLAIMS.items():
    if _check in CLAIMS:
        CLAIMS[_check][EN_18031_1] = [dict(c) for c in _items]


def claims_for(check_id: str) -> dict[str, Any] | None:
    """A catalogue check's claims: subject and, per baseline, a list of claim objects."""
    entry = CLAIMS.get(check_id)
    if entry is None:
        return None
    return {"subject": entry["subject"], "provisions": {b: [dict(c) for c in entry.get(b, [])] for b in CATALOGUE}}


def normalise(provisions: dict[str, list[Any]]) -> dict[str, list[Claim]]:
    """Claims from an `sbd_check` marker of a user's own suite: an object as above, or a bare ID, which counts
    as `supporting` (a check that does not say how strongly it covers a provision never verifies it)."""
    out: dict[str, list[Claim]] = {}
    for baseline, items in provisions.items():
        out[baseline] = [dict(i) if isinstance(i, dict) else supporting(str(i), "strength not declared")
                         for i in items]
    return out


def problems(claims: dict[str, list[Any]]) -> list[str]:
    """What is wrong with a check's claims: unknown baselines or IDs, unknown strengths, a partial without a
    reason."""
    bad = []
    for baseline, items in claims.items():
        known = CATALOGUE.get(baseline)
        if known is None:
            bad.append(f"{baseline}: unknown baseline")
            continue
        for c in items:
            if not isinstance(c, dict) or "id" not in c:
                bad.append(f"{baseline}: {c!r} is not a claim object")
                continue
            if c["id"] not in known:
                bad.append(f"{baseline}: {c['id']}")
            if c.get("strength") not in STRENGTHS:
                bad.append(f"{baseline} {c['id']}: strength {c.get('strength')!r} is not one of {STRENGTHS}")
            if c.get("strength") == "partial" and not str(c.get("reason", "")).strip():
                bad.append(f"{baseline} {c['id']}: a partial claim needs a reason")
    return bad

