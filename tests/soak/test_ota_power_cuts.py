"""Issue 5: power cuts (the emulated board's CPU killed with SIGKILL) at
random moments while an update downloads, while it is verified and switched
to, and during the new version's trial boot. After every cut the board must
boot a version that verified: the one it ran before or the one being pushed,
never a mix and never nothing.

SBD_OTA_CUTS sets how many cuts (default 100; `make bench`-style stress runs
can ask for more)."""
from __future__ import annotations

import json
import os
import random
import threading
import time

from sbd_harness.release import ota
from sbd_harness.lab.watch import Watcher, on_topic
from test_ota import Lab, release, stream_for

CUTS = int(os.environ.get("SBD_OTA_CUTS", "100"))
PHASES = ("download", "verify-and-switch", "trial-boot")


def _boot_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith('{"sbd": "boot"'):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_power_cuts_during_updates_never_brick_the_board(tmp_path):
    lab = Lab(tmp_path)
    try:
        bundles = {"0.2.0": release(tmp_path, "0.2.0"), "0.3.0": release(tmp_path, "0.3.0")}
        rng = random.Random(int(os.environ.get("SBD_OTA_SEED", "5")))
        lab.board.reset("hard")
        current = lab.online()["fw_version"]
        counter = 1
        # How long one transfer takes here: the cut times scale with it.
        counter += 1
        time.sleep(1.5)  # its subscriptions are in place after the birth message
        t0 = time.monotonic()
        assert lab.push(stream_for(bundles["0.2.0"], lab.key, counter))["event"] == "installed"
        transfer_s = time.monotonic() - t0
        current = lab.online()["fw_version"]
        assert lab.ota_event("committed")
        outcomes: dict[str, dict[str, int]] = {p: {} for p in PHASES}
        # The push reads the lab's watcher; this test watches through its own.
        obs = Watcher(lab.broker, f"{lab.base}/#")
        births = lab.births()
        for cut in range(CUTS):
            phase = PHASES[cut % len(PHASES)]
            target = "0.3.0" if current == "0.2.0" else "0.2.0"
            counter += 1
            stream = stream_for(bundles[target], lab.key, counter)
            done = threading.Event()

            def push() -> None:
                try:
                    lab.push(stream, timeout=2 + 2 * transfer_s)
                except ota.OTAError:
                    pass
                finally:
                    done.set()

            started = time.monotonic()
            threading.Thread(target=push, daemon=True).start()
            if phase == "download":
                time.sleep(rng.uniform(0.05, max(0.1, transfer_s * 0.8)))
            elif phase == "verify-and-switch":
                time.sleep(rng.uniform(transfer_s * 0.7, transfer_s * 1.3 + 0.2))
            else:
                obs.wait_for(lambda m: m.topic == f"{lab.base}/result"
                             and (m.json() or {}).get("event") == "installed", 20)
                time.sleep(rng.uniform(0.0, 2.5))
            since = lab.board.log_size()
            lab.board.reset("power-cut")
            boots = _boot_lines(lab.board.serial_log()[since:])
            assert boots, f"cut {cut} ({phase}): no boot line after the cut"
            booted = boots[-1]["fw_version"]
            assert booted in (current, target), f"cut {cut} ({phase}): booted {booted}, expected {current} or {target}"
            assert '"slot_error"' not in lab.board.serial_log()[since:]
            done.wait(30 + transfer_s)
            # Settle: online again, and its first reading acknowledged (a trial commits on that).
            birth = obs.wait_for(lambda m: births(m) and m.at > started, 75)
            assert birth is not None, f"cut {cut} ({phase}): the board did not come back online"
            obs.wait_for(on_topic(f"{lab.base}/telemetry"), 15)
            time.sleep(0.3)
            current = birth.json()["fw_version"]
            key = f"{booted}->{current}"
            outcomes[phase][key] = outcomes[phase].get(key, 0) + 1
        print(json.dumps({"cuts": CUTS, "transfer_s": round(transfer_s, 2), "outcomes": outcomes}))
        # A last, uninterrupted update still goes through: nothing was left broken.
        counter += 1
        target = "0.3.0" if current == "0.2.0" else "0.2.0"
        assert lab.push(stream_for(bundles[target], lab.key, counter))["event"] == "installed"
        assert lab.online()["fw_version"] == target
        obs.close()
    finally:
        lab.close()
