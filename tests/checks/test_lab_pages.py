"""The labs of docs/labs/, run as written: docs/labs/README.md's setup, then each step of a lab's
page on one emulated board of its own (tests/labsteps.py), each checked for what the page says it
shows, the exploit's outcome checked before the fix. The labs whose steps take longest run in the
soak tier (tests/soak/test_lab_pages.py)."""
from __future__ import annotations

import pytest

from labsteps import EXPLOITED, IN_MAKE_TEST, IN_SOAK, LABS, run_lab


def test_every_lab_page_runs_in_one_tier():
    pages = {p.stem for p in LABS.glob("*.md")} - {"README"}
    assert sorted(IN_MAKE_TEST + IN_SOAK) == sorted(pages) == sorted(EXPLOITED)


@pytest.mark.parametrize("lab", IN_MAKE_TEST)
def test_lab_runs_as_written(lab, tmp_path):
    run_lab(lab, tmp_path / "ws")
