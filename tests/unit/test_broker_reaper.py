"""A test run killed with SIGKILL leaves its mosquitto running; the next
broker started reaps it (and only brokers whose harness process is gone)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sbd_harness.lab.broker import OWNER_FILE, Broker, reap_orphans
from sbd_harness.identity.pki import LabCA

STARTER = """
import sys, time
from pathlib import Path
from sbd_harness.lab.broker import Broker
from sbd_harness.identity.pki import LabCA
b = Broker(LabCA(Path(sys.argv[1]))).start()
print(b.dir, b.proc.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def test_a_killed_runs_broker_is_reaped_and_a_live_ones_kept(tmp_path):
    ca = LabCA(tmp_path / "pki")
    ca.init()
    live = Broker(ca).start()
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(ca.dir)], stdout=subprocess.PIPE, text=True)
    try:
        folder, pid = starter.stdout.readline().split()
        folder, pid = Path(folder), int(pid)
        assert (folder / OWNER_FILE).read_text().split() == [str(starter.pid), str(pid)]
        starter.send_signal(signal.SIGKILL)  # its finally blocks never run
        starter.wait()
        assert _alive(pid), "mosquitto should outlive the killed harness process"
        removed = reap_orphans((folder.parent,))
        assert folder in removed and not folder.exists()
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)
        assert not _alive(pid), "the orphan mosquitto still runs"
        assert live.dir.exists() and live.proc.poll() is None, "a broker whose owner lives was touched"
    finally:
        starter.kill()
        live.stop(remove=True)
