"""Attack surface: the declared network behaviour, the MUD file
written from it, the id-pe-mud-url certificate extension, and the three
surface checks of `sbd verify`, passing on the reference firmware and each
failing on a variant broken for it."""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from helpers import only, verify_report

import pytest

from sbd_harness.boards.flashing import flash_firmware
from sbd_harness.emulator import netlab
from sbd_harness.identity.pki import PKIError, mud_url_extension
from sbd_harness.lab.broker import free_port, lab_address
from sbd_harness.lab.surface import Flow, FlowWatch
from sbd_harness.release import mud
from sbd_harness.release.bundle import FirmwareBundle
from sbd_harness.release.mistakes import build_variant

REFERENCE_URL = "https://mud.example.invalid/sbd-reference-esp32.json"
needs_netns = pytest.mark.skipif(not netlab.namespaces_available(),
                                 reason="the surface checks need a board with its own network namespace (root)")


def _verify(board, ca, tmp_path, port: int, *extra: str) -> tuple[int, dict[str, dict]]:
    code, data = verify_report(board, ca, tmp_path / f"report-{board.name}.json", *extra, port=port)
    return code, {c["id"]: c for c in data["checks"]}


# the declaration and the MUD file -----------------------------------------------------
def test_the_mud_file_allows_the_broker_flow_and_nothing_inbound():
    decl = mud.declaration({"broker_addr": "198.18.0.1", "broker_port": 8883, "ntp_host": ""})
    assert decl["mud_url"] == REFERENCE_URL and decl["listens"] == []
    assert decl["outbound"] == [{"purpose": "mqtt", "protocol": "tcp", "host": "198.18.0.1", "port": 8883, "tls": True}]
    doc = mud.build(decl)
    head = doc["ietf-mud:mud"]
    assert head["mud-version"] == 1 and head["mud-url"] == REFERENCE_URL and head["is-supported"] is True
    assert {"last-update", "cache-validity", "systeminfo"} <= set(head)
    names = {a["name"] for a in doc["ietf-access-control-list:acls"]["acl"]}
    policies = ("from-device-policy", "to-device-policy")
    assert {head[p]["access-lists"]["access-list"][0]["name"] for p in policies} == names
    assert mud.allows_from_device(doc, "tcp", "198.18.0.1", 8883)
    assert not mud.allows_from_device(doc, "tcp", "198.18.0.1", 1883)
    assert not mud.allows_from_device(doc, "tcp", "198.18.0.2", 8883)
    assert not mud.allows_from_device(doc, "udp", "198.18.0.1", 123)
    assert mud.listening_ports(doc) == []
    # the return traffic is allowed only for connections the device opened
    to_dev = next(a for a in doc["ietf-access-control-list:acls"]["acl"] if a["name"].endswith("v4to"))
    tcp = to_dev["aces"]["ace"][0]["matches"]["tcp"]
    assert tcp["ietf-mud:direction-initiated"] == "from-device" and tcp["source-port"]["port"] == 8883


def test_an_ntp_server_by_name_is_declared_with_its_dns_lookup():
    decl = mud.declaration({"broker_addr": "10.0.0.5", "broker_port": 1884, "ntp_host": "pool.ntp.org"})
    assert [(f["purpose"], f["protocol"], f["port"]) for f in decl["outbound"]] == \
        [("mqtt", "tcp", 1884), ("dns", "udp", 53), ("ntp", "udp", 123)]
    doc = mud.build(decl)
    import ipaddress
    lan = ipaddress.IPv4Network("10.0.0.0/24")
    assert mud.allows_from_device(doc, "udp", "10.0.0.1", 53, lan)
    assert not mud.allows_from_device(doc, "udp", "8.8.8.8", 53, lan)


def test_a_declared_listener_shows_in_the_mud_file(tmp_path):
    fw = build_variant("open-port", tmp_path / "fw")  # any copy of the firmware will do
    path = fw / "lib" / "sbd" / "network_policy.py"
    path.write_text(path.read_text().replace("LISTENS = ()", 'LISTENS = (("tcp", 2323),)'))
    doc = mud.build(mud.declaration({"broker_addr": "198.18.0.1", "broker_port": 8883}, fw))
    assert mud.listening_ports(doc) == [("tcp", 2323)]


