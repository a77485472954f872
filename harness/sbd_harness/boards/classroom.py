"""A class of emulated boards on one machine: started together, seen at a glance.

`start_many` powers on many boards with a bounded number starting at a time (a
start is mostly the CPU's first boot, so more at once only queue for the cores).
`view` reads one board's state without talking to it: the state folder
(running, failed), the flash image's NVS (provisioned, locked, as the firmware
decides them in sbd/identity.py and sbd/state.py), the supervisor's record of
the firmware's JSON lines (events.json: online, last telemetry) and the last
`sbd verify` report written for it. Nothing here starts a broker or opens the
serial port, so a trainer can watch a class while the students work.
"""
from __future__ import annotations

import fnmatch
import html
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from sbd_harness.boards.base import BoardError
from sbd_harness.boards.emulated import EmulatedBoard, check_name

CLASS_MAX = 128  # boards one command starts: the bench's capacity run stops there too
START_JOBS = 4   # boards starting at once by default


def class_names(prefix: str, count: int) -> list[str]:
    """PREFIX-1 .. PREFIX-COUNT, each a valid board name; BoardError otherwise."""
    if not 1 <= count <= CLASS_MAX:
        raise BoardError(f"--count {count}: give 1 to {CLASS_MAX} boards")
    names = [f"{prefix}-{i}" for i in range(1, count + 1)]
    check_name(prefix)
    check_name(names[-1])  # the longest: a prefix near the 32-character limit fails here
    return names


