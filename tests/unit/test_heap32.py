"""The 32-bit heap measurement of `make bench` (sbd_harness.tools.heap32) on a
small workload, so that the path through node and MicroPython's WebAssembly
port keeps working: the port is 32-bit, the steps are reported, the same live
objects take less heap there than on the 64-bit unix port, and the bisection
on the unix port finds a heap that fits with one step less failing."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from sbd_harness.paths import REPO_ROOT
from sbd_harness.tools import heap32


@pytest.fixture(scope="module")
def device_root():
    with tempfile.TemporaryDirectory(prefix="sbd-test-heap32-") as tmp:
        yield heap32.prepare(Path(tmp))


def test_the_makefile_installs_the_pinned_webassembly_port():
    pinned = re.search(r"^MPWASM_VERSION\s*:=\s*(\S+)", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert pinned and pinned.group(1) == heap32.WASM_VERSION
    assert heap32.wasm_module().is_file()


def test_the_webassembly_port_is_a_32_bit_micropython_and_the_unix_port_64(device_root):
    said32 = heap32.run_wasm(device_root, "idle", heap32.FULL_HEAP)
    said64 = heap32.run_unix(device_root, "idle", heap32.FULL_HEAP)
    assert "HEAP32 PORT webassembly 2147483647" in said32, said32[-500:]
    assert "HEAP32 PORT linux 9223372036854775807" in said64, said64[-500:]


def test_mqtt_parsing_takes_less_heap_on_32_bits_than_on_64(device_root):
    idle32, _ = heap32.profile("wasm32", device_root, "idle")
    idle64, _ = heap32.profile("unix64", device_root, "idle")
    res32, end32 = heap32.profile("wasm32", device_root, "mqtt")
    res64, _ = heap32.profile("unix64", device_root, "mqtt")
    firmware32, firmware64 = res32 - idle32, res64 - idle64
    # The client and its 1536-byte receive buffer at least, and far less than a heap.
    assert 1536 < firmware32 < 48 * 1024
    assert firmware32 < firmware64 < 2 * firmware32
    assert end32 >= res32


def test_a_failing_workload_is_reported_not_measured(device_root):
    with pytest.raises(heap32.Heap32Error, match="no_such_workload|fails"):
        heap32.profile("wasm32", device_root, "no_such_workload")


def test_the_bisection_finds_the_smallest_heap_that_fits(device_root):
    size = heap32.smallest_heap("unix64", device_root, "mqtt", resolution=1024)
    assert heap32.fitted(heap32.run_unix(device_root, "mqtt", size))[0]
    assert not heap32.fitted(heap32.run_unix(device_root, "mqtt", size - 1024))[0]


@pytest.mark.parametrize("workload", [w for w in heap32.WORKLOADS if w != "idle"])
def test_every_workload_runs_to_its_end_on_both_ports(device_root, workload):
    """The stand-ins keep up with the firmware: a firmware call they lack (a new network.hostname,
    SSLContext.set_ciphers, os.urandom on the WebAssembly port) ends the workload early, and the
    bench's heap figures with it."""
    for port in ("unix64", "wasm32"):
        idle, _ = heap32.profile(port, device_root, "idle")
        resident, _ = heap32.profile(port, device_root, workload)  # Heap32Error unless it ended with HEAP32 OK
        assert resident > idle, f"{workload} on {port} holds nothing of its own: {resident} against idle {idle}"
