"""Lab address leases (emulator/netlab.py) taken by many processes at once: a stale lease (its board
gone) is reclaimed by exactly one of them. Two that reclaimed the same one both went on, and the
second destroyed the namespace the first had just made ("Invalid netns value", seen in a run
beside other users' runs)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from sbd_harness.emulator import netlab


def test_a_stale_lease_is_reclaimed_by_one_board_only(tmp_path, monkeypatch):
    leases = tmp_path / "run" / "leases"
    leases.mkdir(parents=True)
    monkeypatch.setattr(netlab, "LEASES", leases)
    gone = tmp_path / "gone-board"  # a board removed without giving its address back
    (leases / str(netlab.FIRST_BOARD_HOST)).write_text(str(gone))
    destroyed: list[str] = []

    def slow_destroy(ns, host_if):  # the window in which another process could reclaim it too
        destroyed.append(ns)
        time.sleep(0.05)

    monkeypatch.setattr(netlab, "destroy_names", slow_destroy)
    got: dict[str, int] = {}
    owners = [tmp_path / f"board-{i}" for i in range(6)]
    for o in owners:
        o.mkdir()
        (o / "board.json").write_text("{}")

    def take(owner: Path) -> None:
        got[owner.name] = netlab._lease(owner)

    threads = [threading.Thread(target=take, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got.values()) == list(range(netlab.FIRST_BOARD_HOST, netlab.FIRST_BOARD_HOST + 6)), got
    assert destroyed == [f"sbd-{netlab.FIRST_BOARD_HOST}"]  # reclaimed once
    for owner in owners:
        assert Path((leases / str(got[owner.name])).read_text()) == owner