def start_many(names: list[str], jobs: int = START_JOBS, timeout: float = 60,
               on_done: Callable[[str, dict[str, Any] | None, str | None], None] | None = None
               ) -> dict[str, dict[str, Any] | str]:
    """Starts every board in `names` (created on first use), at most `jobs` at a time. Returns
    {name: its description, or the error text}; one board's failure does not stop the others.
    `on_done(name, description, error)` is called as each finishes."""
    for name in names:
        check_name(name)
    if len(set(names)) != len(names):
        raise BoardError("a board is named twice: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))
    if not 1 <= jobs <= CLASS_MAX:
        raise BoardError(f"--jobs {jobs}: give 1 to {CLASS_MAX}")

    def one(name: str) -> tuple[str, dict[str, Any] | None, str | None]:
        try:
            desc, err = EmulatedBoard(name).start(timeout=timeout), None
        except BoardError as exc:
            desc, err = None, str(exc)
        if on_done is not None:
            on_done(name, desc, err)
        return name, desc, err

    with ThreadPoolExecutor(max_workers=min(jobs, len(names)) or 1, thread_name_prefix="sbd-start") as pool:
        results = list(pool.map(one, names))
    return {name: desc if err is None else err for name, desc, err in results}


# the trainer's view ---------------------------------------------------------------------------
def boards(pattern: str | None = None) -> list[EmulatedBoard]:
    """Every emulated board, or those whose name matches the shell-style `pattern` (`class-*`)."""
    every = EmulatedBoard.all()
    if pattern is None:
        return every
    if not any(c in pattern for c in "*?["):
        return [b for b in every if b.name == pattern]
    return [b for b in every if fnmatch.fnmatchcase(b.name, pattern)]


def _flash_state(board: EmulatedBoard) -> tuple[bool | None, bool | None]:
    """(provisioned, locked) from the NVS in the flash image: a certificate stored, and the lock
    flag set on a provisioned device; (None, None) when the image cannot be read."""
    from sbd_harness.emulator.nvs_reader import read_store
    try:
        store = read_store(board.flash_image().read_partition("nvs"))
    except (OSError, ValueError, KeyError, IndexError, BoardError):
        return None, None
    provisioned = ("sbd", "cert") in store
    return provisioned, provisioned and store.get(("sbd", "locked")) == 1


def last_verify(folder: Path) -> dict[str, Any] | None:
    """The last `sbd verify` of a board, from its report folder (cli/verify.py: report.json for a full
    run, report.selected.json for a run of a selection, -k or --check): the newer of the two, its
    verdict, counts, failing checks, every check's status and when; None before any run."""
    from sbd_harness.reports.report import verdict
    found = []
    for name, selection in (("report.json", False), ("report.selected.json", True)):
        try:
            found.append((folder.joinpath(name).stat().st_mtime, selection, folder / name))
        except OSError:
            continue
    if not found:
        return None
    when, selection, path = max(found)
    base = {"time": when, "path": str(path), "selection": selection}
    try:
        data = json.loads(path.read_text())
        return {**base, "verdict": verdict(data), "summary": data["summary"],
                "failed": [c["id"] for c in data["checks"] if c["status"] in ("fail", "error")],
                "checks": {c["id"]: c["status"] for c in data["checks"]}}
    except (OSError, ValueError, KeyError, TypeError):
        return {**base, "verdict": "unreadable report", "summary": {}, "failed": [], "checks": {}}


def view(board: EmulatedBoard, reports: Path | None = None) -> dict[str, Any]:
    """One board at a glance: state (running, stopped, failed), provisioned, locked, online, the last
    telemetry the broker acknowledged (seq and host time), and the last verify result in `reports`,
    the board's report folder."""
    running = board.is_running()
    failure = board.state.dir / "failure.txt"
    state = "running" if running else "failed" if failure.exists() else "stopped"
    provisioned, locked = _flash_state(board)
    events = board.state.read_events()
    latest = events.get("latest")
    sent = events.get("sent") or {}
    return {
        "name": board.name,
        "state": state,
        "failure": failure.read_text().strip() if state == "failed" else None,
        "provisioned": provisioned,
        "locked": locked,
        # connected, or telemetry acknowledged since: nothing of a boot or a failure after it
        "online": running and latest in ("connected", "sent"),
        "online_since": (events.get("connected") or {}).get("time") if running and latest in ("connected", "sent") else None,
        "last_telemetry": {"seq": sent["line"].get("seq"), "time": sent["time"]} if sent else None,
        "last_verify": last_verify(reports) if reports is not None else None,
    }


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    s = max(0, int(now - t))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def _yes(v: bool | None) -> str:
    return "?" if v is None else "yes" if v else "no"


COLUMNS = ("BOARD", "STATE", "PROVISIONED", "LOCKED", "ONLINE", "LAST TELEMETRY", "LAST VERIFY")


def rows(views: list[dict[str, Any]], now: float | None = None) -> list[tuple[str, ...]]:
    now = time.time() if now is None else now
    out = []
    for v in views:
        t = v["last_telemetry"]
        lv = v["last_verify"]
        verify = "-" if lv is None else (f"{lv['verdict']} ({'selection, ' if lv['selection'] else ''}"
                                         f"{_ago(lv['time'], now)})")
        if lv and lv["failed"]:
            verify += ": " + ", ".join(lv["failed"][:3]) + (" ..." if len(lv["failed"]) > 3 else "")
        out.append((v["name"], v["state"], _yes(v["provisioned"]), _yes(v["locked"]),
                    "yes" if v["online"] else "no",
                    "-" if t is None else f"#{t['seq']} {_ago(t['time'], now)}", verify))
    return out


def table(views: list[dict[str, Any]], now: float | None = None) -> str:
    body = rows(views, now)
    widths = [max(len(r[i]) for r in [COLUMNS, *body]) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in [COLUMNS, *body]]
    counts = {s: sum(v["state"] == s for v in views) for s in ("running", "stopped", "failed")}
    online = sum(bool(v["online"]) for v in views)
    lines.append(f"{len(views)} boards: {counts['running']} running, {online} online, "
                 f"{counts['stopped']} stopped, {counts['failed']} failed")
    return "\n".join(line.rstrip() for line in lines)


# the class's reports, one page ------------------------------------------------------------------
_STATUS_CSS = {"pass": "#1a7f37", "fail": "#cf222e", "error": "#9a6700", "skip": "#6e7781"}


def summary_html(views: list[dict[str, Any]], title: str, link: Callable[[str], str | None]) -> str:
    """One self-contained page: a row per board (state, online, verdict, counts, its report), then
    every check against every board. `link(name)` is the href of a board's own HTML report, or None."""
    now = time.time()
    h = html.escape
    checks = sorted({cid for v in views if v["last_verify"] for cid in v["last_verify"]["checks"]})
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{h(title)}</title><style>"
           "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
           "td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}th{background:#f6f8fa}"
           ".c{text-align:center;color:#fff;font-weight:bold}</style></head><body>",
           f"<h1>{h(title)}</h1><p>{len(views)} boards, {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
           "<table><tr>" + "".join(f"<th>{h(c)}</th>" for c in COLUMNS) + "<th>pass</th><th>fail</th>"
           "<th>skip</th><th>error</th><th>report</th></tr>"]
    for v, r in zip(views, rows(views, now)):
        s = (v["last_verify"] or {}).get("summary") or {}
        href = link(v["name"])
        out.append("<tr>" + "".join(f"<td>{h(c)}</td>" for c in r)
                   + "".join(f"<td>{s.get(k, '')}</td>" for k in ("pass", "fail", "skip", "error"))
                   + (f"<td><a href='{h(href)}'>report</a></td>" if href else "<td>-</td>") + "</tr>")
    out.append("</table>")
    if checks:
        out.append("<h2>Checks by board</h2><table><tr><th>check</th>"
                   + "".join(f"<th>{h(v['name'])}</th>" for v in views) + "</tr>")
        for cid in checks:
            cells = []
            for v in views:
                st = ((v["last_verify"] or {}).get("checks") or {}).get(cid)
                cells.append(f"<td class='c' style='background:{_STATUS_CSS[st]}'>{st.upper()}</td>"
                             if st in _STATUS_CSS else "<td>-</td>")
            out.append(f"<tr><td>{h(cid)}</td>" + "".join(cells) + "</tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def relative_link(target: Path, page: Path) -> str:
    return os.path.relpath(target.resolve(), page.resolve().parent)
