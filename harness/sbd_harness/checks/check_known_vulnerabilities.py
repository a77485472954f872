"""No known exploitable vulnerability is left open in what runs on the device.

The components under the application (the firmware's platform.json: MicroPython,
ESP-IDF, mbedTLS, lwIP, with exact versions) are looked up in an advisory feed in
OSV format (the firmware's advisories.osv.json, a snapshot the manufacturer
refreshes, or --sbd-advisories FILE); each known vulnerability carries the
manufacturer's VEX status (vex.json beside it, then --sbd-vex FILE). The check
fails while one is `affected`. It needs no board: it reads the build's
declarations (release/vulnerabilities.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from sbd_harness.paths import firmware_dir
from sbd_harness.release.vulnerabilities import VulnerabilityDataError, evaluate


@pytest.mark.sbd_check(
    id="no-known-exploitable-vulnerabilities",
    title="No known vulnerability of the firmware's platform (MicroPython, ESP-IDF, mbedTLS, lwIP) is left "
          "affected: each advisory of the feed is fixed, or not affected with a stated reason")
def check_no_known_exploitable_vulnerabilities(pytestconfig, sbd_bundle, sbd_evidence):
    source = Path(sbd_bundle.source) if sbd_bundle.source else firmware_dir()
    feed = pytestconfig.getoption("--sbd-advisories")
    try:
        result = evaluate(source, Path(feed) if feed else None, [Path(p) for p in pytestconfig.getoption("--sbd-vex")])
    except VulnerabilityDataError as exc:
        raise AssertionError(str(exc)) from None
    sbd_evidence.update(result)
    open_ = result["open"]
    assert not open_, (f"{len(open_)} known vulnerabilit{'y' if len(open_) == 1 else 'ies'} left affected: "
                       + "; ".join(f"{v['id']} in {v['component']} {v['version']}"
                                   + (f" (fixed in {', '.join(v['fixed_in'])})" if v["fixed_in"] else "")
                                   for v in open_)
                       + ": update the component, or state in the VEX file why the product is not affected")
