"""The HTML report as a browser draws it: headless Chromium (Debian's chromium-headless-shell, which
`make setup` installs) renders a report of the whole catalogue in a 1280-pixel-wide window, and the page
must not scroll sideways. The report itself has no script; the test adds one to a copy, to read the
page's widths once it is laid out."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

from sbd_harness.release.vulnerabilities import evaluate
from sbd_harness.reports.claims import CLAIMS, claims_for
from sbd_harness.reports.features import load
from sbd_harness.reports.report import build_report, to_html

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium-headless-shell", "chromium")
PROBE = ('<script>window.addEventListener("load",()=>{document.body.setAttribute("data-probe",JSON.stringify('
         '{scroll:document.documentElement.scrollWidth,client:document.documentElement.clientWidth,'
         'inner:window.innerWidth,tables:document.querySelectorAll("table").length}))});</script>')
LONG = "x" * 300  # an unbroken word, as a hash or a path can be


def _browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    assert found, "no headless Chromium: make setup installs chromium-headless-shell (apt-get install it as root)"
    return found


def _render(page: str, tmp_path: Path, width: int) -> dict:
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    out = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900",
                          "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r'data-probe="([^"]*)"', out.stdout)
    assert m, out.stderr[-2000:]
    return json.loads(html.unescape(m.group(1)))


def _report() -> dict:
    checks = []
    for i, cid in enumerate(CLAIMS):
        meta = claims_for(cid)
        status = ("pass", "skip", "fail")[i % 3]
        evidence = {"path": LONG, "list": list(range(40))}
        if cid == "no-known-exploitable-vulnerabilities":  # its findings make a table of their own
            evidence = evaluate(ROOT / "firmware", ROOT / "tests/unit/data/advisories/refreshed.osv.json")
        checks.append({"id": cid, "title": f"{cid}: what it shows, at some length " * 2, "status": status,
                       "message": "" if status == "pass" else f"why: {LONG}", "duration_s": 1.5,
                       "evidence": evidence, "subject": meta["subject"],
                       "provisions": meta["provisions"]})
    board = {"name": "lab-" + "b" * 60, "kind": "emulated", "serial": "/dev/pts/3", "address": "198.18.0.5",
             "network": "loopback", "weakened_by_loopback": ["the device's ports share the host's: " + LONG]}
    return build_report(board, {"version": "0.1.0", "sha256": "ab" * 32, "files": 29}, checks,
                        notes=[LONG], features=load(ROOT / "firmware"),
                        context={"docs_url": "https://docs.example.invalid/", "broker_flaws": ["open-acl"]})


def test_the_html_report_fits_a_1280_pixel_window(tmp_path):
    page = to_html(_report())
    assert "<h2>Known vulnerabilities</h2>" in page and "Restriction on passwords" in page
    seen = _render(page, tmp_path, 1280)
    assert seen["tables"] >= 9  # counts, checks, a coverage table per baseline (six), known vulnerabilities
    assert seen["scroll"] <= seen["client"], f"the page scrolls sideways at 1280 px: {seen}"


def test_the_probe_sees_a_page_wider_than_the_window(tmp_path):
    """The measurement itself: a page forced wider than the window is caught."""
    wide = to_html(_report()).replace("</body>", '<div style="width:2000px">wide</div></body>')
    seen = _render(wide, tmp_path, 1280)
    assert seen["scroll"] > seen["client"]
