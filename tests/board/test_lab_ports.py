"""Boards on a shared machine: each emulated board has a lab broker port of its own, so that one
user's (or one student's) runs never meet another's broker, and a port held all the same is
reported with its holder."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from sbd_harness.boards.emulated import LAB_BROKER_PORTS
from sbd_harness.identity.pki import LabCA
from sbd_harness.identity.provisioning import lab_settings
from sbd_harness.lab.broker import Broker, BrokerError, lab_address


def test_each_board_has_a_broker_port_of_its_own_that_provisioning_uses(make_board):
    a, b = make_board("port"), make_board("port")
    assert a.broker_port != b.broker_port
    assert a.broker_port in LAB_BROKER_PORTS and b.broker_port in LAB_BROKER_PORTS
    assert lab_settings(a)["broker_port"] == a.broker_port
    listed = json.loads(subprocess.run([sys.executable, "-m", "sbd_harness", "board", "list", "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    ports = {d["name"]: d["broker_port"] for d in listed}
    assert ports[a.name] == a.broker_port and ports[b.name] == b.broker_port


def test_a_stopped_board_shows_no_address(make_board):
    board = make_board("addr")
    assert board.describe()["address"]
    board.stop()
    assert board.describe()["address"] is None and board.describe()["running"] is False


def test_a_broker_port_held_by_another_process_names_the_holder(tmp_path):
    ca = LabCA(tmp_path / "pki")
    ca.init()
    with socket.create_server((lab_address(), 0)) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(BrokerError) as exc:
            Broker(ca, address=lab_address(), port=port).start()
    message = str(exc.value)
    assert "in use" in message and f"pid {os.getpid()}" in message and "python" in message, message
