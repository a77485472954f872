"""The lab's NTP server (chronyd) and the `--ntp HOST[:PORT]` option."""
from __future__ import annotations

import time

import pytest

from sbd_harness.cli.common import CliError
from sbd_harness.cli.identity import ntp_endpoint
from sbd_harness.lab import ntp


def test_the_labs_ntp_server_answers_with_the_hosts_time():
    address, port = ntp.ensure_running()
    assert (address, port) == ntp.endpoint()
    served = ntp.query(address, port)
    assert served is not None and abs(served - time.time()) < 2
    assert ntp.ensure_running() == (address, port)  # a second call finds it running


def test_ntp_option_takes_a_host_and_an_optional_port():
    assert ntp_endpoint("pool.ntp.org") == ("pool.ntp.org", 123)
    assert ntp_endpoint("192.0.2.1:10123") == ("192.0.2.1", 10123)
    assert ntp_endpoint("") == ("", 123)
    for bad in ("host:", "host:0", "host:70000", "host:x"):
        with pytest.raises(CliError):
            ntp_endpoint(bad)
