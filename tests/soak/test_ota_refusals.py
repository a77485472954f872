"""Every bad update of tests/ota_lab.py pushed end to end over MQTT to a locked emulated board:
each refused for its reason, and the board still runs its version. `make test` pushes two of
them (tests/board/test_ota.py); the device's receiver refuses all of them in its MicroPython unit
tests (tests/firmware)."""
from __future__ import annotations

import pytest

from ota_lab import REFUSALS, Lab, release, running_version, stream_for, tampered


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ota")
    lab = Lab(tmp)
    lab.board.reset("hard")
    lab.online()
    assert lab.push(stream_for(release(tmp, "0.2.0"), lab.key, 2))["event"] == "installed"
    assert lab.online()["fw_version"] == "0.2.0" and lab.ota_event("committed")
    yield lab
    lab.close()


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_bad_update_is_refused_and_the_old_version_keeps_running(lab, tmp_path, case):
    result = lab.push(tampered(lab, tmp_path, case))
    assert result["event"] == "rejected", result
    assert REFUSALS[case] in result["error"], result
    assert running_version(lab) == "0.2.0"
