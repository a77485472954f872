# What this firmware is. Provisions: ETSI EN 303 645 5.3-16 (model
# designation clearly recognisable); NIST IR 8259A 1 (device identification).
VERSION = "0.0.9"  # broken variant: an older build than the one verified
MODEL = "sbd-reference-esp32"
PROFILE = "reference"  # the insecure lab build says "insecure-lab" here
