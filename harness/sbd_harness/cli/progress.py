"""`sbd verify`'s progress on a terminal: which check runs, each result as it
ends, the time so far. A pytest plugin that `sbd verify` registers only when
its standard output is a terminal; CI logs get the final table alone.

pytest's own terminal output is off in `sbd verify` (no dots, no tracebacks):
a failure's reason is in the table and the reports, its evidence in the reports.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest

COLOURS = {"pass": "green", "fail": "red", "skip": "yellow", "error": "magenta"}


def _status(reports: list[pytest.TestReport]) -> str:
    """One status for a check from its setup, call and teardown reports (as the report collector counts)."""
    status = "pass"
    for r in reports:
        if r.skipped and status == "pass":
            status = "skip"
        elif r.failed:
            if r.when != "call" or getattr(r, "sbd_error", False):
                status = "error"
            elif status != "error":
                status = "fail"
    return status


class VerifyProgress:
    """Shows the run on a rich console: a live line for the check under way
    (its ID, its number, its time and the run's), a line per check as it ends."""

    sbd_verify_progress = True  # how the plugin's fixtures find it (one live display at a time)

    def __init__(self, console: Any, tier: str):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        self.console = console
        self.tier = tier
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=console, transient=True)
        self.task = None
        self.ids: dict[str, str] = {}
        self.reports: dict[str, list[pytest.TestReport]] = {}
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self.check_started = self.started

    def _describe(self, nodeid: str) -> str:
        return f"[{self.done + 1}/{self.total}] {self.ids.get(nodeid, nodeid)}"

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            mark = item.get_closest_marker("sbd_check")
            self.ids[item.nodeid] = mark.kwargs.get("id", item.name) if mark else item.name
        self.total = len(items)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.progress.start()
        self.task = self.progress.add_task(f"sbd verify ({self.tier} tier): collecting the checks", total=None)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.check_started = time.monotonic()
        self.reports[nodeid] = []
        if self.task is not None:
            self.progress.update(self.task, description=self._describe(nodeid))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.setdefault(report.nodeid, []).append(report)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        status = _status(self.reports.get(nodeid, []))
        took = time.monotonic() - self.check_started
        total = time.monotonic() - self.started
        colour = COLOURS[status]
        self.progress.console.print(
            f"[{colour}]{status.upper():<5}[/] {self.ids.get(nodeid, nodeid):<45} {took:6.1f} s"
            f"  [dim](total {total:5.1f} s)[/]", highlight=False)
        self.done += 1

    def pytest_sessionfinish(self) -> None:
        self.progress.stop()

    @contextmanager
    def step(self, label: str) -> Iterator[Callable[[int, int], None]]:
        """A bar for work inside a fixture (flashing), on the same live display."""
        task = self.progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            self.progress.update(task, completed=done, total=total)

        try:
            yield update
        finally:
            self.progress.remove_task(task)


def for_terminal(stream: Any, tier: str) -> VerifyProgress | None:
    """The progress plugin when `stream` is a terminal, else None (nothing extra in CI logs)."""
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        return None
    from rich.console import Console
    return VerifyProgress(Console(file=stream), tier)
