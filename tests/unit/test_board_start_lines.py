"""`sbd board start --count N --jobs J` prints one whole line per board as each comes up, from the
threads that start them: lines never run together (seen once in a fresh clone's make test)."""
from __future__ import annotations

import io
import sys
import threading
import time

from sbd_harness.boards import classroom
from sbd_harness.cli import main


class _SlowStream(io.StringIO):
    """A stderr that yields between writes, as a busy terminal or pipe may: text written in two
    calls (print's line, then its newline) lets another thread's line in between."""

    def write(self, text: str) -> int:
        n = super().write(text)
        time.sleep(0.002)
        return n


def test_each_board_gets_one_whole_line_while_many_start_at_once(monkeypatch, capsys):
    barrier = threading.Barrier(8)

    def start_many(names, jobs, on_done=None, **kw):
        def one(name):
            barrier.wait()  # all eight report at the same moment
            on_done(name, {"name": name, "serial": f"/dev/pts/{name[-1]}", "address": "198.18.0.10"}, None)
        threads = [threading.Thread(target=one, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {n: {"name": n} for n in names}

    monkeypatch.setattr(classroom, "start_many", start_many)
    slow = _SlowStream()
    monkeypatch.setattr(sys, "stderr", slow)
    assert main(["board", "start", "lines", "--count", "8", "--jobs", "8"]) == 0
    lines = slow.getvalue().splitlines()
    assert sorted(lines) == sorted(f"lines-{i}: running, /dev/pts/{i}, 198.18.0.10" for i in range(1, 9)), lines