def test_a_firmware_without_a_declaration_is_a_clear_error(tmp_path):
    fw = build_variant("open-port", tmp_path / "fw")
    (fw / "lib" / "sbd" / "network_policy.py").unlink()
    with pytest.raises(mud.MudError, match="declares no network behaviour"):
        mud.declaration({"broker_addr": "198.18.0.1", "broker_port": 8883}, fw)
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "mud", "--broker", "198.18.0.1:8883",
                           "--firmware", str(fw)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "declares no network behaviour" in proc.stderr


def test_sbd_mud_needs_a_board_or_a_broker(tmp_path):
    for args in ([], ["--board", "x", "--broker", "1.2.3.4:8883"], ["--broker", "1.2.3.4"]):
        proc = subprocess.run([sys.executable, "-m", "sbd_harness", "mud", *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "sbd: error:" in proc.stderr, (args, proc.stderr)
    out = tmp_path / "device.json"
    proc = subprocess.run([sys.executable, "-m", "sbd_harness", "mud", "--broker", "192.168.1.10:8883",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert mud.allows_from_device(json.loads(out.read_text()), "tcp", "192.168.1.10", 8883)


# the certificate extension -------------------------------------------------------------
def test_the_mud_url_extension_is_an_ia5string_that_reads_back():
    for url in (REFERENCE_URL, "https://mud.example.com/" + "a" * 200 + ".json"):
        ext = mud_url_extension(url)
        assert ext.oid.dotted_string == "1.3.6.1.5.5.7.1.25" and ext.value[0] == 0x16
    for bad in ("http://plain.example/x.json", "https://spaces in/url", "https://\u00e9.example/"):
        with pytest.raises(PKIError, match="not a MUD URL"):
            mud_url_extension(bad)


# the flow capture ---------------------------------------------------------------------
def _frame(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return b"\x00" * 12 + b"\x08\x00" + ip + l4


def test_the_flow_capture_counts_syns_and_datagrams_the_board_sends():
    board = socket.inet_aton("198.18.0.10")
    tcp = lambda flags: struct.pack("!HHIIBBHHH", 40000, 8883, 0, 0, 0x50, flags, 0, 0, 0)  # noqa: E731
    udp = struct.pack("!HHHH", 40000, 123, 8, 0)
    assert FlowWatch.parse(_frame("198.18.0.10", "198.18.0.1", 6, tcp(0x02)), board) == Flow("tcp", "198.18.0.1", 8883)
    assert FlowWatch.parse(_frame("198.18.0.10", "198.18.0.1", 17, udp), board) == Flow("udp", "198.18.0.1", 123)
    assert FlowWatch.parse(_frame("198.18.0.10", "198.18.0.1", 6, tcp(0x12)), board) is None  # SYN-ACK: an answer
    assert FlowWatch.parse(_frame("198.18.0.10", "198.18.0.1", 6, tcp(0x10)), board) is None
    assert FlowWatch.parse(_frame("198.18.0.1", "198.18.0.10", 6, tcp(0x02)), board) is None  # to the board


# the checks on boards ---------------------------------------------------------------


@needs_netns
@pytest.mark.parametrize("variant, failing, selector, reason", [
    ("open-port", "no-listening-ports", "check_no_listening", "[2323]"),
    ("undeclared-connection", "connections-match-mud", "check_connections", "'port': 1900"),
    ("serial-secret", "serial-discloses-nothing-after-lock", "check_serial_discloses", "Wi-Fi passphrase"),
])
def test_a_surface_check_fails_on_the_variant_broken_for_it(locked_board, ca, tmp_path, variant, failing,
                                                             selector, reason):
    port = free_port(lab_address())
    fw = build_variant(variant, tmp_path / "fw")
    board = locked_board(fw, port)
    code, checks = _verify(board, ca, tmp_path, port, "--firmware", str(fw), *only(failing))
    assert checks[failing]["status"] == "fail", json.dumps(checks[failing], indent=1)[-3000:]
    assert reason in checks[failing]["message"], checks[failing]["message"]
    assert code == 1


def test_the_network_checks_skip_with_the_reason_on_shared_loopback(make_board, ca, tmp_path, monkeypatch):
    monkeypatch.setenv("SBD_NO_NETNS", "1")
    board = make_board("loop")
    assert board.describe()["network"] == "loopback"
    flash_firmware(board, FirmwareBundle.from_dir(None))
    code, checks = _verify(board, ca, tmp_path, free_port("127.0.0.1"), *only("no-listening-ports"))
    assert checks["no-listening-ports"]["status"] == "skip"
    assert "shares the host's loopback" in checks["no-listening-ports"]["message"]
