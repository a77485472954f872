"""The conformance check catalogue, run by `sbd verify` as a pytest suite."""
from pathlib import Path

CHECKS_DIR = Path(__file__).parent
