"""Reading the vulnerability disclosure policy and the support period.

The device's birth message points to them: `security_policy` (the published
address of SECURITY.md) and `support_until` (an ISO date). The firmware
names the address its documents are published under in `DOCS_URL`
(lib/sbd/version.py); the lab maps that prefix to a local folder: `--docs
DIR` (or SBD_DOCS_DIR), and for the reference build alone the project's
docs/ (`release/product.py`, `docs_folder`).

Both documents carry an "at a glance" Markdown table; the checks read its
rows by their first cell:

- SECURITY.md: `Contact` (a private route: an e-mail address, an https
  address or GitHub private vulnerability reporting; no placeholder),
  `Acknowledgement` and `Status updates` (each a number of days or weeks),
  and `Support period`, whose relative link names the support document
  (without one, the support period is read from SECURITY.md itself);
- the support document: `Security updates until` (an ISO date).

Provisions: ETSI EN 303 645 5.2-1, 5.3-13; UK PSTI Schedule 1 (2), (3);
EU CRA Annex I Part II (5), (6), Art 13(8).
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path, PurePosixPath
from typing import Any

from sbd_harness.errors import SbdError


class DocsError(SbdError, ValueError):
    """A document the device points to cannot be found where the lab looks for it."""


DOCS_URL_RE = re.compile(r'^DOCS_URL\s*=\s*"([^"]*)"', re.M)


def docs_url(version_py: str) -> str | None:
    """The DOCS_URL a firmware declares in its lib/sbd/version.py, if any."""
    m = DOCS_URL_RE.search(version_py)
    return m.group(1) if m else None


def resolve(url: str, prefix: str | None, folder: Path) -> Path:
    """The local file for a published address: the part after `prefix`, under `folder`.
    Without a prefix (a firmware that does not declare DOCS_URL), the file name alone."""
    if not isinstance(url, str) or not url.startswith("https://"):
        raise DocsError(f"{url!r} is not an https address")
    if prefix:
        if not url.startswith(prefix):
            raise DocsError(f"{url} is not under the firmware's DOCS_URL {prefix}")
        rel = url[len(prefix):]
    else:
        rel = url.rstrip("/").rsplit("/", 1)[-1]
    rel = rel.split("#", 1)[0].split("?", 1)[0]
    parts = PurePosixPath(rel).parts
    if not parts or any(p in ("..", ".") for p in parts) or rel.startswith("/"):
        raise DocsError(f"{url}: {rel!r} is not a file under the published folder")
    return folder.joinpath(*parts)


def glance(text: str) -> dict[str, str]:
    """Rows of the document's Markdown tables: first cell (lower case, without
    emphasis) -> second cell. The first row with a given name wins."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= set("-: "):
            continue
        rows.setdefault(cells[0].replace("*", "").strip().lower(), cells[1])
    return rows


PLACEHOLDER_RE = re.compile(
    r"<[^>]*>|\bexample\.(com|org|net)\b|\.example\b|\.invalid\b|\.test\b|\.localhost\b|\blocalhost\b"
    r"|\bTODO\b|\bTBD\b|\bfill(ed)? in\b|\byour[- ](company|domain|e-?mail|address)\b|OWNER/REPO|xxx",
    re.I)
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
URL_RE = re.compile(r"https://[^\s)\]>]+")
PVR_RE = re.compile(r"private vulnerability reporting", re.I)
PERIOD_RE = re.compile(r"\b(\d+)\s*(working |business |calendar )?(day|week)s?\b", re.I)
DATE_RE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")


def _days(cell: str) -> int | None:
    m = PERIOD_RE.search(cell)
    if not m or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)) * (7 if m.group(3).lower() == "week" else 1)


