"""A class's names, its last verify results and the one page of its reports (no board)."""
from __future__ import annotations

import json
import os
import time

import pytest

from sbd_harness.boards import classroom
from sbd_harness.boards.base import BoardError
from sbd_harness.reports.report import build_report

CHECKS = [{"id": "console-locked", "status": "pass", "message": "", "provisions": {}, "evidence": {}},
          {"id": "no-listening-ports", "status": "fail", "message": "port 2323 open", "provisions": {},
           "evidence": {}}]


def _report(folder, name, checks):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(build_report({"name": folder.name, "kind": "emulated"},
                                                       {"version": "0.1.0"}, checks)))


def test_class_names_are_numbered_and_bad_counts_or_prefixes_are_refused():
    assert classroom.class_names("class", 3) == ["class-1", "class-2", "class-3"]
    for prefix, count in (("class", 0), ("class", classroom.CLASS_MAX + 1), ("Bad!", 2), ("x" * 31, 10)):
        with pytest.raises(BoardError):
            classroom.class_names(prefix, count)


def test_last_verify_is_the_newer_of_the_full_run_and_a_selection(tmp_path):
    assert classroom.last_verify(tmp_path / "none") is None
    folder = tmp_path / "lab1"
    _report(folder, "report.json", CHECKS)
    full = classroom.last_verify(folder)
    assert (full["verdict"], full["selection"], full["failed"]) == ("FAIL", False, ["no-listening-ports"])
    assert full["summary"]["pass"] == 1 and full["checks"]["console-locked"] == "pass"
    _report(folder, "report.selected.json", CHECKS[:1])
    later = time.time() + 5
    os.utime(folder / "report.selected.json", (later, later))
    sel = classroom.last_verify(folder)
    assert (sel["verdict"], sel["selection"], sel["failed"]) == ("PASS", True, [])
    (folder / "report.json").write_text("{not json")
    os.utime(folder / "report.json", (later + 5, later + 5))
    assert classroom.last_verify(folder)["verdict"] == "unreadable report"


def test_table_and_page_show_every_board_and_every_check_by_board(tmp_path):
    _report(tmp_path / "s-1", "report.json", CHECKS)
    now = time.time()
    views = [{"name": "s-1", "state": "running", "failure": None, "provisioned": True, "locked": True,
              "online": True, "online_since": now - 30, "last_telemetry": {"seq": 7, "time": now - 4},
              "last_verify": classroom.last_verify(tmp_path / "s-1")},
             {"name": "s-<2>", "state": "stopped", "failure": None, "provisioned": False, "locked": False,
              "online": False, "online_since": None, "last_telemetry": None, "last_verify": None}]
    text = classroom.table(views, now)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["BOARD", "STATE", "PROVISIONED"]
    assert lines[1].split()[:6] == ["s-1", "running", "yes", "yes", "yes", "#7"]
    assert "FAIL" in lines[1] and "no-listening-ports" in lines[1]
    assert lines[2].split() == ["s-<2>", "stopped", "no", "no", "no", "-", "-"]
    assert lines[-1] == "2 boards: 1 running, 1 online, 1 stopped, 0 failed"
    page = classroom.summary_html(views, "Class <A>", lambda n: "s-1/report.html" if n == "s-1" else None)
    assert "<title>Class &lt;A&gt;</title>" in page and "s-&lt;2&gt;" in page and "<s-<2>" not in page
    assert "href='s-1/report.html'" in page
    row = page[page.index("<td>no-listening-ports</td>"):].split("</tr>")[0]
    assert ">FAIL<" in row and "<td>-</td>" in row  # failed on s-1, no report from the other board
