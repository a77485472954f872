# What this firmware is. Provisions: ETSI EN 303 645 5.3-16 (model
# designation clearly recognisable); NIST IR 8259A 1 (device identification).
VERSION = "0.1.0"
MODEL = "sbd-reference-esp32"
PROFILE = "reference"  # `sbd flash --profile insecure` builds say "insecure" here

# Where the vulnerability disclosure policy and the support period are
# published, and the end of that support period. The birth message carries
# both, so whoever runs the device can find them. Provisions: ETSI EN 303 645
# 5.2-1 (public vulnerability disclosure policy), 5.3-13 (defined support
# period published); UK PSTI Schedule 1 (2), (3); EU CRA Annex I Part II (5),
# (6) and Art 13(8). A product's own build sets DOCS_URL to where it publishes
# its docs/ folder (".invalid", RFC 2606: the reference has no such server)
# and SUPPORT_UNTIL to the end date it commits to in docs/support.md.
DOCS_URL = "https://docs.example.invalid/sbd-reference-esp32/"
SECURITY_POLICY = DOCS_URL + "SECURITY.md"
SUPPORT_UNTIL = "2031-12-31"  # ISO date: security updates until the end of this day