def read_policy(text: str) -> tuple[dict[str, Any], list[str]]:
    """What SECURITY.md commits to, and what it lacks."""
    rows = glance(text)
    found: dict[str, Any] = {}
    problems: list[str] = []
    contact = rows.get("contact", "")
    found["contact"] = contact
    routes = EMAIL_RE.findall(contact) or URL_RE.findall(contact) or PVR_RE.findall(contact)
    if not contact:
        problems.append("no Contact row: where to report a vulnerability")
    elif PLACEHOLDER_RE.search(contact):
        problems.append(f"the contact is a placeholder, not a route anyone reads: {contact!r}")
    elif not routes:
        problems.append(f"the contact names no e-mail address, https address or private reporting route: {contact!r}")
    for key, label in (("acknowledgement", "Acknowledgement"), ("status updates", "Status updates")):
        cell = rows.get(key)
        days = _days(cell) if cell else None
        found[key.replace(" ", "_") + "_days"] = days
        if cell is None:
            problems.append(f"no {label} row: the timeline for it")
        elif days is None:
            problems.append(f"the {label} row states no number of days or weeks: {cell!r}")
    link = LINK_RE.search(rows.get("support period", ""))
    found["support_document"] = link.group(1) if link else None
    return found, problems


def support_document(policy_path: Path, found: dict[str, Any]) -> Path:
    """The support document SECURITY.md links to (relative to it), or SECURITY.md itself."""
    link = found.get("support_document")
    if not link:
        return policy_path
    rel = link.split("#", 1)[0]
    if "://" in rel or rel.startswith("/") or ".." in PurePosixPath(rel).parts:
        raise DocsError(f"{policy_path.name}: the support period links to {link!r}, not a document beside it")
    return policy_path.parent / rel


def _row_date(text: str, row: str, problems: list[str], missing: str, what: str) -> dt.date | None:
    """The ISO date in the at-a-glance row `row`; None, with the reason appended to `problems`, when
    the row is missing (`missing`), holds no ISO date, or holds one that is no date (`what` names it)."""
    cell = glance(text).get(row)
    m = DATE_RE.search(cell or "")
    if cell is None:
        problems.append(missing)
    elif not m:
        problems.append(f"{what} is not an ISO date (YYYY-MM-DD): {cell!r}")
    else:
        try:
            return dt.date.fromisoformat(m.group(1))
        except ValueError:
            problems.append(f"{what} {m.group(1)} is not a date")
    return None


def read_support(text: str, device_date: str | None, today: dt.date) -> tuple[dict[str, Any], list[str]]:
    """The declared end of support, checked against the device's and today's date."""
    found: dict[str, Any] = {"device_support_until": device_date}
    problems: list[str] = []
    declared = _row_date(text, "security updates until", problems,
                         missing="no 'Security updates until' row: the end date of the support period",
                         what="the support period's end")
    found["declared_support_until"] = declared.isoformat() if declared else None
    if declared is not None:
        if declared < today:
            problems.append(f"the support period ended on {declared} (today is {today})")
        if device_date != declared.isoformat():
            problems.append(f"the device says support_until {device_date!r}, the document {declared}")
    return found, problems


MIN_SUPPORT_YEARS = 5  # EU CRA Art. 13(8), unless the product is expected to be in use for less


def years_after(day: dt.date, years: int) -> dt.date:
    """The same day `years` later (28 February for a 29 February that has none)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def read_support_length(text: str, device_date: str | None) -> tuple[dict[str, Any], list[str]]:
    """The support period's length: from the date the declaration says the product was first placed on
    the market (its 'Placed on the market' row) to the end date the device states, which must be a full
    ISO date (day, month and year: EU CRA Art. 13(19) asks for at least the month and year)."""
    found: dict[str, Any] = {"device_support_until": device_date}
    problems: list[str] = []
    placed = _row_date(text, "placed on the market", problems,
                       missing="no 'Placed on the market' row: the support period's length cannot be judged",
                       what="the date of placing on the market")
    end = None
    try:
        end = dt.date.fromisoformat(str(device_date))
    except ValueError:
        problems.append(f"the device's support_until {device_date!r} is not a full ISO date (YYYY-MM-DD)")
    found["placed_on_market"] = placed.isoformat() if placed else None
    if placed and end:
        needed = years_after(placed, MIN_SUPPORT_YEARS)
        found.update({"support_years": round((end - placed).days / 365.25, 2), "needed_until": needed.isoformat()})
        if end < needed:
            problems.append(f"support ends on {end}, {found['support_years']} years after the product was placed on "
                            f"the market ({placed}): at least {MIN_SUPPORT_YEARS} years, until {needed}, are needed")
    return found, problems
